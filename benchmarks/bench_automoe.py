"""AutoMoE's headline experiment at CPU scale: at equal BLEU, is the searched MoE arch faster?

Claim measured: one supernet on the `tiny` space, trained ten times the
demo's tokens; for three latency budgets, the search's winner in the full MoE space and in its
dense subspace (one expert per layer), the largest dense arch (the hand-designed Transformer's
analogue) and a random feasible MoE arch; each fine-tuned standalone from its inherited weights
for the same number of steps; then all of them re-measured side by side in one run. Table:
BLEU (test split, greedy), validation loss, measured latency, FLOPs, active/total parameters,
and the Amdahl bound (the share of the protocol's FLOPs that experts can touch).

`--space lm-tiny` runs the same stages on the decoder-only language-model space (PRESETS has its
recipe): budgets on decode ms per token (a generating user's wait, llama-bench's tg inverted),
quality = validation perplexity, every timed component (prefill, decode) in the table beside the
total, and tokens/s; results in bench_automoe_lm_tiny.csv.

Resumable stage by stage: every stage writes its result under --work and is skipped when the
result is there, so a rerun continues (training and fine-tuning resume from their last
checkpoint). Stages: train -> search -> finetune -> quality -> measure -> table (item 4), then
rank-train -> rank-finetune -> rank-table (item 5: Kendall tau between inherited-weight and
fine-tuned BLEU and loss over --rank-archs archs spread over the latency range, for
slice/uniform, slice/sandwich and mos/sandwich at equal training compute). Only
``measure`` times anything: run it on a quiet machine (nothing else using the cores); every
other stage may run in the background (``nice``). Never oversubscribe the cores: on the 2-vCPU
machine a 2-thread run beside two 1-thread trainings (and, for a while, a test run) slowed a
300-step fine-tune from 45 s alone to 18 min (2026-12-03); two settings side by side run at ``--threads 1`` each, in separate ``--work`` dirs
holding copies of ``predictor/`` and ``rank_archs.json``.

    python benchmarks/bench_automoe.py                      # every stage not yet done
    python benchmarks/bench_automoe.py --stages train       # only the supernet
    python benchmarks/bench_automoe.py --stages measure,table

Results: benchmarks/results/bench_automoe.csv (one row per budget x role) with device and versions.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry
from moenas.search.budgets import DECODE_PER_TOKEN, LATENCY, LatencyQuantity, protocol_of, tokens_per_s
from moenas.search.checkpoint import read_checkpoint
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

RESULTS = Path(__file__).parent / "results"
STAGES = ("train", "search", "finetune", "quality", "measure", "table", "rank-train", "rank-finetune", "rank-table")
# Item 5: can the supernet be trusted? The other two supernets of the comparison, each given the
# same training compute as the main (slice/uniform) one: a sandwich step trains 2 + sandwich_random
# archs, so it runs steps / 4 steps.
RANK_COMBOS = {
    "slice/uniform": dict(supernet="slice", sampling="uniform", share=1.0),
    "slice/sandwich": dict(supernet="slice", sampling="sandwich", share=0.25),
    "mos/sandwich": dict(supernet="mos", sampling="sandwich", share=0.25),
}


@dataclass(frozen=True)
class BenchConfig:
    """The experiment's sizes. Defaults: the demo's measured recipe (2048-token batches, uniform
    sampling, peak lr 3e-3, cosine) for 10x the demo's 1350 steps; dropout 0.1 because 10x the
    tokens is ~60 passes over the embedded corpus (the demo's 6 passes underfit without it)."""

    space: str = "tiny"
    corpus: str = "default"
    supernet: str = "slice"
    sampling: str = "uniform"
    sandwich_random: int = 2  # random archs per sandwich step (sandwich sampling only)
    steps: int = 13500
    max_tokens: int = 2048
    lr: float = 3e-3
    warmup: int = 100
    dropout: float = 0.1
    finetune_steps: int = 1350
    finetune_lr: float = 1e-3
    budgets: tuple[float, ...] = (0.45, 0.6, 0.75)  # fractions of the largest dense arch's predicted latency
    valid_sentences: int = 200
    bleu_sentences: int = 500
    population: int = 40
    parents: int = 10
    mutations: int = 15
    crossovers: int = 15
    iterations: int = 10
    rank_archs: int = 20
    rank_finetune_steps: int = 300
    seed: int = 0
    threads: int = 2


# Per space, the settings that differ from BenchConfig's (the translation defaults); `--space`
# picks one, and any flag given wins over it.
# lm-tiny: the language-model recipe measured for the demo (search/README.md: sandwich with one
# random arch, peak lr 2e-3, cosine, 16 blocks of 128 tokens a batch, 350 steps in ~6 minutes) run
# six times as long: 2100 steps are ~10 passes over the 423k-token corpus, hence dropout 0.1 as for
# translation; validation on all 60 validation blocks; fine-tuning the demo's 350 steps per arch.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "lm-tiny": dict(
        space="lm-tiny",
        sampling="sandwich",
        sandwich_random=1,
        steps=2100,
        lr=2e-3,
        dropout=0.1,
        finetune_steps=350,
        # the largest dense arch decodes at ~0.47 ms/token (shipped predictor) and the smallest arch
        # at ~0.17: at 45% no MoE arch fits, so the budgets sit higher in the range than translation's
        budgets=(0.6, 0.75, 0.9),
        valid_sentences=60,
        bleu_sentences=0,
    ),
}


