"""`moenas search` end to end: the shipped tiny CPU profiles drive the predictor, a few-step
tiny supernet gives the fitness, the winner is re-measured with onnxruntime."""

import json

import numpy as np
import pytest
from toy_corpus import synthetic_pairs, write_parallel_dir

from moenas.arch import Arch, SearchSpace
from moenas.cli import main
from moenas.data.profiles import shipped
from moenas.predictor import Predictor
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import load_dataset
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

TINY = SearchSpace.load("tiny")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("searchjob")
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(400, seed=2))
    ckpt = root / "supernet.pt"
    train(
        TrainConfig(
            space="tiny",
            corpus=str(corpus),
            cache_dir=str(root / "cache"),
            steps=3,
            max_tokens=256,
            max_len=24,
            warmup=2,
            valid_sentences=16,
            bleu_sentences=0,
            progress=False,
            device="cpu",
        ),
        ckpt,
        log=lambda m: None,
    )
    ds = load_dataset([shipped("tiny-cpu-ort")], "total")
    pred, _ = fit_predictor(ds, "flops-linear", folds=3, with_learning_curve=False)
    pdir = root / "predictor"
    pred.save(pdir)
    return {
        "root": root,
        "ckpt": str(ckpt),
        "pred": str(pdir),
        "median": float(np.median(ds.y)),
        "min": float(ds.y.min()),
    }


def search_args(env, out, budget, *extra):
    return [
        "search",
        "--space",
        "tiny",
        "--supernet",
        env["ckpt"],
        "--predictor",
        env["pred"],
        "--max-latency-ms",
        str(budget),
        "--population",
        "12",
        "--parents",
        "4",
        "--mutations",
        "4",
        "--crossovers",
        "4",
        "--iterations",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_search_end_to_end_respects_the_budget_and_remeasures(env, tmp_path, capsys):
    out = tmp_path / "s"
    budget = env["median"]
    code = main(search_args(env, out, budget, "--final-k", "1"))
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err  # 1 = measured over budget: flagged, not hidden
    rep = json.loads((out / "report.json").read_text())
    pred = Predictor.load(env["pred"])
    best = Arch.from_json((out / "best_arch.json").read_text()) if (out / "best_arch.json").exists() else None
    if best is not None:
        assert TINY.contains(best)
        assert pred.predict([best], confidence=0.9).upper[0] <= budget
    import csv

    with open(out / "evaluated.csv") as f:
        rows = list(csv.DictReader(f))
    archs = [Arch.from_json(r["arch"]) for r in rows]
    assert (pred.predict(archs, confidence=0.9).upper <= budget + 1e-9).all()  # nothing infeasible was evaluated
    fin = rep["final"]
    rows = {(v["role"], v["arch_id"]): v for v in rep["verification"]}
    assert {r for r, _ in rows} >= {"searched", "dense", "largest-dense"}
    assert all(v["measured_ms"] > 0 and v["meets_budget"] == (v["measured_ms"] <= budget) for v in rows.values())
    if fin["winner"]:  # the answer met the budget when measured, and best_arch.json is it
        win = rows[(fin["winner_role"], fin["winner"])]
        assert win["beam"] == 5 and win["bleu"] is not None and win["chrf"] is not None  # the protocol's decoding
        assert win["meets_budget"] and best.arch_id == fin["winner"] and code == 0
        assert fin["verdict"].startswith("Deploy") and fin["winner"] in captured.out
    else:
        assert code == 1 and "no candidate meets" in captured.err and not (out / "best_arch.json").exists()
    dense = [Arch.from_json(r["arch"]) for r in csv.DictReader(open(out / "dense_evaluated.csv"))]
    assert dense and all(a.is_dense for a in dense)
    assert (pred.predict(dense, confidence=0.9).upper <= budget + 1e-9).all()  # the same budget
    for name in ("pareto.csv", "history.csv", "pareto.png", "report.md", "finalists.csv"):
        assert (out / name).stat().st_size > 0
    assert "in budget" in captured.out  # the summary table
    assert all(float(r["loss_se"]) > 0 for r in csv.DictReader(open(out / "evaluated.csv")))  # the fitness's error bar


def test_same_seed_same_search_and_resume_after_finish(env, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(search_args(env, a, env["median"], "--no-measure")) == 0
    assert main(search_args(env, b, env["median"], "--no-measure")) == 0
    assert (a / "best_arch.json").read_text() == (b / "best_arch.json").read_text()
    assert (a / "evaluated.csv").read_text() == (b / "evaluated.csv").read_text()
    capsys.readouterr()
    # an existing report is never silently replaced
    assert main(search_args(env, a, env["median"], "--no-measure")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(search_args(env, a, env["median"], "--no-measure", "--resume")) == 0
    assert (a / "best_arch.json").read_text() == (b / "best_arch.json").read_text()


def test_impossible_budget_says_the_smallest_latency(env, tmp_path, capsys):
    code = main(search_args(env, tmp_path / "x", env["min"] / 100))
    err = capsys.readouterr().err
    assert code == 2 and "smallest arch" in err and "ms" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())  # nothing written


@pytest.mark.parametrize(
    "change, needle",
    [
        (("--predictor", "/no/such/predictor"), "no such predictor"),
        (("--supernet", "/no/such.pt"), "no such supernet"),
        (("--space", "automoe-wmt"), "space"),
    ],
)
def test_bad_input_is_one_line(env, tmp_path, capsys, change, needle):
    args = search_args(env, tmp_path / "y", env["median"], "--no-measure")
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
    monkeypatch.setattr(
        ProcessPoolRunner,
        "evaluate",
        lambda self, fitness, archs: on_pool.append(len(archs)) or pool_evaluate(self, fitness, archs),
    )
    reps = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert (
            main(
                search_args(
                    env, out, env["median"], "--no-measure", "--no-dense", "--random-baseline", "--workers", workers
                )
            )
            == 0
        )
        reps.append(json.loads((out / "report.json").read_text()))
    one, two = (r["baseline"] for r in reps)
    assert one["evaluations"] == two["evaluations"] > 0
    assert (
        sum(on_pool) == reps[1]["history"][-1]["evaluations"] + two["evaluations"]
    )  # the baseline ran on the pool too
    assert one["best_arch_id"] == two["best_arch_id"]
    assert one["best_loss"] == pytest.approx(two["best_loss"], abs=1e-6)


class FakeDevice:
    """Stands in for the profiler's measure_archs: each arch 'measures' its predicted mean times
    ``factor`` (the reference arch too), and every call is counted; ``fail`` raises instead,
    as a search stopped during its final measurement would."""

    def __init__(self, pred, factor=1.0, fail=False):
        self.pred, self.factor, self.fail, self.calls = pred, factor, fail, 0

    def __call__(self, archs, **kw):
        self.calls += 1
        if self.fail:
            raise KeyboardInterrupt
        ms = self.pred.predict(list(archs)).mean * self.factor
        return [
            {"arch_id": a.arch_id, **{c: {"median_ms": float(m)} for c in ("encoder", "decoder", "total")}}
            for a, m in zip(archs, ms)
        ]


def _final(out):
    rep = json.loads((out / "report.json").read_text())
    return rep["final"], {(v["role"], v["arch_id"]): v for v in rep["verification"]}


def test_none_meets_the_budget_when_measured_is_one_line_and_exit_1(env, tmp_path, capsys, monkeypatch):
    import moenas.profiler.runner as runner

    device = FakeDevice(Predictor.load(env["pred"]), factor=3.0)  # the device runs 3x slower than predicted
    monkeypatch.setattr(runner, "measure_archs", device)
    out = tmp_path / "slow"
    assert main(search_args(env, out, env["median"], "--final-k", "2", "--bleu-sentences", "0")) == 1
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("moenas search:") and "meets" in line
    ]
    assert len(err) == 1 and "no candidate meets" in err[0] and "% over" in err[0]
    final, rows = _final(out)
    assert final["winner"] is None and device.calls == 1  # every finalist in one round-robin
    assert not (out / "best_arch.json").exists() and "Nothing to deploy" in (out / "report.md").read_text()


def test_a_finalist_measured_over_budget_is_passed_over(env, tmp_path, capsys, monkeypatch):
    import moenas.profiler.runner as runner

    pred = Predictor.load(env["pred"])
    first = tmp_path / "first"
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(pred))
    assert main(search_args(env, first, env["median"], "--final-k", "3", "--bleu-sentences", "0")) == 0
    final, rows = _final(first)
    searched = [v for (role, _), v in rows.items() if role == "searched"]
    # the device now runs the first choice 5% over the budget, and nothing else slower than predicted
    budget = env["median"]
    chosen = final["searched"]
    slow_pred = FakeDevice(pred)

    def device(archs, **kw):
        out = slow_pred(archs, **kw)
        for m in out:
            if m["arch_id"] == chosen:
                m["total"]["median_ms"] = 1.05 * budget
        return out

    monkeypatch.setattr(runner, "measure_archs", device)
    again = tmp_path / "again"
    code = main(search_args(env, again, budget, "--final-k", "3", "--bleu-sentences", "0"))
    final2, rows2 = _final(again)
    assert rows2[("searched", chosen)]["meets_budget"] is False
    assert final2["searched"] != chosen and rows2[("searched", final2["searched"])]["meets_budget"]
    assert code == 0 and final2["winner"] and final2["winner"] != chosen
    assert len(searched) >= 3


