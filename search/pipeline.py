"""The end-to-end job behind `moenas demo`: latency -> supernet -> search -> quality -> deployable model.

Either model family: a translation space (``--scale tiny``, ``wmt``) or a decoder-only language
model (``--scale lm-tiny``, or ``--space lm-tiny``). What differs per family (the budgeted
latency quantity and so the predictor's target, the quality figures, what the exported model
is tried on, the report's wording) is one :class:`~.demo_family.DemoFamily` each.

Stages (each writes into one folder and is skipped when its output is already there, so a
re-run continues where an interrupted one stopped; each is also a subcommand of its own):

1. latency on this machine. Default (transfer): a predictor fitted on the shipped dataset of
   this space (measured on another machine of this kind) is adapted to this machine from
   ``transfer_n`` archs profiled here, and checked on ``transfer_holdout`` more (HELP/nn-Meter's
   few-shot path; a shipped predictor is never trusted as is: two machines of one kind differ
   by ~20%). ``from_scratch``: profile ``profile_n`` archs and fit on them alone.
2. the supernet, trained with the settings measured to translate within the budget
   (benchmarks/bench_demo_training.py; a language model: search/README.md's recipe); its largest
   and smallest archs' BLEU on the test split (a language model: validation perplexity).
3. evolutionary search under the latency budget (a language model: decode ms per token), and
   the same search over the space's dense variant (one expert per layer); the finalists of both
   measured side by side, the deployable arch chosen by measurement (search/final_selection.py),
   BLEU and translations (perplexity and continuations) of the picks.
4. the chosen arch exported with its weights; onnxruntime translates one test sentence (a
   language model: continues a few test-split prompts, timing its prefill and decode steps).

The verdict answers AutoMoE's question on this machine: at this budget, is the searched MoE arch
better or faster than the best dense arch, beyond the noise of both measurements?
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from moenas.arch import SearchSpace, UserError
from moenas.arch.checks import check_range

from .budgets import ALL_QUANTITIES, protocol_of
from .demo_family import DEMO_FAMILIES, DemoFamily, budget_text
from .evolution import Candidate, EvolutionConfig

if TYPE_CHECKING:
    from .train_config import TrainConfig

SCALES = {
    # tiny: ~15 minutes on a 2-core CPU; training settings measured by benchmarks/bench_demo_training.py
    # (recipe u2k-3e3-cos-d0, its steps sized to ~9 minutes at the 2.46 steps/s of bench_training.py).
    # wmt: paper scale (HAT's training settings), hours to days; needs a real corpus.
    # transfer 14 + 6 held out: jackknife+ intervals covered 95% at 13 transfer archs, MAPE 3.3%
    # (benchmarks/bench_transfer_coverage.py), and 10 fewer archs save ~1/3 of the profile stage.
    # drift 10% and 1 timed second per measurement: on the 2-vCPU VMs this demo targets the reference
    # wanders +-20% within a minute; at 5% half the archs stayed flagged after their re-measurements,
    # and the default stop rule's 200 runs per arch (5 s) buy precision that the wander swamps.
    # largest arch every 8th step: at 1350 steps the largest arch's test BLEU 11.6 (uniform: 10.3)
    # and a loss spread of 0.63 nats (uniform: 0.49), for ~8% more training compute (docs/RESULTS.md).
    "tiny": dict(
        space="tiny",
        corpus="default",
        profile_n=60,
        transfer_n=14,
        transfer_holdout=6,
        drift_threshold=0.10,
        profile_seconds=1.0,
        train_steps=1350,
        train_largest_every=8,
        train_max_tokens=2048,
        train_lr=3e-3,
        train_warmup=100,
        train_schedule="cosine",
        train_dropout=0.0,
        population=40,
        parents=10,
        mutations=15,
        crossovers=15,
        iterations=8,
        dense_iterations=4,
        valid_sentences=200,
    ),
    "wmt": dict(
        space="automoe-wmt",
        corpus=None,
        profile_n=2000,
        transfer_n=40,
        transfer_holdout=20,
        train_steps=40000,
        train_max_tokens=4096,
        train_lr=1e-3,
        train_warmup=4000,
        train_schedule="inverse_sqrt",
        train_dropout=0.1,
        population=125,
        parents=25,
        mutations=50,
        crossovers=50,
        iterations=30,
        valid_sentences=1000,
    ),
}
# lm-tiny: a decoder-only MoE language model, ~15 minutes on a 2-core CPU: tiny's measurement and
# search sizes, with the training recipe of search/README.md "Language-model supernets" (350
# sandwich steps, ~6 min: perplexity 242.5 largest vs 342.0 smallest) and validation on all 60
# blocks (one fitness evaluation ~0.3-1 s on one core).
SCALES["lm-tiny"] = {
    **SCALES["tiny"],
    "out": Path("runs/demo-lm"),  # beside the translation demo's runs/demo
    "space": "lm-tiny",
    "train_steps": 350,
    "train_largest_every": 0,
    "train_lr": 2e-3,
    "sampling": "sandwich",
    "train_sandwich_random": 1,
    "valid_sentences": 60,
}


def scale_for(scale: str | None, space: str | None) -> str:
    """The demo preset (a key of SCALES) that ``--scale`` and ``--space`` name: the scale given,
    else the one whose preset runs ``space``, else tiny. One UserError line for a space with no
    preset, or a scale whose preset runs another space."""
    if space is None:
        return scale or "tiny"
    presets = [name for name, preset in SCALES.items() if preset["space"] == space]
    if not presets:
        have = ", ".join(f"{p['space']} (--scale {name})" for name, p in SCALES.items())
        raise UserError(f"--space {space}: no demo preset runs it (the presets' spaces: {have})")
    if scale is None:
        return presets[0]
    if scale not in presets:
        raise UserError(f"--scale {scale} and --space {space} disagree: --scale {presets[0]} is the demo of {space}")
    return scale


@dataclass
class DemoConfig:
    """Every setting of the demo; :meth:`for_scale` fills the scale's sizes, any given override wins."""

    out: Path = Path("runs/demo")
    scale: str = "tiny"
    space: str = "tiny"
    corpus: str | None = "default"
    from_scratch: bool = False  # profile profile_n archs and fit on them instead of transferring
    profile_n: int = 60
    transfer_n: int = 14  # archs measured here to adapt the shipped predictor
    transfer_holdout: int = 6  # more archs measured here to check it
    profile_seconds: float | None = None  # cap on timed seconds per arch (None or 0: the profiler's rule)
    drift_threshold: float = 0.05  # reference-check deviation that flags and re-measures rows
    reuse_profiles: bool = False  # fit on the shipped dataset as is (no measurement on this machine)
    train_steps: int = 1350
    train_max_tokens: int = 2048
    train_lr: float = 3e-3
    train_warmup: int = 100
    train_schedule: str = "cosine"
    train_dropout: float = 0.0  # the measured recipe's (benchmarks/bench_demo_training.py); ~6 epochs: underfit
    train_largest_every: int = 0  # uniform: every N-th step trains the largest arch (0: never)
    train_sandwich_random: int = 2  # sandwich: random archs per step beside the largest and smallest
    supernet: str = "slice"
    sampling: str = "uniform"
    # The budget: on the family's quantity (DemoFamily.quantity: its option names the field);
    # None: the median measured figure of the profiled archs
    max_latency_ms: float | None = None  # translation: the whole inference's latency
    max_decode_ms_per_token: float | None = None  # a language model: decode ms per generated token
    confidence: float = 0.9
    population: int = 40
    parents: int = 10
    mutations: int = 15
    crossovers: int = 15
    iterations: int = 8
    dense_iterations: int | None = None  # the dense baseline's search (None: as many as the search's)
    final_k: int = 4  # finalists per family measured (plus those tied within noise): see SearchJob
    dense_baseline: bool = True  # also search the dense variant of the space and compare
    valid_sentences: int = 200
    bleu_sentences: int = 200
    search_workers: int = 0  # fitness processes; 0 = one per core (the search is not timed)
    predictor_model: str = "auto"
    seed: int = 0
    threads: int = 1

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> "DemoConfig":
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise UserError(f"unknown demo setting(s): {', '.join(sorted(bad))}")
        cfg = cls(scale=scale, **SCALES[scale])
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.sampling != "uniform" and cfg.train_largest_every:
            if overrides.get("train_largest_every"):
                raise UserError(
                    f"--train-largest-every applies to uniform sampling only ({cfg.sampling} "
                    "sampling trains the largest arch every step)"
                )
            cfg = replace(cfg, train_largest_every=0)  # the scale's preset is a uniform-sampling rule
        if cfg.corpus is None:
            raise UserError(
                "--scale wmt needs --corpus DIR (train/valid/test .en/.de files): the embedded corpus is tiny-scale only"
            )
        cfg.check()
        return cfg

    @property
    def kind(self) -> DemoFamily:
        """The demo of the space's model family (demo_family.py)."""
        return DEMO_FAMILIES.for_family(SearchSpace.load(self.space).family)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready values (paths as strings): the demo summary's ``config``."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def quick_rule(self, max_runs: int = 200):
        """The profiler's stop rule for ``--profile-seconds`` (a quick look: fewer, shorter timings
        per arch; the noise floor says what it costs), or None for the profiler's default."""
        if not self.profile_seconds:
            return None
        from moenas.profiler.stats import StopRule

        return StopRule(warmup=2, min_runs=5, max_runs=max_runs, max_seconds=self.profile_seconds)

    def check(self) -> None:
        """Every count, size and threshold in range before any work starts (one line for the first
        violation). The predictor's inputs then need a few archs more: transferring needs 3, fitting
        from scratch 8 (to fit and hold out)."""
        lows = {
            "profile_n": 1,
            "transfer_n": 1,
            "train_max_tokens": 8,
            "population": 1,
            "parents": 1,
            "valid_sentences": 1,
            "final_k": 1,
            "threads": 1,
            "search_workers": 0,
            "train_steps": 0,
            "iterations": 0,
            "train_largest_every": 0,
            "train_sandwich_random": 0,
            "mutations": 0,
            "crossovers": 0,
            "bleu_sentences": 0,
            "transfer_holdout": 0,
            "train_warmup": 0,
            "seed": 0,
        }
        for name, low in lows.items():
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low, integer=True)
        name, low = ("profile_n", 8) if self.from_scratch else ("transfer_n", 3)
        check_range(f"--{name.replace('_', '-')}", getattr(self, name), low)
        check_range("--profile-seconds", self.profile_seconds, 0)  # 0 = the profiler's own stop rule
        check_range("--dense-iterations", self.dense_iterations, 0, integer=True)
        for name in ("drift_threshold", "train_lr", "max_latency_ms", "max_decode_ms_per_token"):
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), 0, low_open=True)
        check_range("--train-dropout", self.train_dropout, 0, 1, high_open=True)
        from .train_data import check_corpus_for

        space = SearchSpace.load(self.space)
        self.check_budget()
        check_corpus_for(space.family, self.corpus)  # an unknown --corpus before any profiling
        measured = self.profile_n if self.from_scratch else self.transfer_n + self.transfer_holdout
        space.check_sample_count(measured)  # an --n that would sample for ever

    def check_budget(self) -> None:
        """One UserError line for a budget on a quantity the family's demo does not budget (its
        one predictor is fitted to the family's quantity alone)."""
        kind = self.kind
        for q in ALL_QUANTITIES:
            if getattr(self, q.option, None) is not None and q != kind.quantity:
                raise UserError(
                    f"{q.flag}: the demo of space {self.space!r} budgets its {kind.quantity.label} "
                    f"({kind.quantity.flag})"
                )