@dataclass(frozen=True)
class BenchFamily:
    """What the experiment compares for one model family: the latency quantity its budgets limit
    (the whole inference for translation, decode ms per token for a language model, the figure a
    user of each waits on) and its quality metric (``higher``: whether more is better)."""

    budget: LatencyQuantity
    quality: str
    higher: bool

    @property
    def measured_column(self) -> str:
        """The table column holding the measured budget quantity (the latency ratios' figure)."""
        return "measured_ms" if self.budget is LATENCY else f"measured_{self.budget.name}_ms"

    def at_least_as_good(self, a: float, b: float) -> bool:
        return a >= b if self.higher else a <= b


BENCH_FAMILIES: FamilyRegistry[BenchFamily] = FamilyRegistry(
    "bench_automoe comparisons",
    {
        ENCODER_DECODER: BenchFamily(LATENCY, "bleu", True),
        DECODER_ONLY: BenchFamily(DECODE_PER_TOKEN, "perplexity", False),
    },
)


def bench_family(c: BenchConfig) -> BenchFamily:
    return BENCH_FAMILIES.for_family(_space_family(c.space))


@functools.cache
def _space_family(space: str):
    """The family of a space (read from its YAML once: every stage asks, the quality stage per arch)."""
    from moenas.arch import SearchSpace

    return SearchSpace.load(space).family


