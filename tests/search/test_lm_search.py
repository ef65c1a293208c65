"""`moenas search` on a decoder-only language model: fitness is the validation loss of the
supernet's inherited weights over validation blocks (perplexity and greedy continuations in the
report), budgets on the total latency, the prefill, the decode ms per token and the active
parameters, each latency budget predicted by a predictor of its own target and checked against
its own measured component. A micro LM supernet trained a few steps, predictors fitted on
synthetic rows of a short protocol; the device is a stand-in that 'measures' the predictions."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from micro_spaces import micro_lm
from toy_text import toy_paragraphs, write_text_dir

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.cost import param_count
from moenas.arch.protocol import LMProtocol
from moenas.cli import main
from moenas.data.profiles import write_profiles
from moenas.predictor import Predictor
from moenas.predictor.api import Prediction, fit_predictor
from moenas.predictor.dataset import load_dataset
from moenas.predictor.synthetic import make_profiles
from moenas.search.budgets import DECODE_PER_TOKEN, LATENCY, PREFILL
from moenas.search.constraints import ParamsConstraint
from moenas.search.evolution import Candidate
from moenas.search.final_selection import Finalist, decide
from moenas.search.fitness import SupernetFitness
from moenas.search.report import BudgetCheck, Verification
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

PROTOCOL = LMProtocol(prompt_len=8, decode_steps=4)  # a short protocol: per token = decode / 4
TARGETS = ("total", "prefill", "decode")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A micro LM supernet (4 steps on toy text), one predictor per target fitted on 30
    synthetic archs of the micro space, and budgets at the data's 80th percentiles."""
    root = tmp_path_factory.mktemp("lmsearch")
    space_file = root / "lm-micro.yaml"
    space_file.write_text(yaml.safe_dump(micro_lm()))
    corpus = write_text_dir(root / "text", toy_paragraphs(200, seed=1))
    ckpt = root / "lm.pt"
    cfg = TrainConfig(
        space=str(space_file),
        corpus=str(corpus),
        cache_dir=str(root / "cache"),
        steps=4,
        max_tokens=64,
        block_len=16,
        warmup=2,
        lr=3e-3,
        valid_sentences=8,
        progress=False,
        device="cpu",
    )
    train(cfg, ckpt, log=lambda m: None)
    rows = root / "rows.parquet"
    write_profiles(rows, *make_profiles(str(space_file), 30, "a", seed=0, protocol=PROTOCOL))
    preds, q80 = {}, {}
    for t in TARGETS:
        ds = load_dataset([rows], t)
        pred, _ = fit_predictor(ds, "flops-linear", folds=3, with_learning_curve=False)
        preds[t] = str(pred.save(root / f"pred-{t}"))
        q80[t] = float(np.quantile(ds.y, 0.8))
    space = SearchSpace.load(str(space_file))
    active = float(np.median([param_count(a).active for a in space.sample_n(40, seed=2)]))
    return {"root": root, "space": str(space_file), "ckpt": str(ckpt), "pred": preds, "q80": q80, "active": active}


class FakeDevice:
    """Stands in for measure_archs: each component 'measures' its predictor's mean times
    ``factor`` (``slow``: arch id -> a factor of its own), the total their sum; calls counted."""

    def __init__(self, env, factor=1.0, slow=None):
        self.preds = {t: Predictor.load(env["pred"][t]) for t in ("prefill", "decode")}
        self.factor, self.slow, self.calls = factor, slow or {}, 0

    def __call__(self, archs, **kw):
        self.calls += 1
        ms = {t: p.predict(list(archs)).mean * self.factor for t, p in self.preds.items()}
        out = []
        for i, a in enumerate(archs):
            f = self.slow.get(a.arch_id, 1.0)
            comps = {t: float(ms[t][i]) * f for t in ms}
            out.append({"arch_id": a.arch_id, **{c: {"median_ms": v} for c, v in comps.items()}})
            out[-1]["total"] = {"median_ms": sum(comps.values())}
        return out


