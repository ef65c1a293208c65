"""One search job end to end: inputs checked, evolution run (the space and its dense variant),
finalists measured and the deployable arch chosen, report written.

Shared by `moenas search` and the demo pipeline, so both do exactly the same thing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from moenas.arch import SearchSpace, UserError
from moenas.arch.checks import check_range
from moenas.arch.files import atomic_write_text, check_replaceable, json_dict, output_lock

from .budgets import ALL_QUANTITIES, PredictorSet, check_family_budgets, protocol_of
from .constraints import ConstraintSet, FlopsConstraint, LatencyConstraint, ParamsConstraint
from .evolution import Candidate, Evolution, EvolutionConfig, SearchResult, random_search
from .final_selection import Finalist, FinalSelection, decide, largest, pool
from .fitness import FITNESS_FAMILIES, SupernetFitness
from .fitness_runners import RUNNERS, CachedFitness, InProcessRunner, ProcessPoolRunner, Runner
from .report import SearchReport, Verification
from .verify import verify

STATE_FILE = "search_state.json"
DENSE_STATE_FILE = "dense_state.json"  # the dense baseline's evolution (resumable like the search's)
FINAL_STATE_FILE = "final_state.json"  # the finalists' measurements (a resume does not time them again)
# every file a search writes into --out; none is replaced unless the folder is a search's
OUTPUT_FILES = (
    STATE_FILE,
    DENSE_STATE_FILE,
    FINAL_STATE_FILE,
    "best_arch.json",
    "pareto.csv",
    "history.csv",
    "evaluated.csv",
    "dense_evaluated.csv",
    "finalists.csv",
    "report.md",
    "report.json",
    "pareto.png",
)


@dataclass
class SearchJob:
    """One search (see the module docstring). Latency budgets: ``max_latency_ms`` (the whole
    inference), and for a decoder-only language model ``max_prefill_ms`` (the prompt's prefill)
    and ``max_decode_ms_per_token`` (the decode time / the protocol's decode steps); each needs
    a predictor of its target among ``predictor_path`` (one path, or one per target), the first
    budget given being the primary one (budgets.ALL_QUANTITIES has the order)."""

    space: SearchSpace
    supernet: str
    predictor_path: str | Sequence[str]  # one predictor directory, or one per target (all of one protocol)
    out: Path
    config: EvolutionConfig
    max_latency_ms: float | None = None
    max_gflops: float | None = None
    max_params: float | None = None
    max_prefill_ms: float | None = None  # decoder-only: the prompt's prefill (ms)
    max_decode_ms_per_token: float | None = None  # decoder-only: decode ms per generated token
    max_active_params: float | None = None  # parameters one token passes through (top-k experts)
    confidence: float = 0.9
    valid_sentences: int | None = None
    fitness: str = "loss"  # or "bleu" (the candidates' loss column then holds -BLEU)
    bleu_sentences: int = 200  # test-split sentences for the winners' BLEU; 0 = none
    workers: int = 1
    runner: str = "auto"  # RUNNERS: auto (in-process for 1 worker, else processes), process, ray
    ray_address: str | None = None  # --runner ray: a running cluster (None: a local one of `workers` CPUs)
    random_baseline: bool = False
    measure: bool = True  # time the finalists on this device (False: choose by prediction, unverified)
    # per family, the k best by fitness are measured (plus up to 2k ties within noise); with 4 the
    # demo's search stage took 118-146 s, against 89 s for the search alone on another host
    # (benchmarks/bench_demo.py times it)
    final_k: int = 4
    dense_baseline: bool = True  # also search the dense variant of the space under the same budget
    dense_iterations: int | None = None  # the dense search's iterations (None: the same as the search's)
    largest_k: int = 2  # the dense archs of most FLOPs measured for "the largest dense that fits"
    rule: Any = None  # the profiler's StopRule for the final measurement (None: its default)
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 1
    resume: bool = False
    overwrite: bool = False
    show_progress: bool = True
    notices: list[str] = field(default_factory=list)  # stderr lines shown once the first iteration ran
    _predictors: PredictorSet | None = field(default=None, init=False, repr=False)
    _latency_checks: list[LatencyConstraint] | None = field(default=None, init=False, repr=False)
    evaluator: Any = field(default=None, init=False, repr=False)  # the SupernetFitness, once run() loaded it

    # ---- inputs ----------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        if not Path(self.supernet).is_file():
            raise UserError(f"{self.supernet}: no such supernet checkpoint")
        for path in self.predictor_paths:
            if not Path(path).exists():
                raise UserError(f"{path}: no such predictor")
        for name, v in (
            *((q.flag, getattr(self, q.option)) for q in ALL_QUANTITIES),
            ("--max-gflops", self.max_gflops),
            ("--max-params", self.max_params),
            ("--max-active-params", self.max_active_params),
        ):
            if v is not None and v <= 0:
                raise UserError(f"{name} must be > 0, got {v}")
        check_family_budgets(
            self.space.family, self.space.name, {q.option: getattr(self, q.option) for q in ALL_QUANTITIES}
        )
        FITNESS_FAMILIES.for_family(self.space.family).check_metric(self.fitness, f"space {self.space.name!r}")
        if self.bleu_sentences < 0:
            raise UserError(f"--bleu-sentences must be >= 0, got {self.bleu_sentences}")
        if self.valid_sentences is not None and self.valid_sentences < 1:
            raise UserError(f"--valid-sentences must be >= 1, got {self.valid_sentences}")
        check_range("--final-k", self.final_k, 1, integer=True)
        check_range("--dense-iterations", self.dense_iterations, 0, integer=True)
        if not 0 <= self.confidence < 1:
            raise UserError(f"--confidence must be in [0, 1), got {self.confidence}")
        self.check_runner()
        done = self.out / "report.json"
        if done.exists() and not (self.resume or self.overwrite):
            raise UserError(
                f"{self.out} already holds a search report; pass --resume or --overwrite, or choose a new --out"
            )
        if (self.out / STATE_FILE).exists() and not (self.resume or self.overwrite):
            raise UserError(f"{self.out} holds an unfinished search; pass --resume to continue it or --overwrite")
        check_search_files(self.out)
        if len(self.predictor_paths) > 1 or self.latency_constraints():
            self.predictors.check()  # a latency budget's predictor, or several: refused now, before any work

    @property
    def predictor_paths(self) -> list[str]:
        """--predictor as a list (one path or several)."""
        paths = self.predictor_path
        return [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]

    @property
    def predictors(self) -> PredictorSet:
        """The predictors, by target (loaded on first use)."""
        if self._predictors is None:
            self._predictors = PredictorSet(self.predictor_paths, self.space.name)
        return self._predictors

    @property
    def predictor(self):
        """The primary predictor: of the total latency, else the first given."""
        return self.predictors.primary

    def latency_constraints(self) -> list[LatencyConstraint]:
        """One constraint per latency budget given, in budgets.ALL_QUANTITIES order, each on the
        predictor of its target (a budget without one is one UserError line)."""
        if self._latency_checks is None:
            given = [q for q in ALL_QUANTITIES if getattr(self, q.option) is not None]
            ps = self.predictors
            self._latency_checks = [
                q.constraint(ps.for_quantity(q), getattr(self, q.option), self.confidence or None, ps.protocol)
                for q in given
            ]
        return self._latency_checks

    def primary_latency(self) -> LatencyConstraint:
        """The first latency budget; with none, the primary predictor's latency (no budget):
        what candidates carry as their latency, the report's ms column and the plot show."""
        checks = self.latency_constraints()
        return checks[0] if checks else self.predictors.unbudgeted(self.space.family, self.confidence or None)

    def constraints(self) -> ConstraintSet:
        cons: list[Any] = list(self.latency_constraints())
        if self.max_gflops is not None:
            cons.append(FlopsConstraint(self.max_gflops, protocol_of(self.predictor)))
        if self.max_params is not None:
            cons.append(ParamsConstraint(self.max_params))
        if self.max_active_params is not None:
            cons.append(ParamsConstraint(self.max_active_params, active=True))
        return ConstraintSet(cons)

    def settings(self) -> dict[str, Any]:
        primary = self.primary_latency()
        return {
            "space": self.space.name,
            "family": self.space.family.name,
            "supernet": str(self.supernet),
            "predictor": ", ".join(self.predictor_paths),
            "predictors": self.predictors.describe(),
            "protocol": protocol_of(self.predictor).to_dict(),
            **{q.option: getattr(self, q.option) for q in ALL_QUANTITIES},
            "primary_budget": {"name": primary.name, "budget": primary.max_ms, "unit": primary.unit},
            "max_gflops": self.max_gflops,
            "max_params": self.max_params,
            "max_active_params": self.max_active_params,
            "confidence": self.confidence,
            "fitness": "validation loss" if self.fitness == "loss" else "-BLEU (validation)",
            **asdict(self.config),
            "objectives": ",".join(self.config.objectives),
            "predictor_device": self.predictor.metadata.get("device"),
            "remeasure_backend": self.backend,
            "remeasure_device": self.device,
            "threads": self.threads,
            "quality_beam": self.quality_beam,
            "measure": self.measure,
            "final_k": self.final_k,
            "dense_baseline": self.runs_dense,
            "dense_iterations": self.dense_iterations_run,
        }

    @property
    def runs_dense(self) -> bool:
        """Whether the dense baseline is searched (asked for, and the space is not dense already)."""
        return self.dense_baseline and not self.space.is_dense

    @property
    def dense_iterations_run(self) -> int:
        """The dense baseline's iterations (the search's when not set)."""
        return self.config.iterations if self.dense_iterations is None else self.dense_iterations

    # ---- run -----------------------------------------------------------------------------------
    def _latency(self, archs):
        """Candidates' latency: the primary budget's predicted mean, in its unit."""
        return self.primary_latency().mean(archs)

    def run(self) -> tuple[SearchReport, dict[str, Path]]:
        """The whole job under the --out folder's lock (one search writes a folder at a time).
        Nothing in --out changes before the first evolution state is saved: a job refused on
        the way (bad input, an impossible budget) leaves an earlier search as it was."""
        with output_lock(self.out, "search folder"):
            return self._run()

    def _run(self) -> tuple[SearchReport, dict[str, Path]]:
        self.check_inputs()
        fitness = SupernetFitness(self.supernet, self.valid_sentences, metric=self.fitness)
        fitness.check_space(self.space)
        self.evaluator = fitness
        runner = self.make_runner()
        cached = CachedFitness(fitness, runner)
        constraints = self.constraints()
        bars: list[tqdm] = []  # opened at the first finished iteration, so an early error prints alone
        state = self.out / STATE_FILE  # --overwrite: replaced (atomically) by the new search's first save
        evo = Evolution(
            self.space,
            cached,
            constraints,
            self.config,
            latency=self._latency,
            state_path=state,
            progress=self._progress(bars, "search", self.config.iterations),
        )
        baseline = random_best = dense = None
        try:
            result = evo.run(resume=self.resume)
            if self.random_baseline:
                baseline, random_best = self._random_baseline(
                    CachedFitness(fitness, runner), constraints, cached.evaluations
                )
            if self.runs_dense:
                dense = self._dense_search(cached, runner, constraints, bars)
        finally:
            for bar in bars:
                bar.close()
            runner.close()
        final = self._final(result, dense, random_best)
        report = SearchReport(self.settings(), result, final.rows(), baseline, final=final, dense=dense)
        return report, report.write(self.out)

    def _progress(self, bars: list[tqdm], desc: str, iterations: int):
        """A progress callback that opens its bar at the first finished iteration (the notices,
        shown once, go first)."""

        def progress(row: dict) -> None:
            if not bars:
                for line in self.notices:
                    sys.stderr.write(line + "\n")
            # a disabled tqdm keeps no desc: the bar's own name is read back from its attribute we set
            if not bars or getattr(bars[-1], "moenas_desc", None) != desc:
                if bars:
                    bars[-1].close()
                bar = tqdm(
                    total=iterations + 1, desc=desc, unit="iter", file=sys.stderr, disable=not self.show_progress
                )
                bar.moenas_desc = desc
                bars.append(bar)
            bar = bars[-1]
            bar.update(1)
            bar.set_postfix(best=f"{row['best_loss']:.3f}", evals=row["evaluations"])

        return progress

    def _dense_search(self, cached: CachedFitness, runner: Runner, constraints, bars: list[tqdm]) -> SearchResult:
        """Evolution over the space's dense variant under the same constraints (HAT's space inside
        AutoMoE's), on the same workers; archs the search already scored are not scored again."""
        iters = self.dense_iterations_run
        cfg = replace(self.config, iterations=iters, seed=self.config.seed + 2)
        fit = CachedFitness(cached.fitness, runner, cache=cached.cache)
        fit.errors.update(cached.errors)
        evo = Evolution(
            self.space.dense(),
            fit,
            constraints,
            cfg,
            latency=self._latency,
            state_path=self.out / DENSE_STATE_FILE,
            progress=self._progress(bars, "dense search", iters),
        )
        return evo.run(resume=self.resume)

    def check_runner(self) -> None:
        """The runner settings, and Ray's presence for --runner ray, before any work."""
        if self.runner not in RUNNERS:
            raise UserError(f"unknown runner {self.runner!r} (choose from {', '.join(RUNNERS)})")
        if self.ray_address and self.runner != "ray":
            raise UserError("--ray-address needs --runner ray")
        if self.runner == "ray":
            from moenas.arch.ray_cluster import import_ray

            import_ray("--runner ray")

    def make_runner(self) -> Runner:
        """Where fitness runs: --runner ray on Ray actors, process (or auto with several
        workers) in a local process pool, else in this process."""
        factory = fitness_factory(self.supernet, self.valid_sentences, self.fitness)
        if self.runner == "ray":
            from .ray_runner import RayRunner

            return RayRunner(factory, self.workers, address=self.ray_address)
        if self.runner == "process" or self.workers > 1:
            return ProcessPoolRunner(factory, self.workers)
        return InProcessRunner()

    def _random_baseline(self, fitness: CachedFitness, constraints, n_evals: int) -> tuple[dict[str, Any], Candidate]:
        """As many random feasible archs as the evolution evaluated, on the evolution's runner
        (its workers) with a cache of their own, so that the count is the same and fair."""
        res = random_search(self.space, fitness, constraints, n_evals, seed=self.config.seed + 1, latency=self._latency)
        return (
            {
                "method": "random search",
                "evaluations": n_evals,
                "best_loss": res.best.loss,
                "best_loss_se": res.best.loss_se,
                "best_arch_id": res.best.arch.arch_id,
                "best_predicted_latency_ms": res.best.latency,
            },
            res.best,
        )

    # ---- final selection by measurement ------------------------------------------------------------
    def _final(self, result: SearchResult, dense: SearchResult | None, random_best: Candidate | None) -> FinalSelection:
        """Pools of both families (and the random baseline's best), measured side by side, then
        the picks and the verdict (final_selection.py has the rules)."""

        def stats_of(archs):
            return [st for _, st in self.evaluator.scores(archs)]

        fins = pool(result.evaluated, self.final_k, stats_of, "searched")
        if dense is not None:
            fins += pool(dense.evaluated, self.final_k, stats_of, "dense") + largest(dense.evaluated, self.largest_k)
        if random_best is not None:
            fins.append(Finalist("random-search", random_best))
        rows = self._measure_finalists(fins)
        for f in fins:
            f.row = replace(rows[f.arch_id], role=f.role)
        primary = self.primary_latency()
        sel = decide(fins, primary.max_ms, self.measure, self.fitness, unit=primary.unit)
        if self.bleu_sentences > 0:  # each picked arch decoded once, also when it is two picks
            picks = [x for x in (sel.searched, sel.dense, sel.largest_dense, sel.random) if x]
            archs = {f.arch_id: f.candidate.arch for f in picks}
            quality = {
                i: self.evaluator.quality(a, self.bleu_sentences, beam=self.quality_beam) for i, a in archs.items()
            }
            for f in picks:
                f.row.add_quality(quality[f.arch_id])
        return sel

    def _measure_finalists(self, fins: list[Finalist]) -> dict[str, Verification]:
        """One Verification per distinct finalist arch, all timed in one round-robin with the
        reference. Saved to FINAL_STATE_FILE, which a --resume of the same pool reuses."""
        chosen = list({f.arch_id: (f.role, f.candidate) for f in fins}.values())
        checks = self.latency_constraints() or [self.primary_latency()]
        key = {
            "arch_ids": [c.arch.arch_id for _, c in chosen],
            "budget_ms": checks[0].max_ms,
            **({"budgets": {c.name: c.max_ms for c in checks}} if len(checks) > 1 else {}),
            "measure": self.measure,
            "backend": self.backend,
            "device": self.device,
            "threads": self.threads,
        }
        path = self.out / FINAL_STATE_FILE
        saved = json_dict(path) if self.resume else None
        if saved and saved.get("key") == key:
            rows = [Verification.from_dict(d) for d in saved["rows"]]
        else:
            rows = verify(
                chosen,
                self.predictor,
                self.confidence or 0.5,
                checks[0].max_ms,
                measure=self.measure,
                backend=self.backend,
                device=self.device,
                threads=self.threads,
                rule=self.rule,
                budgets=checks,
            )
            atomic_write_text(path, json.dumps({"key": key, "rows": [r.to_dict() for r in rows]}, default=str))
        return {r.arch_id: r for r in rows}

    @property
    def quality_beam(self) -> int:
        """The beam BLEU and chrF decode with: the latency protocol's, so that a report's BLEU
        and its latency come from the same decoding (a language model's continuations: greedy)."""
        return FITNESS_FAMILIES.for_family(self.space.family).beam(protocol_of(self.predictor))


def check_search_files(out: Path) -> None:
    """UserError when ``out`` holds a file of a search's name that no search wrote (``--out .``
    in a project with its own report.md): --overwrite replaces a search, nothing else."""
    if is_search_dir(out):
        return
    for name in OUTPUT_FILES:
        check_replaceable(out / name, lambda p: False, "a file of a moenas search (the folder holds no search)")


def is_search_dir(out: Path) -> bool:
    """Whether ``out`` holds a search of moenas (its report or its evolution state)."""
    report, state = json_dict(out / "report.json"), json_dict(out / STATE_FILE)
    return bool(report and {"settings", "best"} <= set(report)) or bool(
        state and {"config", "population"} <= set(state)
    )


def fitness_factory(ckpt: str, valid_sentences: int | None, metric: str = "loss"):
    """A picklable fitness factory for worker processes."""
    import functools

    return functools.partial(SupernetFitness, ckpt, valid_sentences, metric=metric)