def test_resume_of_a_search_stopped_during_final_selection(env, tmp_path, capsys, monkeypatch):
    import moenas.profiler.runner as runner

    pred = Predictor.load(env["pred"])
    ref, out = tmp_path / "ref", tmp_path / "stopped"
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(pred))
    assert main(search_args(env, ref, env["median"], "--final-k", "2", "--bleu-sentences", "0")) == 0
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(pred, fail=True))
    assert main(search_args(env, out, env["median"], "--final-k", "2", "--bleu-sentences", "0")) == 130  # Ctrl-C
    assert (out / "search_state.json").exists() and (out / "dense_state.json").exists()
    assert not (out / "report.json").exists()
    device = FakeDevice(pred)
    monkeypatch.setattr(runner, "measure_archs", device)
    assert main(search_args(env, out, env["median"], "--final-k", "2", "--bleu-sentences", "0", "--resume")) == 0
    assert device.calls == 1 and _final(out) == _final(ref)
    assert (out / "best_arch.json").read_text() == (ref / "best_arch.json").read_text()
    # a resume of the finished search reuses the saved measurements: nothing is timed again
    assert main(search_args(env, out, env["median"], "--final-k", "2", "--bleu-sentences", "0", "--resume")) == 0
    assert device.calls == 1 and _final(out) == _final(ref)


def test_a_remeasurement_at_another_thread_count_is_named(env):
    import argparse

    from moenas.commands.search import _mismatch_notice

    args = argparse.Namespace(predictor=env["pred"], backend="onnxruntime", threads=2, no_measure=False)
    (line,) = _mismatch_notice(args)
    assert line.startswith("moenas search: warning:") and "threads_intra 1 (predictor) vs 2" in line
    assert (
        _mismatch_notice(argparse.Namespace(predictor=env["pred"], backend="onnxruntime", threads=1, no_measure=False))
        == []
    )