def search_args(env, out, *extra, predictors=TARGETS):
    return [
        "search",
        "--space",
        env["space"],
        "--supernet",
        env["ckpt"],
        "--predictor",
        *(env["pred"][t] for t in predictors),
        "--population",
        "8",
        "--parents",
        "3",
        "--mutations",
        "3",
        "--crossovers",
        "3",
        "--iterations",
        "1",
        "--final-k",
        "1",
        "--bleu-sentences",
        "5",
        "--seed",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def budgets(env):
    """Every budget: total, prefill and decode per token at their 80th percentiles, active params at the median."""
    q = env["q80"]
    return [
        "--max-latency-ms",
        str(q["total"]),
        "--max-prefill-ms",
        str(q["prefill"]),
        "--max-decode-ms-per-token",
        str(q["decode"] / PROTOCOL.decode_steps),
        "--max-active-params",
        str(env["active"]),
    ]


def test_lm_search_end_to_end_with_every_budget(env, tmp_path, capsys, monkeypatch):
    import moenas.profiler.runner as runner

    device = FakeDevice(env)
    monkeypatch.setattr(runner, "measure_archs", device)
    out = tmp_path / "s"
    assert main(search_args(env, out, *budgets(env))) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    s, q = rep["settings"], env["q80"]
    assert s["family"] == "decoder-only" and s["primary_budget"] == {
        "name": "latency",
        "budget": q["total"],
        "unit": "ms",
    }
    assert set(s["predictors"]) == set(TARGETS) and s["protocol"]["decode_steps"] == PROTOCOL.decode_steps
    # nothing evaluated, in either family, breaks a budget as predicted (upper bounds; per token for decode)
    preds = {t: Predictor.load(env["pred"][t]) for t in TARGETS}
    for name in ("evaluated.csv", "dense_evaluated.csv"):
        archs = [Arch.from_json(r["arch"]) for r in csv.DictReader(open(out / name))]
        assert archs and all(float(r["loss_se"]) > 0 for r in csv.DictReader(open(out / name)))
        assert (preds["total"].predict(archs).upper <= q["total"] + 1e-9).all()
        assert (preds["prefill"].predict(archs).upper <= q["prefill"] + 1e-9).all()
        assert (preds["decode"].predict(archs).upper / PROTOCOL.decode_steps <= q["decode"] / 4 + 1e-9).all()
        assert all(param_count(a).active <= env["active"] for a in archs)
    assert all(
        a.is_dense for a in (Arch.from_json(r["arch"]) for r in csv.DictReader(open(out / "dense_evaluated.csv")))
    )
    # every finalist measured once, each budget against its own component
    assert device.calls == 1
    fin = rep["final"]
    rows = {(v["role"], v["arch_id"]): v for v in rep["verification"]}
    assert {r for r, _ in rows} >= {"searched", "dense"}
    for v in rows.values():
        t = v["timings"]
        assert set(v["budgets"]) == {"prefill", "decode_per_token"} and v["budget_name"] == "latency"
        assert v["budgets"]["decode_per_token"]["measured_ms"] == pytest.approx(t["decode_per_token"])
        assert t["latency"] == pytest.approx(t["prefill"] + 4 * t["decode_per_token"])
        assert v["tokens_per_s"] == pytest.approx(1000 / t["decode_per_token"])
        assert v["params_active_m"] * 1e6 <= env["active"] + 1e-6
    assert f"at {q['total']:.4g} ms (" in fin["verdict"] and " ms)." in fin["verdict"]  # the budget's unit
    win = rows[(fin["winner_role"], fin["winner"])]
    assert win["meets_budget"] and win["perplexity"] == pytest.approx(math.exp(win["val_loss"]))
    assert win["bleu"] is None and win["samples"] and set(win["samples"][0]) == {"prompt", "reference", "output"}
    md = (out / "report.md").read_text()
    assert "perplexity" in md and "decode ms/token" in md and "tokens/s" in md and "## Continuations" in md
    assert "prefill budget" in md and "BLEU" not in md
    assert "perplexity" in printed and "continues" in printed
    finalists = list(csv.DictReader(open(out / "finalists.csv")))
    assert {"prefill_measured", "decode_per_token_measured", "decode_per_token_budget_ms"} <= set(finalists[0])
    # a resume of the finished search reuses the measurements: nothing is timed again
    assert main(search_args(env, out, *budgets(env), "--resume")) == 0
    assert device.calls == 1 and json.loads((out / "report.json").read_text())["final"] == fin


def test_a_finalist_over_one_budget_is_passed_over_and_none_meeting_is_one_line(env, tmp_path, capsys, monkeypatch):
    """Measured over the decode budget alone (the total still within its budget), an arch
    misses; when every finalist does, the line names the decode per token budget."""
    import moenas.profiler.runner as runner

    q = env["q80"]
    args = ["--max-latency-ms", str(100 * q["total"]), "--max-decode-ms-per-token", str(q["decode"] / 4), "--no-dense"]
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(env))
    first = tmp_path / "first"
    assert main(search_args(env, first, *args, "--final-k", "2")) == 0
    chosen = json.loads((first / "report.json").read_text())["final"]["searched"]
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(env, slow={chosen: 3.0}))
    again = tmp_path / "again"
    assert main(search_args(env, again, *args, "--final-k", "2")) == 0
    rep = json.loads((again / "report.json").read_text())
    row = next(v for v in rep["verification"] if v["arch_id"] == chosen)
    assert (
        row["measured_ms"] <= row["budget_ms"] and row["budgets"]["decode_per_token"]["measured_ms"] > q["decode"] / 4
    )
    assert row["meets_budget"] is False and rep["final"]["searched"] != chosen
    assert "**misses** (decode per token)" in (again / "report.md").read_text()
    capsys.readouterr()
    monkeypatch.setattr(runner, "measure_archs", FakeDevice(env, factor=5.0))
    assert main(search_args(env, tmp_path / "slow", *args)) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "no candidate meets" in x]
    assert "ms/token decode per token budget" in line and "% over" in line


