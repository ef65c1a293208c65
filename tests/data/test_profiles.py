"""The profile dataset: reader errors, derived tables with known answers, atomic writes, merge."""

import json

import pandas as pd
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.data.profiles import (
    COLUMNS,
    PROFILE_SCHEMA_VERSION,
    SHIPPED_DIR,
    check_row,
    latency_table,
    merge_profiles,
    noise_floor,
    read_profiles,
    to_frame,
    write_profiles,
)

ARCHS = SearchSpace.load("tiny").sample_n(3, seed=0)


def row(
    arch,
    comp="total",
    median=10.0,
    rep=0,
    flag=False,
    remeasured=False,
    ts="2026-01-01T00:00:00",
    mid=None,
    protocol_id="p1",
    fingerprint_id="f1",
):
    return {
        "arch_id": arch.arch_id,
        "arch_json": arch.to_json(),
        "component": comp,
        "backend": "onnxruntime",
        "device": "cpu",
        "median_ms": median,
        "p10_ms": median * 0.9,
        "p90_ms": median * 1.1,
        "ci_rel": 0.01,
        "repeat_index": rep,
        "drift_flag": flag,
        "remeasured": remeasured,
        "timestamp": ts,
        "measurement_id": mid or f"{arch.arch_id}-{rep}-{ts}",
        "protocol_id": protocol_id,
        "fingerprint_id": fingerprint_id,
    }


def meta(protocol_id="p1", fingerprint_id="f1"):
    return {"protocol_id": protocol_id, "fingerprint_id": fingerprint_id, "protocol": {"src_len": 30}}


def test_latency_table_drops_flagged_and_uses_remeasurements():
    a, b, c = ARCHS
    df = to_frame(
        [
            row(a, median=10.0),
            row(b, median=50.0, flag=True, ts="2026-01-01T00:00:01"),  # drifted ...
            row(b, median=20.0, remeasured=True, ts="2026-01-01T00:00:05"),  # ... and measured again
            row(c, median=99.0, flag=True),  # drifted, never re-measured: dropped
            row(a, median=11.0, rep=1),  # noise-floor repeat: not in the table
            row(a, comp="encoder", median=1.0),
        ]
    )
    t = latency_table(df)
    assert list(t.columns) == ["arch_id", "arch_json", "median_ms", "p10_ms", "p90_ms", "ci_rel"]
    assert dict(zip(t["arch_id"], t["median_ms"])) == {a.arch_id: 10.0, b.arch_id: 20.0}
    assert latency_table(df, "encoder")["median_ms"].tolist() == [1.0]
    with pytest.raises(UserError):
        latency_table(df, "nope")


def test_noise_floor_is_the_mape_between_repeats():
    a, b, c = ARCHS
    df = to_frame(
        [
            row(a, median=10.0),
            row(a, median=11.0, rep=1),  # 10 %
            row(b, median=20.0),
            row(b, median=19.0, rep=1),  # 5 %
            row(c, median=5.0),
        ]
    )  # no repeat: ignored
    assert noise_floor(df) == pytest.approx(7.5)
    assert noise_floor(to_frame([row(a)])) is None


def test_write_read_roundtrip_and_sidecar(tmp_path):
    out = tmp_path / "p.parquet"
    df = to_frame([row(a) for a in ARCHS])
    write_profiles(out, df, meta())
    got, m = read_profiles(out)
    assert list(got.columns)[: len(COLUMNS)] == list(COLUMNS)
    assert got["arch_id"].tolist() == [a.arch_id for a in ARCHS]
    assert m["schema_version"] == PROFILE_SCHEMA_VERSION and m["counts"]["archs"] == 3
    assert json.loads((tmp_path / "p.parquet.json").read_text())["protocol_id"] == "p1"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp files renamed away


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "p.parquet"
    write_profiles(out, to_frame([row(ARCHS[0])]), meta())
    before = out.read_bytes()
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_profiles(out, to_frame([row(a) for a in ARCHS]), meta())
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_read_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such"):
        read_profiles(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        read_profiles(bad)
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(foreign)
    with pytest.raises(UserError, match="not a moenas profile dataset"):
        read_profiles(foreign)
    # ours, but with a required column removed
    import pyarrow.parquet as pq

    out = tmp_path / "p.parquet"
    write_profiles(out, to_frame([row(ARCHS[0])]), meta())
    table = pq.read_table(out)
    pq.write_table(table.drop_columns(["median_ms"]).replace_schema_metadata(table.schema.metadata), out)
    with pytest.raises(UserError, match="missing columns median_ms"):
        read_profiles(out)


def test_merge_refuses_mixed_fingerprints_unless_allowed(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_profiles(a, to_frame([row(ARCHS[0])]), meta())
    write_profiles(b, to_frame([row(ARCHS[1], fingerprint_id="f2")]), meta(fingerprint_id="f2"))
    with pytest.raises(UserError, match="device fingerprints"):
        merge_profiles([a, b], tmp_path / "m.parquet")
    m = merge_profiles([a, b], tmp_path / "m.parquet", allow_mixed=True)
    assert m["counts"]["archs"] == 2 and m["mixed"]
    with pytest.raises(UserError, match="exists"):
        merge_profiles([a, b], tmp_path / "m.parquet", allow_mixed=True)


def test_shipped_datasets_are_readable():
    for p in sorted(SHIPPED_DIR.glob("*.parquet")):
        df, m = read_profiles(p)
        assert len(latency_table(df)) > 0
        assert df["protocol_id"].nunique() == 1 and df["fingerprint_id"].nunique() == 1


def test_check_row_names_unknown_and_missing_columns():
    full = dict.fromkeys(COLUMNS)
    assert check_row(full) is full
    with pytest.raises(ValueError, match=r"unknown columns \['medain_ms'\], missing columns \['median_ms'\]"):
        check_row({("medain_ms" if k == "median_ms" else k): v for k, v in full.items()})
    with pytest.raises(ValueError, match=r"unknown columns \[\], missing columns \['ref_after_ms'\]"):
        check_row({k: v for k, v in full.items() if k != "ref_after_ms"})
    # reading and framing stay lenient: a partial row is filled, an extra column kept
    df = to_frame([{**row(ARCHS[0]), "note": "mine"}])
    assert "note" in df.columns and df["std_ms"].isna().all()
