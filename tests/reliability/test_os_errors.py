"""What the operating system refuses is one line, and is found before work.

Every command that writes checks each output location first (``check_writable``): a path under
a regular file, or (as a non-root user) a read-only folder, gives ``moenas CMD: error: ...``
and exit 2 before any input is measured, fitted or trained; an OSError that still escapes a
command is printed by moenas/cli.py as ``PATH: reason``. Nothing in the folder changes."""

import os
from pathlib import Path

import pytest
from hostile import refused

from moenas.arch import SearchSpace, UserError
from moenas.commands._common import check_writable
from moenas.data.profiles import shipped

TINY = SearchSpace.load("tiny")
SHIPPED = str(shipped("tiny-cpu-ort"))
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def inputs(tmp_path):
    """An arch file, a regular file to put outputs under, and stand-ins for the other inputs."""
    arch = tmp_path / "arch.json"
    arch.write_text(TINY.smallest().to_json() + "\n")
    blocker = tmp_path / "plain.txt"
    blocker.write_text("a regular file, not a folder\n")
    return {"arch": str(arch), "blocker": blocker}


def _commands(arch: str, out: str) -> dict[str, list[str]]:
    """Every writing command with its output at ``out`` (inputs real where they are cheap)."""
    return {
        "profile": ["profile", "--space", "tiny", "--n", "1", "--out", f"{out}/d.parquet", "--no-progress"],
        "profile merge": ["profile", "merge", SHIPPED, "--out", f"{out}/m.parquet"],
        "profile split train": [
            "profile",
            "split",
            SHIPPED,
            "--train-out",
            f"{out}/t.parquet",
            "--holdout-out",
            "h.parquet",
        ],
        "profile split holdout": [
            "profile",
            "split",
            SHIPPED,
            "--train-out",
            "t.parquet",
            "--holdout-out",
            f"{out}/h.parquet",
        ],
        "fit": ["fit", "--data", SHIPPED, "--model", "flops-linear", "--out", f"{out}/pred"],
        "export": ["export", arch, "--out", f"{out}/exp"],
        "train": ["train", "--steps", "1", "--out", f"{out}/s.pt", "--no-progress"],
        "train --cache": ["train", "--steps", "1", "--out", "s.pt", "--cache", f"{out}/cache", "--no-progress"],
        "search": [
            "search",
            "--supernet",
            arch,
            "--predictor",
            arch,
            "--max-latency-ms",
            "5",
            "--out",
            f"{out}/search",
        ],
        "demo": ["demo", "--out", f"{out}/demo"],
        "evaluate --plots": ["evaluate", "--predictor", arch, "--data", SHIPPED, "--plots", f"{out}/plots"],
        "calibrate": ["calibrate", "--predictor", arch, "--out", f"{out}/cal"],
    }


@pytest.mark.parametrize("command", list(_commands("A", "O")))
def test_output_under_a_regular_file_is_one_line_before_any_work(inputs, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    argv = _commands(inputs["arch"], str(inputs["blocker"]))[command]
    err = refused(argv, capsys, tmp_path, "is not a directory")
    assert str(inputs["blocker"]) in err
    assert not (tmp_path / "h.parquet").exists() and not (tmp_path / "t.parquet").exists()


def test_output_of_the_wrong_kind_is_refused(inputs, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    refused(["export", inputs["arch"], "--out", str(inputs["blocker"])], capsys, tmp_path, "is not a directory")
    refused(["train", "--steps", "1", "--out", str(folder), "--no-progress"], capsys, tmp_path, "is a directory")
    refused(["profile", "merge", SHIPPED, "--out", str(folder)], capsys, tmp_path, "is a directory")


@pytest.mark.skipif(ROOT, reason="root may write anywhere: os.access grants every permission")
@pytest.mark.parametrize("command", ["profile", "fit", "export", "train", "search", "demo"])
def test_read_only_folder_is_one_line_before_any_work(inputs, tmp_path, capsys, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        argv = _commands(inputs["arch"], str(ro))[command]
        refused(argv, capsys, tmp_path, "not writable")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("command", ["profile", "fit", "export", "train", "search", "demo", "calibrate"])
def test_a_folder_the_os_calls_read_only_is_refused_even_as_root(inputs, tmp_path, capsys, monkeypatch, command):
    """The same check with os.access answering as it does for a user without write permission
    (so it runs where the suite runs as root, and chmod alone proves nothing)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and Path(p) != ro)
    refused(_commands(inputs["arch"], str(ro))[command], capsys, tmp_path, "not writable")


@pytest.mark.skipif(ROOT, reason="root may read anything")
def test_unreadable_input_is_one_line(inputs, tmp_path, capsys):
    arch = Path(inputs["arch"])
    arch.chmod(0o000)
    try:
        refused(["space", "validate", str(arch)], capsys, tmp_path, "Permission denied")
    finally:
        arch.chmod(0o644)


@pytest.mark.parametrize(
    "error, line",
    [
        (PermissionError(13, "Permission denied", "/data/x.parquet"), "/data/x.parquet: Permission denied"),
        (OSError(28, "No space left on device", "/data/x.parquet"), "/data/x.parquet: No space left on device"),
        (
            OSError(18, "Invalid cross-device link", "/a/x.tmp", None, "/b/x"),
            "/a/x.tmp -> /b/x: Invalid cross-device link",
        ),
        (OSError("disk on fire"), "disk on fire"),
    ],
)
def test_an_oserror_that_escapes_a_command_is_path_and_reason(tmp_path, capsys, monkeypatch, error, line):
    def boom(name):
        raise error

    monkeypatch.setattr(SearchSpace, "load", staticmethod(boom))
    err = refused(["space", "info", "--space", "tiny"], capsys, tmp_path)
    assert err == f"moenas space: error: {line}\n"


def test_check_writable_accepts_what_can_be_written(tmp_path):
    (tmp_path / "old.parquet").write_text("x")
    (tmp_path / "dir").mkdir()
    for path, kind in (("new/deeper/x.parquet", "file"), ("old.parquet", "file"), ("dir", "dir"), ("newdir", "dir")):
        assert check_writable(tmp_path / path, kind=kind) == tmp_path / path
    with pytest.raises(UserError, match="is not a directory"):
        check_writable(tmp_path / "old.parquet" / "a" / "b")