def test_decode_budget_is_per_token_and_active_params_filter():
    """Predicted decode of 40 ms over 4 decode steps is 10 ms per token; active parameters count
    the top-k experts only, so an arch can be over an active budget that its total meets."""

    class Flat:
        metadata = {"target": "decode"}

        def predict(self, archs, confidence=0.9):
            n = len(archs)
            return Prediction(np.full(n, 40.0), np.full(n, 36.0), np.full(n, 44.0), confidence)

    arch = SearchSpace.from_dict(micro_lm()).largest()
    per_token = DECODE_PER_TOKEN.constraint(Flat(), 10.5, None, PROTOCOL)
    assert per_token.steps == 4 and per_token.mean([arch])[0] == pytest.approx(10.0)
    assert per_token([arch])[0] < 0 and DECODE_PER_TOKEN.constraint(Flat(), 9.5, None, PROTOCOL)([arch])[0] > 0
    assert DECODE_PER_TOKEN.constraint(Flat(), 10.5, 0.9, PROTOCOL)([arch])[0] > 0  # the bound: 11 ms/token
    assert "ms/token" in DECODE_PER_TOKEN.constraint(Flat(), 9.5, 0.9, PROTOCOL).explain(arch, 0.2)
    assert PREFILL.constraint(Flat(), 1.0, None, PROTOCOL).steps == LATENCY.steps(PROTOCOL) == 1
    p = param_count(arch)
    assert arch.top_k < max(len(layer.experts) for _, _, layer in arch.layers) and p.active < p.total
    between = (p.active + p.total) / 2
    assert ParamsConstraint(between)([arch])[0] > 0 and ParamsConstraint(between, active=True)([arch])[0] < 0
    assert ParamsConstraint(p.active * 0.9, active=True)([arch])[0] > 0


