"""One writer per output.

Another process holds the locks of a dataset, a predictor folder, a checkpoint, a search
folder, an export folder and a demo folder; every command writing one of them is refused with
one line naming the holder (exit 2) and nothing changes. The lock dies with its holder: a lock
file left by a killed process blocks no one."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fast_profile import ENC_DEC_SHAPES, NO_DRIFT, QUIET, fast_rule
from hostile import hashes

from moenas.arch import SearchSpace
from moenas.arch.files import lock_path, output_lock
from moenas.cli import main
from moenas.data.profiles import read_profiles, shipped

FAST = ["--backend", "torch", *ENC_DEC_SHAPES, *fast_rule(), *NO_DRIFT, *QUIET]

HOLDER = textwrap.dedent("""
    import sys
    from contextlib import ExitStack
    from moenas.arch.files import output_lock
    with ExitStack() as stack:
        for p in sys.argv[1:]:
            stack.enter_context(output_lock(p, "test"))
        print("held", flush=True)
        sys.stdin.read()  # until the test kills us
""")


@pytest.fixture()
def holder(tmp_path):
    """A process holding the locks of ``paths``; killed (SIGKILL) at the end, leaving its lock files."""
    procs = []

    def start(*paths: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *map(str, paths)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys, holder):
    data, pred, ckpt = tmp_path / "d.parquet", tmp_path / "pred", tmp_path / "s.pt"
    search, model, demo = tmp_path / "search", tmp_path / "model", tmp_path / "demo"
    arch = tmp_path / "a.json"
    arch.write_text(SearchSpace.load("tiny").smallest().to_json())
    shipped_data = str(shipped("tiny-cpu-ort"))
    shutil.copy(shipped_data, data)  # an existing dataset
    proc = holder(data, pred, ckpt, search, model, demo)
    commands = [
        ["profile", "--space", "tiny", "--n", "2", "--out", str(data), "--overwrite", *FAST],
        ["profile", "--space", "tiny", "--n", "2", "--out", str(data), "--resume", *FAST],
        ["profile", "merge", shipped_data, "--out", str(data), "--overwrite"],
        ["fit", "--data", shipped_data, "--model", "flops-linear", "--out", str(pred)],
        ["train", "--steps", "1", "--out", str(ckpt)],
        ["search", "--supernet", str(ckpt), "--predictor", str(pred), "--out", str(search)],
        ["export", str(arch), "--out", str(model)],
        ["demo", "--out", str(demo)],
    ]
    before = hashes(tmp_path)
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"being written by another run (pid {proc.pid} " in err, err
    assert hashes(tmp_path) == before


def test_a_lock_left_by_a_killed_run_blocks_no_one(tmp_path, capsys, holder):
    out = tmp_path / "d.parquet"
    proc = holder(out)
    proc.kill()
    proc.wait()
    assert lock_path(out).is_file()  # the dead holder's lock file is still there
    assert main(["profile", "--space", "tiny", "--n", "1", "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    assert read_profiles(out)[0]["arch_id"].nunique() == 1
    assert not lock_path(out).exists()  # taken over, then removed with the run


def test_lock_names_its_holder_and_is_reentrant(tmp_path):
    out = tmp_path / "sub" / "x.parquet"
    with output_lock(out, "profile dataset") as lock:
        who = json.loads(lock.read_text().splitlines()[1])
        assert who["pid"] == os.getpid() and who["host"]
        with output_lock(out, "profile dataset"):  # the demo's stages nest
            pass
        assert lock.exists()
    assert not lock.exists() and not (tmp_path / "sub").exists()  # nothing left behind, not even the folder
