"""--resume and --overwrite never degrade data.

* --resume judges earlier rows only by their own run's reference checks: resuming a copy of a
  shipped dataset whose archs are all measured measures nothing and leaves the files
  byte-identical, whatever this run's checks say; a resume that does measure keeps every old
  row as it was.
* --overwrite keeps the old dataset until the new run's first measured group replaces it.
* a command that fails (bad input, an impossible budget) changes nothing, --overwrite or not.

The reference model's timings are scripted (``Profiler._reference_ms``), so the tests say what
the machine "did" and take seconds."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fast_profile import QUIET, fast_rule
from hostile import hashes

from moenas.arch import SearchSpace
from moenas.cli import main
from moenas.data.profiles import latency_table, read_profiles, shipped, sidecar_path
from moenas.predictor.dataset import load_dataset
from moenas.profiler.runner import Profiler

RULE = [*fast_rule(), "--ref-retries", "0", *QUIET]
FAST = ["--backend", "torch", "--src-len", "4", "--decoder-steps", "2", "--beam", "2", *RULE]


def copy_shipped(name: str, tmp_path: Path) -> Path:
    src = shipped(name)
    out = tmp_path / src.name
    shutil.copy(src, out)
    shutil.copy(sidecar_path(src), sidecar_path(out))
    return out


def script_reference(monkeypatch, factor: float, baseline_ms: float) -> None:
    """This run's reference checks all read ``factor`` x the dataset's stored baseline."""
    monkeypatch.setattr(Profiler, "_reference_ms", lambda self, group=None: factor * baseline_ms)


@pytest.mark.parametrize("name, space", [("tiny-cpu-ort", "tiny"), ("automoe-wmt-cpu-ort", "automoe-wmt")])
@pytest.mark.parametrize("factor", [1.0, 1.07, 3.0])  # steady; within the old run's 10% but not this run's 5%; drifted
def test_resume_with_everything_measured_changes_nothing(tmp_path, capsys, monkeypatch, name, space, factor):
    out = copy_shipped(name, tmp_path)
    df0, meta = read_profiles(out)
    script_reference(monkeypatch, factor, meta["reference"]["baseline_ms"])
    valid = len(load_dataset([out]))
    before = hashes(tmp_path)
    argv = ["profile", "--space", space, "--n", "2", "--out", str(out), "--resume", "--allow-mixed", *RULE, "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["new_measurements"] == 0  # automoe-wmt's 5 archs without a valid row were not asked for
    assert hashes(tmp_path) == before
    assert len(load_dataset([out])) == valid


def test_resume_that_measures_keeps_every_old_row(tmp_path, capsys, monkeypatch):
    out = copy_shipped("tiny-cpu-ort", tmp_path)
    df0, meta = read_profiles(out)
    script_reference(
        monkeypatch, 1.07, meta["reference"]["baseline_ms"]
    )  # the old run's 10% holds, the default 5% does not
    new = SearchSpace.load("tiny").smallest()
    assert new.arch_id not in set(df0["arch_id"])
    archs = tmp_path / "new.json"
    archs.write_text(new.to_json())
    argv = [
        "profile",
        "--archs",
        str(archs),
        "--space",
        "tiny",
        "--backend",
        "torch",
        "--out",
        str(out),
        "--resume",
        "--allow-mixed",
        "--drift-threshold",
        "0.10",
        *RULE,
        "--json",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["new_measurements"] == 1
    df1, meta1 = read_profiles(out)
    old = df1[df1["measurement_id"].isin(df0["measurement_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, df0.reset_index(drop=True))  # same rows, same flags, same ratios
    assert len(latency_table(df1)) == len(latency_table(df0)) + 1
    assert [r["drift_threshold"] for r in meta1["runs"][1:]] == [0.10]
    assert meta1["reference_earlier"][0]["checks"] == meta["reference"]["checks"]  # the old run's checks are kept


def test_overwrite_keeps_the_old_dataset_until_the_first_measured_group(tmp_path, capsys, monkeypatch):
    out = copy_shipped("tiny-cpu-ort", tmp_path)
    script_reference(monkeypatch, 1.0, 1.0)
    before = hashes(tmp_path)

    def killed(self, items):
        raise KeyboardInterrupt  # the run dies after its first reference check, before any arch is timed

    argv = ["profile", "--space", "tiny", "--n", "1", "--seed", "5", "--out", str(out), "--overwrite", *FAST]
    with monkeypatch.context() as m:
        m.setattr(Profiler, "_measure_batch", killed)
        assert main(argv) == 130
    assert hashes(tmp_path) == before
    assert main(argv) == 0  # a run that measures does replace it
    assert read_profiles(out)[0]["arch_id"].nunique() == 1


class _StubFitness:
    """Stands in for the supernet: the failure under test comes before any fitness is needed."""

    def __init__(self, *args, **kwargs):
        pass

    def check_space(self, space) -> None:
        pass

    def __call__(self, archs):
        return [0.0 for _ in archs]


def test_failed_search_overwrite_keeps_the_old_search(tmp_path, capsys, monkeypatch):
    out = tmp_path / "search"
    out.mkdir()
    (out / "search_state.json").write_text(json.dumps({"config": {}, "population": [], "iteration": 3}))
    (out / "report.json").write_text(json.dumps({"settings": {}, "best": {}}))
    (out / "best_arch.json").write_text(SearchSpace.load("tiny").smallest().to_json())
    (tmp_path / "s.pt").write_bytes(b"checkpoint")
    (tmp_path / "pred").mkdir()
    monkeypatch.setattr("moenas.search.search_job.SupernetFitness", _StubFitness)
    before = hashes(tmp_path)
    argv = [
        "search",
        "--supernet",
        str(tmp_path / "s.pt"),
        "--predictor",
        str(tmp_path / "pred"),
        "--max-params",
        "1",
        "--population",
        "4",
        "--parents",
        "2",
        "--iterations",
        "1",
        "--out",
        str(out),
        "--overwrite",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no feasible arch" in err
    assert hashes(tmp_path) == before


def test_failed_fit_and_train_overwrite_keep_the_old_output(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "predictor.json").write_text(json.dumps({"format": "moenas-predictor"}))
    (pred / "model.skops").write_bytes(b"model")
    (tmp_path / "s.pt").write_bytes(b"checkpoint")
    (tmp_path / "s.pt.json").write_text(json.dumps({"format": "moenas-checkpoint"}))
    before = hashes(tmp_path)
    for argv in (
        ["fit", "--data", str(tmp_path / "missing.parquet"), "--out", str(pred), "--overwrite"],
        [
            "train",
            "--steps",
            "1",
            "--corpus",
            str(tmp_path / "no-corpus"),
            "--out",
            str(tmp_path / "s.pt"),
            "--overwrite",
        ],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert hashes(tmp_path) == before