@dataclass
class Demo:
    cfg: DemoConfig
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.load(self.cfg.space)

    @property
    def kind(self) -> DemoFamily:
        """What this demo does as its space's family does (demo_family.py)."""
        return self.cfg.kind

    def path(self, name: str) -> Path:
        return self.cfg.out / name

    def _stage(self, name: str, fn: Callable[[], Any]) -> Any:
        self.log(f"\n== {name} ==")
        t = time.perf_counter()
        out = fn()
        self.timings[name.split(" ", 1)[1]] = round(time.perf_counter() - t, 1)
        return out

    # ---- 1. latency on this machine -------------------------------------------------------------
    def latency(self):
        from .demo_latency import fit_from_scratch, reuse_shipped, transfer_to_this_machine

        if self.cfg.reuse_profiles:
            return reuse_shipped(self)
        if self.cfg.from_scratch:
            return fit_from_scratch(self)
        return transfer_to_this_machine(self)

    # ---- 2. supernet --------------------------------------------------------------------------
    def train_config(self) -> "TrainConfig":
        """The supernet's TrainConfig; :meth:`train_command` is the `moenas train` line for it."""
        from .train_config import TrainConfig

        c = self.cfg
        return TrainConfig(
            space=c.space,
            corpus=c.corpus,
            steps=c.train_steps,
            supernet=c.supernet,
            sampling=c.sampling,
            seed=c.seed,
            valid_sentences=c.valid_sentences,
            max_tokens=c.train_max_tokens,
            lr=c.train_lr,
            warmup=c.train_warmup,
            schedule=c.train_schedule,
            dropout=c.train_dropout,
            bleu_sentences=0,
            largest_every=c.train_largest_every,
            sandwich_random=c.train_sandwich_random,
        )

    def train_command(self) -> str:
        """The `moenas train` command that trains exactly :meth:`train_config` (tested)."""
        t = self.train_config()
        return (
            f"moenas train --space {t.space} --corpus {t.corpus} --steps {t.steps} --supernet {t.supernet} "
            f"--sampling {t.sampling} --sandwich-random {t.sandwich_random} --largest-every {t.largest_every} "
            f"--max-tokens {t.max_tokens} --lr {t.lr} --warmup {t.warmup} --schedule {t.schedule} "
            f"--dropout {t.dropout} --seed {t.seed} --valid-sentences {t.valid_sentences} --bleu-sentences {t.bleu_sentences} "
            f"--out {self.path('supernet.pt')}"
        )

    def train(self) -> Path:
        import torch

        from .checkpoint import read_checkpoint
        from .trainer import train

        c = self.cfg
        ckpt = self.path("supernet.pt")
        tcfg = self.train_config()
        self.facts["train_command"] = self.train_command()
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)  # training is not timed: use every core
        try:
            if ckpt.exists() and read_checkpoint(ckpt).get("step", 0) >= c.train_steps:
                self.log(f"reusing {ckpt} (trained {read_checkpoint(ckpt).get('step')} steps)")
            else:
                meta = train(tcfg, ckpt, resume=ckpt.exists(), log=self.log)
                self.facts["train_tokens_per_s"] = meta.get("tokens_per_s")
        finally:
            torch.set_num_threads(threads)
        return ckpt

    def supernet_quality(self, ckpt: Path) -> None:
        """Validation loss and the family's figures (test BLEU, or perplexity) of the space's
        largest and smallest archs."""
        from .fitness import SupernetFitness

        fit = SupernetFitness(str(ckpt), self.cfg.valid_sentences)
        sp, kind = self.space, self.kind
        rows = {}
        for name, arch in (("largest", sp.largest()), ("smallest", sp.smallest())):
            q = fit.quality(arch, self.cfg.bleu_sentences, samples=0)
            rows[name] = {"arch_id": arch.arch_id, "val_loss": q["val_loss"], **{k: q[k] for k in kind.quality_keys}}
            self.log(
                f"supernet {name} arch {arch.arch_id}: validation loss {q['val_loss']:.3f}, {kind.figures(rows[name])}"
            )
        self.facts["supernet"] = rows

    # ---- 3. search + re-measure ------------------------------------------------------------------
    def search(self, ckpt: Path, budget: float):
        """The search under ``budget`` on the family's quantity (ms, or ms per token)."""
        from .search_job import SearchJob

        cfg, q = self.cfg, self.kind.quantity
        econf = EvolutionConfig(
            population=cfg.population,
            parents=cfg.parents,
            mutations=cfg.mutations,
            crossovers=cfg.crossovers,
            iterations=cfg.iterations,
            seed=cfg.seed,
        )
        out = self.path("search")
        job = SearchJob(
            space=self.space,
            supernet=str(ckpt),
            predictor_path=str(self.path("predictor")),
            out=out,
            config=econf,
            **{q.option: budget},
            confidence=cfg.confidence,
            valid_sentences=cfg.valid_sentences,
            bleu_sentences=cfg.bleu_sentences,
            final_k=cfg.final_k,
            dense_baseline=cfg.dense_baseline,
            dense_iterations=cfg.dense_iterations,
            rule=cfg.quick_rule(),
            threads=cfg.threads,
            resume=(out / "search_state.json").exists(),
            overwrite=True,
            random_baseline=True,
            workers=cfg.search_workers or os.cpu_count() or 1,
        )
        dense = f"--dense-iterations {job.dense_iterations_run}" if job.runs_dense else "--no-dense"
        self.facts["search_command"] = (
            f"moenas search --space {cfg.space} --supernet {ckpt} --predictor {self.path('predictor')} "
            f"{q.flag} {budget:.4g} --confidence {cfg.confidence} --population {cfg.population} "
            f"--parents {cfg.parents} --mutations {cfg.mutations} --crossovers {cfg.crossovers} "
            f"--iterations {cfg.iterations} --final-k {cfg.final_k} {dense} --seed {cfg.seed} "
            f"--workers {job.workers} --random-baseline --out {out}"
        )
        report, paths = job.run()
        return job, report, paths

    def default_budget(self, pred, median_ms: float) -> float:
        """The median measured figure of the budgeted quantity (``median_ms``: of its component,
        the predictor's target), raised when needed so that the smallest arch's predicted upper
        bound fits (a budget nothing can meet would only demo an error); in the quantity's unit."""
        q, protocol = self.kind.quantity, protocol_of(pred)
        upper = float(pred.predict([self.space.smallest()], confidence=self.cfg.confidence).upper[0])
        median, floor = q.of(median_ms, protocol), q.of(upper, protocol)
        budget = float(f"{max(median, 1.1 * floor):.4g}")
        if 1.1 * floor > median:
            self.log(
                f"budget raised from the median measured {q.label} {median:.3g} {q.unit} to {budget:.3g} {q.unit}: "
                f"the smallest arch's {self.cfg.confidence:.0%} upper bound is {floor:.3g} {q.unit}"
            )
        return budget

    # ---- 4. the deployable model --------------------------------------------------------------------
    def deploy(self, ckpt: Path, best: Candidate, protocol) -> dict[str, Any]:
        """Export the chosen arch with its inherited weights (and the latency protocol it was
        timed under) and try the export on the test split as its family does (one sentence
        translated, or a few prompts continued) with onnxruntime."""
        from .deploy import export_trained

        model_dir = self.path("model")
        export_trained(best.arch, ckpt, model_dir, overwrite=True, protocol=protocol)
        return {"model_dir": str(model_dir), **self.kind.try_export(self, ckpt, model_dir, protocol)}

    # ---- driver ---------------------------------------------------------------------------------
    def check_out(self) -> None:
        """UserError before any work when --out holds, at a name the demo writes, a file or
        folder the demo did not write (``--out .`` in a project with its own README.md)."""
        from moenas.arch.files import check_replaceable, json_dict
        from moenas.data.profiles import check_sidecar
        from moenas.predictor.persist import check_out as check_predictor_dir
        from moenas.profiler.onnx_export import check_export_dir

        from .checkpoint import check_meta_replaceable
        from .search_job import check_search_files

        def first_line(p: Path) -> str:
            try:
                return p.read_text(encoding="utf-8").split("\n", 1)[0]
            except (OSError, UnicodeDecodeError):
                return ""

        check_replaceable(
            self.path("README.md"), lambda p: first_line(p) == "# moenas demo report", "a moenas demo report"
        )
        check_replaceable(
            self.path("demo.json"), lambda p: {"config", "facts"} <= set(json_dict(p) or {}), "a moenas demo summary"
        )
        for name in ("predictor", "base_predictor"):
            check_predictor_dir(self.path(name), overwrite=True)
        check_export_dir(self.path("model"), overwrite=True)
        check_search_files(self.path("search"))
        check_sidecar(self.path("profiles.parquet"))
        check_meta_replaceable(self.path("supernet.pt"))
        self.check_same_space()

    def check_same_space(self) -> None:
        """UserError when --out holds the stages of a demo of another space (`moenas demo` then
        `moenas demo --space lm-tiny` in one folder): this demo would reuse them."""
        from moenas.arch.files import json_dict

        found = {
            "demo.json": (json_dict(self.path("demo.json")) or {}).get("config") or {},
            "supernet.pt.json": json_dict(self.path("supernet.pt.json")) or {},
            "predictor/predictor.json": json_dict(self.path("predictor") / "predictor.json") or {},
        }
        for name, d in found.items():
            other = d.get("space")
            if other is not None and other != self.cfg.space:
                raise UserError(
                    f"{self.cfg.out} holds a demo of space {other!r} ({name}), whose stages the demo of "
                    f"{self.cfg.space!r} would reuse: choose another --out"
                )

    def run(self) -> dict[str, Any]:
        """The whole demo under the --out folder's lock (one demo per folder at a time)."""
        from moenas.arch.files import output_lock

        with output_lock(self.cfg.out, "demo folder"):
            self.check_out()
            return self._run()

    def _run(self) -> dict[str, Any]:
        from .demo_report import markdown, summary

        cfg, kind = self.cfg, self.kind
        cfg.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        pred, median_ms = self._stage("1/5 latency predictor for this machine", self.latency)
        protocol = protocol_of(pred)
        self.facts["protocol"] = protocol.to_dict()
        ckpt = self._stage("2/5 train the supernet", self.train)
        self._stage("3/5 supernet quality (largest and smallest arch)", lambda: self.supernet_quality(ckpt))
        budget = getattr(cfg, kind.quantity.option) or self.default_budget(pred, median_ms)
        self.facts["budget_ms"] = budget  # in the unit of the family's quantity (ms, or ms per token)
        job, report, paths = self._stage(
            f"4/5 search under {budget_text(kind.quantity, budget)} (and its dense variant); finalists measured",
            lambda: self.search(ckpt, budget),
        )
        if report.answer is not None:
            self.facts["deploy"] = self._stage(
                f"5/5 export the chosen arch with its weights; {kind.deploy_verb}",
                lambda: self.deploy(ckpt, report.answer, protocol),
            )
        self.timings["total"] = round(time.perf_counter() - t0, 1)
        s = summary(self, report)
        self.path("demo.json").write_text(json.dumps(s, indent=2, default=str) + "\n")
        self.path("README.md").write_text(markdown(self, s))
        return s
