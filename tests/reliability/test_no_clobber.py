"""A user's file is never overwritten.

Sidecars are named after their whole output (``X.parquet.json``), so ``--archs X.json --out
X.parquet`` leaves the arch file alone; a file moenas did not write that sits where a sidecar,
report, export or demo file goes is refused (exit 2, one line), with or without --overwrite,
and nothing in the folder changes (checked by hash)."""

import json
import shutil

from fast_profile import ENC_DEC_SHAPES, NO_DRIFT, QUIET, fast_rule
from hostile import hashes, refused

from moenas.arch import SearchSpace
from moenas.cli import main
from moenas.data.profiles import legacy_sidecar_path, read_profiles, shipped, sidecar_path, write_profiles

TINY = SearchSpace.load("tiny")
FAST = ["--backend", "torch", *ENC_DEC_SHAPES, *fast_rule(), *NO_DRIFT, *QUIET]


def test_archs_file_beside_the_output_is_not_replaced(tmp_path, capsys):
    archs = tmp_path / "myarchs.json"
    archs.write_text(TINY.smallest().to_json() + "\n")
    before = hashes(tmp_path)
    out = tmp_path / "myarchs.parquet"
    assert main(["profile", "--archs", str(archs), "--space", "tiny", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert hashes(tmp_path)["myarchs.json"] == before["myarchs.json"]
    assert json.loads(sidecar_path(out).read_text())["format"] == "moenas-profiles"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myarchs.json", "myarchs.parquet", "myarchs.parquet.json"]


def test_a_foreign_file_at_the_sidecar_name_is_refused(tmp_path, capsys):
    (tmp_path / "d.parquet.json").write_text("my own notes\n")
    refused(
        ["profile", "--space", "tiny", "--n", "1", "--out", str(tmp_path / "d.parquet"), *FAST],
        capsys,
        tmp_path,
        "d.parquet.json: exists and is not a moenas profile sidecar",
    )
    src = shipped("tiny-cpu-ort")
    refused(
        ["profile", "merge", str(src), "--out", str(tmp_path / "d.parquet")],
        capsys,
        tmp_path,
        "not a moenas profile sidecar",
    )


def test_old_name_sidecar_is_read_and_refreshed_only_when_it_is_the_datasets(tmp_path):
    """Datasets written by older moenas keep ``X.json``: a rewrite keeps that copy true, while a user's
    ``X.json`` beside a dataset (or a copy of another dataset's sidecar) is never touched."""
    src = shipped("tiny-cpu-ort")
    out = tmp_path / "t.parquet"
    shutil.copy(src, out)
    shutil.copy(sidecar_path(src), legacy_sidecar_path(out))  # as an older moenas named it
    df, meta = read_profiles(out)
    write_profiles(out, df, meta)
    new = json.loads(sidecar_path(out).read_text())
    assert json.loads(legacy_sidecar_path(out).read_text()) == new  # ours: refreshed with the dataset
    legacy_sidecar_path(out).write_text('{"format": "moenas-profiles", "note": "a copy I edited"}\n')
    before = hashes(tmp_path)["t.json"]
    write_profiles(out, df, meta)
    assert hashes(tmp_path)["t.json"] == before  # not this dataset's copy: left alone
    # a reshaped file (no embedded metadata) still takes its fingerprint from an old-name sidecar
    plain = tmp_path / "plain.parquet"
    df.to_parquet(plain)
    shutil.copy(sidecar_path(src), legacy_sidecar_path(plain))
    assert read_profiles(plain)[1]["fingerprint"] == meta["fingerprint"]
    legacy_sidecar_path(plain).write_text("not json {")  # anyone's broken X.json does not block reading
    assert read_profiles(plain)[1].get("fingerprint") is None


def test_overwrite_replaces_only_moenas_outputs(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "encoder.onnx").write_bytes(b"my graph")
    (mine / "report.md").write_text("# my report\n")
    (mine / "README.md").write_text("# my project\n")
    (mine / "learning_curve.png").write_bytes(b"\x89PNG my own plot")
    arch = tmp_path / "a.json"
    arch.write_text(TINY.smallest().to_json())
    data = str(shipped("tiny-cpu-ort"))
    for flags in ([], ["--overwrite"]):
        refused(["export", str(arch), "--out", str(mine), *flags], capsys, tmp_path, "not part of a moenas export")
        refused(
            ["search", "--supernet", str(arch), "--predictor", str(mine), "--out", str(mine), *flags],
            capsys,
            tmp_path,
            "not a file of a moenas search",
        )
    refused(
        ["fit", "--data", data, "--model", "flops-linear", "--out", str(mine), "--overwrite"],
        capsys,
        tmp_path,
        "holds no moenas predictor",
    )
    refused(["demo", "--out", str(mine)], capsys, tmp_path, "README.md: exists and is not a moenas demo report")
    refused(
        ["evaluate", "--predictor", str(mine), "--data", data, "--plots", str(mine)],
        capsys,
        tmp_path,
        "learning_curve.png: exists and is not a plot moenas wrote",
    )
    (tmp_path / "ckpt.json").write_text('{"my": "settings"}\n')  # train --out ckpt writes ckpt.json beside it
    refused(
        ["train", "--steps", "1", "--out", str(tmp_path / "ckpt"), "--overwrite"],
        capsys,
        tmp_path,
        "not a moenas checkpoint's metadata",
    )


def test_a_foreign_file_at_the_lock_name_is_refused(tmp_path, capsys):
    (tmp_path / "d.parquet.lock").write_text("mine\n")
    refused(
        ["profile", "--space", "tiny", "--n", "1", "--out", str(tmp_path / "d.parquet"), *FAST],
        capsys,
        tmp_path,
        "not a moenas lock file",
    )