def test_every_budget_must_be_met_when_measured():
    arch = SearchSpace.from_dict(micro_lm()).smallest()

    def row(decode_ms, a=arch):
        v = Verification(a.arch_id, "searched", 5.0, 9.0, 8.0, 10.0, 9.0, 10.0, 0.1, 0.1, loss_se=0.01)
        v.budgets["decode_per_token"] = BudgetCheck("decode_per_token", "ms/token", 2.0, 1.8, 2.2, decode_ms, 2.5)
        return v

    ok, over = row(2.4), row(2.6)
    assert ok.meets_budget and over.meets_budget is False and over.worst_check().name == "decode_per_token"
    assert Verification.from_dict(over.to_dict()) == over  # what --resume reads back
    fins = [Finalist("searched", Candidate(arch, 5.0, 9.0, [0.0], 0.01), row=over)]
    sel = decide(fins, 10.0, measured=True)
    assert sel.winner is None and "the 2.5 ms/token decode per token budget" in sel.none_meets_message()
    # a per-token primary budget: the verdict speaks its unit
    big = SearchSpace.from_dict(micro_lm()).largest()
    searched = Finalist("searched", Candidate(big, 5.0, 2.0, [0.0], 0.01), row=row(2.4, big))
    dense = Finalist("dense", Candidate(SearchSpace.from_dict(micro_lm()).dense().smallest(), 5.5, 1.0, [0.0], 0.01))
    dense.row = row(2.0)
    for f, ms in ((searched, 2.2), (dense, 1.1)):
        f.row.budget_name, f.row.unit, f.row.measured_ms, f.row.budget_ms = "decode_per_token", "ms/token", ms, 2.5
    sentence = decide([searched, dense], 2.5, measured=True, unit="ms/token").verdict.sentence
    assert "at 2.5 ms/token" in sentence and "ms/token)." in sentence and "nats)" not in sentence


def test_lm_fitness_loss_per_block_and_quality(env):
    space = SearchSpace.load(env["space"])
    fit = SupernetFitness(env["ckpt"], valid_sentences=6)
    ((value, stats),) = fit.scores([space.largest()])
    assert stats.stats.shape == (6, 2) and value == pytest.approx(stats.value(), rel=1e-6)  # one row per block
    assert fit([space.largest()])[0][1] == pytest.approx(stats.se()) and stats.se() > 0
    q = fit.quality(space.smallest(), 10, samples=2)
    assert q["perplexity"] == pytest.approx(math.exp(q["val_loss"])) and "bleu" not in q
    assert len(q["samples"]) == 2 and all(x["prompt"] and x["reference"] for x in q["samples"])
    with pytest.raises(UserError, match="fitness 'bleu' does not apply"):
        SupernetFitness(env["ckpt"], metric="bleu").scores([space.largest()])


@pytest.mark.parametrize(
    "extra, predictors, needle",
    [
        (("--max-prefill-ms", "1"), ("total",), "--max-prefill-ms needs a predictor of prefill latency"),
        (("--max-decode-ms-per-token", "1"), ("total", "prefill"), "needs a predictor of decode latency"),
        (("--max-latency-ms", "1"), ("prefill",), "--max-latency-ms needs a predictor of total latency"),
        (("--max-latency-ms", "9", "--fitness", "bleu"), TARGETS, "fitness 'bleu' does not apply"),
        (("--max-latency-ms", "9"), ("total", "total"), "both predict 'total' latency"),
    ],
)
def test_bad_lm_input_is_one_line(env, tmp_path, capsys, extra, predictors, needle):
    out = tmp_path / "x"
    assert main(search_args(env, out, *extra, predictors=predictors)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() or not any(out.iterdir())


def test_predictors_of_two_protocols_and_lm_budgets_on_translation_are_refused(env, tmp_path, capsys):
    other = tmp_path / "other.parquet"
    write_profiles(
        other, *make_profiles(env["space"], 12, "a", seed=3, protocol=LMProtocol(prompt_len=8, decode_steps=6))
    )
    pred, _ = fit_predictor(load_dataset([other], "decode"), "flops-linear", folds=3, with_learning_curve=False)
    args = search_args(env, tmp_path / "y", "--max-decode-ms-per-token", "1", predictors=("total",))
    i = args.index("--predictor")
    args.insert(i + 2, str(pred.save(tmp_path / "pred-decode-6")))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "fitted for another latency protocol (decode_steps 6 vs 4)" in err and len(err.strip().splitlines()) == 1
    args = search_args(env, tmp_path / "z", "--max-prefill-ms", "1")
    args[args.index("--space") + 1] = "tiny"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--max-prefill-ms: space 'tiny' is encoder-decoder" in err and len(err.strip().splitlines()) == 1
