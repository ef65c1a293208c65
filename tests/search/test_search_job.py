"""`moenas search` end to end: the shipped tiny CPU profiles drive the predictor, a few-step
tiny supernet gives the fitness, the winner is re-measured with onnxruntime."""
import json

import numpy as np
import pytest

from moenas.arch import Arch, SearchSpace
from moenas.cli import main
from moenas.data.profiles import shipped
from moenas.predictor import Predictor
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import load_dataset
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

from toy_corpus import synthetic_pairs, write_parallel_dir

TINY = SearchSpace.load("tiny")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("searchjob")
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(400, seed=2))
    ckpt = root / "supernet.pt"
    train(TrainConfig(space="tiny", corpus=str(corpus), cache_dir=str(root / "cache"), steps=3, max_tokens=256, max_len=24,
                      warmup=2, valid_sentences=16, bleu_sentences=0, progress=False, device="cpu"), ckpt, log=lambda m: None)
    ds = load_dataset([shipped("tiny-cpu-ort")], "total")
    pred, _ = fit_predictor(ds, "flops-linear", folds=3, with_learning_curve=False)
    pdir = root / "predictor"
    pred.save(pdir)
    return {"root": root, "ckpt": str(ckpt), "pred": str(pdir), "median": float(np.median(ds.y)), "min": float(ds.y.min())}


def search_args(env, out, budget, *extra):
    return ["search", "--space", "tiny", "--supernet", env["ckpt"], "--predictor", env["pred"], "--max-latency-ms", str(budget),
            "--population", "12", "--parents", "4", "--mutations", "4", "--crossovers", "4", "--iterations", "2",
            "--seed", "1", "--out", str(out), *extra]


def test_search_end_to_end_respects_the_budget_and_remeasures(env, tmp_path, capsys):
    out = tmp_path / "s"
    budget = env["median"]
    code = main(search_args(env, out, budget, "--verify-top", "1"))
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err  # 1 = measured over budget: flagged, not hidden
    rep = json.loads((out / "report.json").read_text())
    pred = Predictor.load(env["pred"])
    best = Arch.from_json((out / "best_arch.json").read_text())
    assert TINY.contains(best)
    assert pred.predict([best], confidence=0.9).upper[0] <= budget
    import csv
    with open(out / "evaluated.csv") as f:
        rows = list(csv.DictReader(f))
    archs = [Arch.from_json(r["arch"]) for r in rows]
    assert (pred.predict(archs, confidence=0.9).upper <= budget + 1e-9).all()  # nothing infeasible was evaluated
    v = rep["verification"][0]
    assert v["role"] == "best" and v["measured_ms"] > 0
    assert v["meets_budget"] == (v["measured_ms"] <= budget)
    for name in ("pareto.csv", "history.csv", "pareto.png", "report.md"):
        assert (out / name).stat().st_size > 0
    assert "in budget" in captured.out and v["arch_id"] in captured.out  # the summary table
    assert code == (0 if v["meets_budget"] else 1)


def test_same_seed_same_search_and_resume_after_finish(env, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(search_args(env, a, env["median"], "--verify-top", "0")) == 0
    assert main(search_args(env, b, env["median"], "--verify-top", "0")) == 0
    assert (a / "best_arch.json").read_text() == (b / "best_arch.json").read_text()
    assert (a / "evaluated.csv").read_text() == (b / "evaluated.csv").read_text()
    capsys.readouterr()
    # an existing report is never silently replaced
    assert main(search_args(env, a, env["median"], "--verify-top", "0")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(search_args(env, a, env["median"], "--verify-top", "0", "--resume")) == 0
    assert (a / "best_arch.json").read_text() == (b / "best_arch.json").read_text()


def test_impossible_budget_says_the_smallest_latency(env, tmp_path, capsys):
    code = main(search_args(env, tmp_path / "x", env["min"] / 100, "--verify-top", "0"))
    err = capsys.readouterr().err
    assert code == 2 and "smallest arch" in err and "ms" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("change, needle", [
    (("--predictor", "/no/such/predictor"), "no such predictor"),
    (("--supernet", "/no/such.pt"), "no such supernet"),
    (("--space", "automoe-wmt"), "space"),
])
def test_bad_input_is_one_line(env, tmp_path, capsys, change, needle):
    args = search_args(env, tmp_path / "y", env["median"], "--verify-top", "0")
    i = args.index(change[0])
    args[i + 1] = change[1]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_random_baseline_runs_on_the_workers_and_matches_one_process(env, tmp_path, monkeypatch):
    """The random-search baseline is evaluated on the search's runner (a process pool here),
    before it closes, and equals the one-process baseline arch for arch."""
    from moenas.search.fitness_runners import ProcessPoolRunner

    on_pool = []
    pool_evaluate = ProcessPoolRunner.evaluate
    monkeypatch.setattr(ProcessPoolRunner, "evaluate",
                        lambda self, fitness, archs: on_pool.append(len(archs)) or pool_evaluate(self, fitness, archs))
    reps = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert main(search_args(env, out, env["median"], "--verify-top", "0", "--random-baseline",
                                "--workers", workers)) == 0
        reps.append(json.loads((out / "report.json").read_text()))
    one, two = (r["baseline"] for r in reps)
    assert one["evaluations"] == two["evaluations"] > 0
    assert sum(on_pool) == reps[1]["history"][-1]["evaluations"] + two["evaluations"]  # the baseline ran on the pool too
    assert one["best_arch_id"] == two["best_arch_id"]
    assert one["best_loss"] == pytest.approx(two["best_loss"], abs=1e-6)
