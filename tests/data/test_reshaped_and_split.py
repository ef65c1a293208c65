"""Data a user reshaped with ordinary tools (pandas Parquet without moenas metadata, CSV) is
read like a written dataset; `moenas profile split` splits by arch and round-trips."""

import hashlib

import pandas as pd
import pytest

from moenas.cli import main
from moenas.data.profiles import read_profiles, shipped
from moenas.predictor.dataset import load_dataset


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def filtered(tmp_path):
    df, _ = read_profiles(shipped("tiny-cpu-ort"))
    keep = sorted(df["arch_id"].unique())[:80]
    part = df[df["arch_id"].isin(keep)]
    pq, csv = tmp_path / "mine.parquet", tmp_path / "mine.csv"
    part.to_parquet(pq)  # plain pandas: no moenas metadata, no sidecar
    part.to_csv(csv, index=False)
    return pq, csv, keep


def test_reshaped_parquet_and_csv_read_like_the_original(filtered, capsys, tmp_path):
    pq, csv, keep = filtered
    a, b = load_dataset([pq]), load_dataset([csv])
    assert sorted(a.arch_ids) == sorted(b.arch_ids) and set(a.arch_ids) <= set(keep)
    assert a.protocol_id == b.protocol_id and a.fingerprint_id == load_dataset([shipped("tiny-cpu-ort")]).fingerprint_id
    assert dict(zip(a.arch_ids, a.y)) == pytest.approx(dict(zip(b.arch_ids, b.y)))
    rc = main(["fit", "--data", str(csv), "--model", "flops-linear", "--out", str(tmp_path / "p"), "--folds", "3"])
    assert rc == 0, capsys.readouterr().err


def test_reshaped_file_with_a_bad_column_is_one_line(filtered, tmp_path, capsys):
    pq, _, _ = filtered
    df = pd.read_parquet(pq)
    df["median_ms"] = "fast"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    assert main(["fit", "--data", str(bad), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'median_ms'" in err
    df.drop(columns=["arch_json"]).to_csv(bad, index=False)
    assert main(["fit", "--data", str(bad), "--out", str(tmp_path / "q")]) == 2
    assert "missing columns arch_json" in capsys.readouterr().err


def test_split_by_arch_round_trip(tmp_path, capsys):
    src = shipped("tiny-cpu-ort")
    before = sha(src)
    tr, ho = tmp_path / "train.parquet", tmp_path / "hold.parquet"
    argv = [
        "profile",
        "split",
        str(src),
        "--holdout",
        "0.25",
        "--seed",
        "3",
        "--train-out",
        str(tr),
        "--holdout-out",
        str(ho),
    ]
    assert main(argv) == 0
    capsys.readouterr()
    a, b, full = read_profiles(tr)[0], read_profiles(ho)[0], read_profiles(src)[0]
    assert not set(a["arch_id"]) & set(b["arch_id"])
    assert set(a["arch_id"]) | set(b["arch_id"]) == set(full["arch_id"]) and len(a) + len(b) == len(full)
    assert abs(b["arch_id"].nunique() / full["arch_id"].nunique() - 0.25) < 0.01
    # same seed, same split; outputs are never overwritten without --overwrite; the input is untouched
    again = tmp_path / "again"
    again.mkdir()
    main(
        [
            "profile",
            "split",
            str(src),
            "--seed",
            "3",
            "--train-out",
            str(again / "t.parquet"),
            "--holdout-out",
            str(again / "h.parquet"),
        ]
    )
    assert set(read_profiles(again / "h.parquet")[0]["arch_id"]) == set(b["arch_id"])
    h = sha(tr)
    assert main(argv) == 2 and "exists" in capsys.readouterr().err and sha(tr) == h and sha(src) == before
    assert (
        main(
            [
                "profile",
                "split",
                str(src),
                "--holdout",
                "1.5",
                "--train-out",
                str(tmp_path / "x.parquet"),
                "--holdout-out",
                str(tmp_path / "y.parquet"),
            ]
        )
        == 2
    )
    assert "--holdout must be in (0, 1)" in capsys.readouterr().err