def supernet_config(c: BenchConfig) -> TrainConfig:
    return TrainConfig(
        space=c.space,
        corpus=c.corpus,
        steps=c.steps,
        supernet=c.supernet,
        sampling=c.sampling,
        sandwich_random=c.sandwich_random,
        max_tokens=c.max_tokens,
        lr=c.lr,
        warmup=c.warmup,
        schedule="cosine",
        dropout=c.dropout,
        seed=c.seed,
        eval_every=max(c.steps // 10, 1),
        save_every=max(c.steps // 50, 1),
        valid_sentences=c.valid_sentences,
        bleu_sentences=min(100, c.bleu_sentences),  # a language model has no BLEU (its bleu_sentences: 0)
        progress=False,
    )  # a kill loses <= 2% of it


def _train_to(cfg: TrainConfig, ckpt: Path, log) -> Path:
    """Train ``cfg`` into ``ckpt``, resuming an interrupted run; skipped when finished."""
    if ckpt.exists() and read_checkpoint(ckpt)["step"] >= cfg.steps:
        return ckpt
    train(cfg, ckpt, resume=ckpt.exists(), log=log)
    return ckpt


def stage_train(c: BenchConfig, work: Path, log) -> Path:
    """The supernet of item 4 (and the slice/uniform one of item 5)."""
    return _train_to(supernet_config(c), work / "supernet.pt", log)


def finetune_config(c: BenchConfig, arch, supernet: Path, steps: int) -> TrainConfig:
    """Standalone training of ``arch`` from its inherited weights (the same recipe for every arch)."""
    return TrainConfig(
        space=c.space,
        corpus=c.corpus,
        steps=steps,
        arch=arch.to_json(),
        init_from=str(supernet),
        max_tokens=c.max_tokens,
        lr=c.finetune_lr,
        warmup=min(100, steps // 4),
        schedule="cosine",
        dropout=c.dropout,
        seed=c.seed,
        valid_sentences=c.valid_sentences,
        bleu_sentences=0,
        eval_archs=["largest"],
        eval_every=steps,
        progress=False,
    )


def _predictor(c: BenchConfig, work: Path, log):
    """A predictor fitted on the shipped dataset of the space: it places the budgets and drives
    the search; every reported latency is re-measured here (stage ``measure``)."""
    from moenas.data.profiles import shipped
    from moenas.predictor import Predictor
    from moenas.predictor.api import fit_predictor
    from moenas.predictor.dataset import load_dataset

    pdir = work / "predictor"
    if any(pdir.glob("*.json")):
        return Predictor.load(pdir), pdir
    target = bench_family(c).budget.component
    log(f"fitting the search's predictor ({target}) on the shipped dataset {c.space}-cpu-ort")
    pred, _ = fit_predictor(
        load_dataset([shipped(f"{c.space}-cpu-ort")], target), "auto", folds=5, seed=c.seed, with_learning_curve=False
    )
    pred.save(pdir, overwrite=True)
    return pred, pdir


def _search(c: BenchConfig, space, ckpt: Path, pdir: Path, budget_ms: float, out: Path):
    from moenas.search.evolution import EvolutionConfig
    from moenas.search.search_job import SearchJob

    econf = EvolutionConfig(
        population=c.population,
        parents=c.parents,
        mutations=c.mutations,
        crossovers=c.crossovers,
        iterations=c.iterations,
        seed=c.seed,
    )
    job = SearchJob(
        space=space,
        supernet=str(ckpt),
        predictor_path=str(pdir),
        out=out,
        config=econf,
        confidence=0.9,
        valid_sentences=c.valid_sentences,
        bleu_sentences=0,
        **{bench_family(c).budget.option: budget_ms},
        measure=False,
        dense_baseline=False,
        resume=(out / "search_state.json").exists(),
        overwrite=True,
        show_progress=False,
        workers=os.cpu_count() or 1,  # fitness is not timed: one 1-thread evaluator per core
    )
    report, _ = job.run()
    return report.result.best


def _random_moe(space, pred, quantity: LatencyQuantity, budget: float, seed: int):
    """The first sampled arch that meets the budget (predicted 90% upper bound of ``quantity``)
    and has experts."""
    archs = [a for a in space.sample_n(2000, seed=seed) if not a.is_dense]
    upper = pred.predict(archs, confidence=0.9).upper
    protocol = protocol_of(pred)
    fits = [a for a, u in zip(archs, upper) if quantity.of(u, protocol) <= budget]
    if not fits:
        raise SystemExit(f"bench_automoe: error: no sampled MoE arch meets the {budget:.3g} {quantity.unit} budget")
    return fits[0]


def stage_search(c: BenchConfig, work: Path, log) -> list[dict[str, Any]]:
    """For each budget: the MoE winner, the dense winner and a random feasible MoE arch; plus
    the largest dense arch. Written to ``archs.json`` (role, budget, arch)."""
    from moenas.arch import SearchSpace

    done = work / "archs.json"
    if done.exists():
        return json.loads(done.read_text())
    space = SearchSpace.load(c.space)
    dense = space.dense()
    pred, pdir = _predictor(c, work, log)
    q = bench_family(c).budget
    largest = dense.largest()
    top = q.of(float(pred.predict([largest]).mean[0]), protocol_of(pred))
    rows = [{"budget": None, "budget_ms": None, "role": "largest-dense", "arch": largest.to_dict()}]
    for i, frac in enumerate(c.budgets):
        b = round(frac * top, 4)
        for role, sp in (("moe-winner", space), ("dense-winner", dense)):
            log(
                f"budget {i} ({frac:.0%} of the largest dense arch's {top:.3g} {q.unit} {q.label} = {b:.3g} {q.unit}): "
                f"searching the {role.split('-')[0]} space"
            )
            best = _search(c, sp, work / "supernet.pt", pdir, b, work / "search" / f"{role}-{i}")
            rows.append({"budget": i, "budget_ms": b, "role": role, "arch": best.arch.to_dict()})
        rows.append(
            {
                "budget": i,
                "budget_ms": b,
                "role": "random-moe",
                "arch": _random_moe(space, pred, q, b, c.seed + i).to_dict(),
            }
        )
    done.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _archs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """arch_id -> Arch, each distinct arch once (the same arch may win at two budgets)."""
    from moenas.arch import Arch

    out = {}
    for r in rows:
        a = Arch.from_dict(r["arch"])  # either family: Arch.from_dict reads the arch's family
        out.setdefault(a.arch_id, a)
    return out


def stage_finetune(c: BenchConfig, work: Path, rows: list[dict[str, Any]], log) -> None:
    """Each distinct arch trained standalone from its inherited weights, the same steps for all."""
    for aid, arch in _archs(rows).items():
        out = work / "finetune" / f"{aid}.pt"
        if out.exists() and read_checkpoint(out)["step"] >= c.finetune_steps:
            continue
        log(f"fine-tuning {aid} ({c.finetune_steps} steps from the supernet's weights)")
        _train_to(finetune_config(c, arch, work / "supernet.pt", c.finetune_steps), out, log)


def _quality(model, arch, meta, c: BenchConfig) -> dict[str, float]:
    """Validation loss on the family's fixed validation subset (search fitness's), and the
    family's quality metric: test BLEU (greedy) for translation, perplexity for a language model."""
    from moenas.search.checkpoint import checkpoint_corpus, load_tokenizer
    from moenas.search.evaluation import bleu_score, perplexity, validation_loss
    from moenas.search.fitness import FITNESS_FAMILIES

    corpus = checkpoint_corpus(meta)
    batches, _ = FITNESS_FAMILIES.for_family(arch.family).validation(meta, c.valid_sentences, corpus)
    loss = validation_loss(model, [arch], batches)[0]
    metric = {
        "bleu": lambda: bleu_score(model, arch, load_tokenizer(meta), corpus.test[: c.bleu_sentences]),
        "perplexity": lambda: perplexity(loss),
    }
    quality = bench_family(c).quality
    return {"val_loss": loss, quality: metric[quality]()}


def stage_quality(c: BenchConfig, work: Path, rows: list[dict[str, Any]], log) -> dict[str, dict[str, float]]:
    """Validation loss and test BLEU of every arch, inherited and fine-tuned (``quality.json``)."""
    from moenas.search.checkpoint import model_for_arch

    path = work / "quality.json"
    q = json.loads(path.read_text()) if path.exists() else {}
    m = bench_family(c).quality
    for aid, arch in _archs(rows).items():
        if aid in q:
            continue
        net, meta = model_for_arch(work / "supernet.pt", arch, family=arch.family)
        inh = _quality(net.eval(), arch, meta, c)
        model, fmeta = model_for_arch(work / "finetune" / f"{aid}.pt", arch, family=arch.family)
        fin = _quality(model.eval(), arch, fmeta, c)
        q[aid] = {
            "inherited_val_loss": inh["val_loss"],
            f"inherited_{m}": inh[m],
            "val_loss": fin["val_loss"],
            m: fin[m],
        }
        log(
            f"{aid}: inherited loss {inh['val_loss']:.3f} {m} {inh[m]:.1f}; fine-tuned {fin['val_loss']:.3f} {m} {fin[m]:.1f}"
        )
        path.write_text(json.dumps(q, indent=2) + "\n")
    return q


def stage_measure(c: BenchConfig, work: Path, rows: list[dict[str, Any]], log) -> dict[str, float]:
    """Every arch timed side by side, round-robin in one run (their ratios are fair); run it
    only on a quiet machine. ``measured.json``: arch_id -> median ms, plus the machine."""
    from moenas.arch.protocol import protocol_for
    from moenas.profiler.fingerprint import fingerprint
    from moenas.profiler.runner import measure_archs

    path = work / "measured.json"
    if path.exists():
        return json.loads(path.read_text())
    archs = _archs(rows)
    protocol = protocol_for(next(iter(archs.values())).family)
    log(f"timing {len(archs)} archs side by side (onnxruntime, 1 thread): keep the machine quiet")
    ms = measure_archs(list(archs.values()), threads_intra=1, protocol=protocol)
    fp = fingerprint("cpu")
    out = {
        "ms": {m["arch_id"]: float(m["total"]["median_ms"]) for m in ms},
        "ci_rel": {m["arch_id"]: m["total"].get("ci_rel") for m in ms},
        # each timed component's median (ms), from the same repetitions as the total
        "components": {m["arch_id"]: {k: float(m[k]["median_ms"]) for k in protocol.family.components} for m in ms},
        "protocol": protocol.to_dict(),
        "device": fp.get("cpu_model", "cpu"),
        "cores": fp.get("cpu_cores"),
    }
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


# ---- item 5: inherited vs fine-tuned rank agreement ------------------------------------------------
def _combo_ckpt(work: Path, combo: str) -> Path:
    return work / "supernet.pt" if combo == "slice/uniform" else work / f"supernet-{combo.replace('/', '-')}.pt"


def stage_rank_train(c: BenchConfig, work: Path, log, combos: Sequence[str] = tuple(RANK_COMBOS)) -> None:
    for combo in combos:
        k = RANK_COMBOS[combo]
        cfg = replace(
            supernet_config(c), supernet=k["supernet"], sampling=k["sampling"], steps=max(int(c.steps * k["share"]), 1)
        )
        cfg = replace(cfg, eval_every=max(cfg.steps // 10, 1))
        log(f"supernet {combo}: {cfg.steps} steps")
        _train_to(cfg, _combo_ckpt(work, combo), log)


def rank_archs(c: BenchConfig, work: Path, log) -> list:
    """``rank_archs`` archs spread evenly over the predicted latency range (quantiles of 2000
    samples), the same for every supernet (``rank_archs.json``)."""
    import numpy as np

    from moenas.arch import Arch, SearchSpace

    path = work / "rank_archs.json"
    if path.exists():
        return [Arch.from_dict(d) for d in json.loads(path.read_text())]
    pred, _ = _predictor(c, work, log)
    pool = SearchSpace.load(c.space).sample_n(2000, seed=c.seed + 77)
    lat = pred.predict(pool).mean
    order = np.argsort(lat)
    picks = [pool[int(order[int(round(q))])] for q in np.linspace(0, len(pool) - 1, c.rank_archs)]
    path.write_text(json.dumps([a.to_dict() for a in picks], indent=2) + "\n")
    return picks


def stage_rank_finetune(c: BenchConfig, work: Path, log, combos: Sequence[str] = tuple(RANK_COMBOS)) -> None:
    archs = rank_archs(c, work, log)
    for combo in combos:
        for a in archs:
            out = work / "rank" / combo.replace("/", "-") / f"{a.arch_id}.pt"
            _train_to(finetune_config(c, a, _combo_ckpt(work, combo), c.rank_finetune_steps), out, log)


def stage_rank_table(
    c: BenchConfig, work: Path, log, combos: Sequence[str] = tuple(RANK_COMBOS)
) -> list[dict[str, Any]]:
    """Kendall tau between inherited and fine-tuned BLEU (and loss) per supernet (``rank.json``
    caches every arch's four numbers). A combo whose fine-tuning is not finished yet is left
    out with a log line, so one setting's result can be read while the next one trains."""
    from scipy.stats import kendalltau

    from moenas.search.checkpoint import model_for_arch

    path = work / "rank.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    out = []
    for combo in combos:
        ft = [work / "rank" / combo.replace("/", "-") / f"{a.arch_id}.pt" for a in rank_archs(c, work, log)]
        if not _combo_ckpt(work, combo).exists() or not all(f.exists() for f in ft):
            log(f"{combo}: not fine-tuned yet (run rank-train, rank-finetune), left out")
            continue
        for a in rank_archs(c, work, log):
            key = f"{combo}:{a.arch_id}"
            if key not in cache:
                net, meta = model_for_arch(_combo_ckpt(work, combo), a)
                inh = _quality(net.eval(), a, meta, c)
                model, fmeta = model_for_arch(work / "rank" / combo.replace("/", "-") / f"{a.arch_id}.pt", a)
                fin = _quality(model.eval(), a, fmeta, c)
                cache[key] = {
                    "inherited_val_loss": inh["val_loss"],
                    "inherited_bleu": inh["bleu"],
                    "val_loss": fin["val_loss"],
                    "bleu": fin["bleu"],
                }
                path.write_text(json.dumps(cache, indent=2) + "\n")
        q = [cache[f"{combo}:{a.arch_id}"] for a in rank_archs(c, work, log)]
        tau_b = kendalltau([r["inherited_bleu"] for r in q], [r["bleu"] for r in q])[0]
        tau_l = kendalltau([r["inherited_val_loss"] for r in q], [r["val_loss"] for r in q])[0]
        out.append(
            {
                "combo": combo,
                "archs": len(q),
                "kendall_tau_bleu": round(float(tau_b), 4),
                "kendall_tau_loss": round(float(tau_l), 4),
                "mean_bleu_gain": round(sum(r["bleu"] - r["inherited_bleu"] for r in q) / len(q), 3),
            }
        )
        log(f"{combo}: tau(BLEU) {tau_b:.3f}, tau(loss) {tau_l:.3f} over {len(q)} archs")
    return out


ROLES = ("moe-winner", "dense-winner", "random-moe", "largest-dense")


def table_rows(c: BenchConfig, rows: list[dict[str, Any]], quality: dict, measured: dict) -> list[dict[str, Any]]:
    """One row per (budget, role): quality, measured latency, cost, and the Amdahl bound (the
    FFN share of the protocol's FLOPs: experts can save at most that share of the work)."""
    from moenas.arch import Arch
    from moenas.arch.cost import param_count, protocol_cost
    from moenas.arch.protocol import protocol_for
    from moenas.profiler.fingerprint import bench_environment

    env = {
        **bench_environment(packages=("onnxruntime", "tokenizers", "moenas")),
        "measured_on": measured.get("device"),
        "supernet_steps": c.steps,
        "finetune_steps": c.finetune_steps,
    }
    fam = bench_family(c)
    out = []
    for r in rows:
        a = Arch.from_dict(r["arch"])
        protocol = protocol_for(a.family)
        cost = protocol_cost(a, protocol)
        last = cost.components[a.family.components[-1]]  # the decoding component (decoder / decode)
        params = param_count(a)
        comps = (measured.get("components") or {}).get(a.arch_id, {})
        out.append(
            {
                "budget": r["budget"],
                "budget_ms_predicted": r["budget_ms"],  # in the budget quantity's unit
                "budget_quantity": f"{fam.budget.name} ({fam.budget.unit})",
                "role": r["role"],
                "arch_id": a.arch_id,
                "has_experts": not a.is_dense,  # the full space's winner may be dense (one expert per layer)
                **{k: round(v, 4) for k, v in quality[a.arch_id].items()},
                "measured_ms": round(measured["ms"][a.arch_id], 4),
                **{f"measured_{k}_ms": round(v, 4) for k, v in comps.items()},
                **_per_token(fam, comps, protocol),
                "ci_rel": measured["ci_rel"].get(a.arch_id),
                "mflops": round(cost.total_flops / 1e6, 2),
                "ffn_flop_share": round(cost.ffn_share, 4),
                "logits_share_of_decoder": round(last.flops_by_part.get("logits", 0.0) / last.flops, 4),
                "amdahl_max_speedup": round(1 / (1 - cost.ffn_share), 3),
                "params_total_m": round(params.total / 1e6, 3),
                "params_active_m": round(params.active / 1e6, 3),
                **env,
            }
        )
    return out


def _per_token(fam: BenchFamily, comps: dict[str, float], protocol) -> dict[str, float]:
    """The measured budget quantity when it is a per-step figure (decode ms per token), and the
    tokens/s it gives; nothing for a whole-inference budget (measured_ms already holds it)."""
    if fam.budget is LATENCY or fam.budget.component not in comps:
        return {}
    per = fam.budget.of(comps[fam.budget.component], protocol)
    return {fam.measured_column: round(per, 4), "tokens_per_s": round(tokens_per_s(per), 1)}


def comparisons(table: list[dict[str, Any]], fam: BenchFamily) -> list[dict[str, Any]]:
    """The targets: per budget, the MoE winner's quality minus the dense winner's; and for each
    dense arch, the ratio of its measured budget quantity (latency, or decode ms per token) to
    the fastest MoE winner's of at least its quality (at equal quality: BLEU at least as high,
    or perplexity at least as low)."""
    q, ms = fam.quality, fam.measured_column
    moe = [r for r in table if r["role"] == "moe-winner"]
    out = []
    for r in table:
        if r["role"] not in ("dense-winner", "largest-dense"):
            continue
        row = {"budget": r["budget"], "dense_role": r["role"], "dense_arch": r["arch_id"], f"dense_{q}": r[q]}
        same = next((m for m in moe if m["budget"] == r["budget"]), None)
        if same is not None:
            row[f"moe_minus_dense_{q}"] = round(same[q] - r[q], 2)
        at_least = [m for m in moe if fam.at_least_as_good(m[q], r[q])]
        if at_least:
            fast = min(at_least, key=lambda m: m[ms])
            row.update(
                {
                    "moe_arch": fast["arch_id"],
                    f"moe_{q}": fast[q],
                    f"latency_ratio_at_equal_{q}": round(r[ms] / fast[ms], 3),
                }
            )
        out.append(row)
    return out


def write_csv(table: list[dict[str, Any]], path: Path, fam: BenchFamily) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    comp = comparisons(table, fam)
    if comp:
        with path.with_name(path.stem + "_targets.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for row in comp for k in row}))
            w.writeheader()
            w.writerows(comp)


def write_rank_csv(rank: list[dict[str, Any]], path: Path) -> None:
    """Write the rank table, keeping the rows of settings this run did not compute (each setting
    is run in its own session, and a rerun of one must not lose the others' results)."""
    done = {r["combo"] for r in rank}
    kept = []
    if path.exists():
        with path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("combo") not in done]
    rows = kept + [{**r, "date": time.strftime("%Y-%m-%d")} for r in rank]
    order = {k: i for i, k in enumerate(RANK_COMBOS)}
    rows.sort(key=lambda r: order.get(r["combo"], len(order)))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rank[0], "date"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def print_summary(table: list[dict[str, Any]], fam: BenchFamily) -> None:
    cols = (
        "budget",
        "role",
        "arch_id",
        fam.quality,
        "val_loss",
        f"inherited_{fam.quality}",
        *dict.fromkeys(("measured_ms", fam.measured_column)),
        "mflops",
        "params_active_m",
        "params_total_m",
        "amdahl_max_speedup",
    )
    print("  ".join(f"{c:>14}" for c in cols))
    for r in table:
        print("  ".join(f"{'' if r.get(c) is None else r[c]!s:>14}" for c in cols))
    for row in comparisons(table, fam):
        print(json.dumps(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench_automoe"), help="stage results (resumable)")
    ap.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated, in order (default: {','.join(STAGES)})"
    )
    ap.add_argument("--space", default="tiny", choices=PRESETS, help="the space and its preset settings [tiny]")
    ap.add_argument(
        "--out", type=Path, default=None, help="[benchmarks/results/bench_automoe.csv; lm-tiny: ..._lm.csv]"
    )
    ap.add_argument(
        "--combos",
        default=",".join(RANK_COMBOS),
        help="supernet settings of the rank stages, comma-separated, in order (default: all)",
    )
    for f in (
        "steps",
        "finetune_steps",
        "valid_sentences",
        "bleu_sentences",
        "iterations",
        "population",
        "parents",
        "mutations",
        "crossovers",
        "rank_archs",
        "rank_finetune_steps",
        "threads",
    ):
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=None)
    args = ap.parse_args(argv)
    c = replace(
        BenchConfig(**PRESETS[args.space]),
        **{k: v for k, v in vars(args).items() if k in BenchConfig.__dataclass_fields__ and v is not None},
    )
    if args.out is None:
        args.out = RESULTS / (
            "bench_automoe.csv" if args.space == "tiny" else f"bench_automoe_{args.space.replace('-', '_')}.csv"
        )
    stages = args.stages.split(",")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        print(
            f"bench_automoe: error: unknown stage(s) {', '.join(bad)} (choose from {', '.join(STAGES)})",
            file=sys.stderr,
        )
        return 2
    combos = args.combos.split(",")
    if bad := [k for k in combos if k not in RANK_COMBOS]:
        print(
            f"bench_automoe: error: unknown combo(s) {', '.join(bad)} (choose from {', '.join(RANK_COMBOS)})",
            file=sys.stderr,
        )
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    cfg_file = args.work / "config.json"
    now = json.loads(json.dumps(asdict(c)))
    was = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    differ = sorted(k for k in was if was[k] != now.get(k))  # settings added since are not a change
    if differ:
        print(
            f"bench_automoe: error: {cfg_file} was run with other {', '.join(differ)}; use another --work",
            file=sys.stderr,
        )
        return 2
    cfg_file.write_text(json.dumps(asdict(c), indent=2) + "\n")
    torch.set_num_threads(c.threads)
    log = lambda m: print(f"[bench_automoe] {m}", file=sys.stderr, flush=True)  # noqa: E731
    if "train" in stages:
        stage_train(c, args.work, log)
    item4 = {"search", "finetune", "quality", "measure", "table"} & set(stages)
    rows = (stage_search(c, args.work, log) if "search" in stages else _read(args.work / "archs.json")) if item4 else []
    if "finetune" in stages:
        stage_finetune(c, args.work, rows, log)
    if "quality" in stages:
        stage_quality(c, args.work, rows, log)
    if "measure" in stages:
        stage_measure(c, args.work, rows, log)
    if "rank-train" in stages:
        stage_rank_train(c, args.work, log, combos)
    if "rank-finetune" in stages:
        stage_rank_finetune(c, args.work, log, combos)
    if "rank-table" in stages:
        rank = stage_rank_table(c, args.work, log, combos)
        if not rank:
            print(
                "bench_automoe: error: no supernet setting is fine-tuned yet: run rank-train, rank-finetune",
                file=sys.stderr,
            )
            return 2
        write_rank_csv(rank, args.out.with_name(args.out.stem + "_rank.csv"))
    if "table" in stages:
        out = table_rows(c, rows, _read(args.work / "quality.json"), _read(args.work / "measured.json"))
        write_csv(out, args.out, bench_family(c))
        print_summary(out, bench_family(c))
    return 0


def _read(path: Path):
    if not path.exists():
        raise SystemExit(f"bench_automoe: error: {path} is missing: run the earlier stages first")
    return json.loads(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
