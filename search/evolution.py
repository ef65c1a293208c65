"""Constrained evolutionary search over a SearchSpace (HAT / AutoMoE), single- or multi-objective.

Each iteration: keep the best ``parents`` of the population, then make ``mutations`` mutants
and ``crossovers`` children of random parents. Every candidate is checked against the
constraints (g <= 0) *before* its fitness is computed; infeasible ones are redrawn, so no
infeasible arch is ever evaluated, kept or returned. Fitness (validation loss with inherited
weights) is cached by arch_id and computed in batches by a runner.

Single objective ranks by loss (HAT/AutoMoE). Multi-objective ranks by NSGA-II's front and
crowding distance over (loss, predicted latency). ``random_search`` spends the same number of
fitness evaluations on feasible random samples, the baseline evolution must beat.

The state after every iteration is a JSON file, so an interrupted search resumes exactly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.files import atomic_write_text

from .constraints import ConstraintSet
from .fitness_runners import CachedFitness
from .pareto import pareto_mask, rank_and_crowding_order

LatencyFn = Callable[[Sequence[Arch]], np.ndarray]


@dataclass(frozen=True)
class EvolutionConfig:
    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutate_prob: float = 0.3
    iterations: int = 30
    seed: int = 0
    objectives: tuple[str, ...] = ("loss",)  # or ("loss", "latency")
    max_draws: int = 200  # candidate draws per wanted feasible arch before giving up

    def __post_init__(self) -> None:
        if set(self.objectives) - {"loss", "latency"} or "loss" not in self.objectives:
            raise UserError(f"objectives must be 'loss' or 'loss,latency', got {','.join(self.objectives)}")
        if not 0 < self.parents <= self.population:
            raise UserError(f"--parents must be in 1..population ({self.population}), got {self.parents}")
        if self.mutations < 0 or self.crossovers < 0 or self.iterations < 0:
            raise UserError("--mutations, --crossovers and --iterations must be >= 0")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise UserError(f"--mutate-prob must be in [0, 1], got {self.mutate_prob}")


@dataclass
class Candidate:
    arch: Arch
    loss: float
    latency: float  # predicted mean latency (ms); nan without a latency model
    g: list[float]  # constraint values, all <= 0
    loss_se: float = float("nan")  # the loss's standard error over the evaluation sentences (nan: unknown)

    def row(self) -> dict:
        return {
            "arch_id": self.arch.arch_id,
            "loss": self.loss,
            "loss_se": self.loss_se,
            "latency_ms": self.latency,
            "arch": self.arch.to_json(),
            **{f"g{i}": v for i, v in enumerate(self.g)},
        }


@dataclass
class SearchResult:
    best: Candidate
    population: list[Candidate]
    evaluated: list[Candidate]  # every feasible arch whose fitness was computed, in order
    history: list[dict] = field(default_factory=list)

    def pareto(self) -> list[Candidate]:
        """Non-dominated evaluated archs in (loss, latency), sorted by latency."""
        if not self.evaluated or np.isnan(self.evaluated[0].latency):
            return [self.best]
        F = np.array([[c.loss, c.latency] for c in self.evaluated])
        front = [c for c, keep in zip(self.evaluated, pareto_mask(F)) if keep]
        return sorted(front, key=lambda c: c.latency)


class Evolution:
    """See the module docstring. ``state_path`` (optional) enables --resume."""

    def __init__(
        self,
        space: SearchSpace,
        fitness: CachedFitness,
        constraints: ConstraintSet,
        config: EvolutionConfig = EvolutionConfig(),
        latency: LatencyFn | None = None,
        state_path: str | Path | None = None,
        progress: Callable[[dict], None] | None = None,
    ):
        if "latency" in config.objectives and latency is None:
            raise UserError("multi-objective search needs a latency predictor")
        self.space, self.fitness, self.constraints, self.config = space, fitness, constraints, config
        self.latency = latency
        self.state_path = Path(state_path) if state_path else None
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.evaluated: dict[str, Candidate] = {}
        self.history: list[dict] = []

    # ---- candidate generation (feasible only) ----------------------------------------------
    def _feasible(self, make: Callable[[], Arch], n: int, exclude: set[str]) -> list[Arch]:
        """Up to n new feasible archs from ``make``, drawn in vectorised batches."""
        out: list[Arch] = []
        seen = set(exclude)
        draws = 0
        while len(out) < n and draws < n * self.config.max_draws:
            batch = []
            for _ in range(max(2 * (n - len(out)), 8)):
                a = make()
                draws += 1
                if a.arch_id not in seen:
                    seen.add(a.arch_id)
                    batch.append(a)
            if batch:
                ok = self.constraints.feasible(batch)
                out.extend(a for a, k in zip(batch, ok) if k)
        return out[:n]

    def _candidates(self, archs: list[Arch]) -> list[Candidate]:
        """Fitness and objectives of feasible archs (constraints were checked by the caller)."""
        if not archs:
            return []
        losses = self.fitness(archs)
        lat = self.latency(archs) if self.latency else np.full(len(archs), np.nan)
        G = self.constraints.G(archs)
        assert (G <= 0).all(), "an infeasible arch reached fitness evaluation"
        errors = self.fitness.errors
        cands = [
            Candidate(a, float(loss), float(t), [float(x) for x in g], float(errors.get(a.arch_id, float("nan"))))
            for a, loss, t, g in zip(archs, losses, lat, G)
        ]
        for c in cands:
            self.evaluated.setdefault(c.arch.arch_id, c)
        return cands

    def no_feasible_message(self) -> str:
        """Why nothing is feasible, in the budget's own units where a constraint can say them."""
        small = self.space.smallest()
        g = self.constraints.G([small])[0]
        parts = []
        for c, v in zip(self.constraints.constraints, g):
            if v <= 0:
                continue
            parts.append(c.explain(small, float(v)))
        return (
            f"no feasible arch in space {self.space.name!r}: even its smallest arch ({small.arch_id}) has "
            + "; ".join(parts or ["no violation, yet no sampled arch was feasible"])
        )

    def initial_population(self) -> list[Candidate]:
        archs = self._feasible(lambda: self.space.sample(self.rng), self.config.population, set())
        if not archs:
            small = self.space.smallest()
            if not self.constraints.feasible([small])[0]:
                raise UserError(self.no_feasible_message())
            archs = [small]
        return self._candidates(archs)

    # ---- selection ---------------------------------------------------------------------------
    def rank(self, pop: list[Candidate]) -> list[Candidate]:
        if self.config.objectives == ("loss",):
            return sorted(pop, key=lambda c: (c.loss, c.arch.arch_id))
        F = np.array([[c.loss, c.latency] for c in pop])
        return [pop[i] for i in rank_and_crowding_order(F)]

    def step(self, pop: list[Candidate]) -> list[Candidate]:
        cfg = self.config
        parents = self.rank(pop)[: cfg.parents]
        taken = {c.arch.arch_id for c in parents}
        mutants = self._feasible(
            lambda: self.space.mutate(self.rng.choice(parents).arch, self.rng, cfg.mutate_prob), cfg.mutations, taken
        )
        taken |= {a.arch_id for a in mutants}
        children = self._feasible(
            lambda: self.space.crossover(self.rng.choice(parents).arch, self.rng.choice(parents).arch, self.rng),
            cfg.crossovers,
            taken,
        )
        return parents + self._candidates(mutants + children)

    # ---- driver ------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> SearchResult:
        start_iter, pop = 0, None
        if resume:
            pop, start_iter = self._load_state()
        if pop is None:
            pop = self.initial_population()
            self._record(0, pop, 0.0)
            self._save_state(pop, 0)
        for it in range(start_iter + 1, self.config.iterations + 1):
            t0 = time.perf_counter()
            pop = self.step(pop)
            self._record(it, pop, time.perf_counter() - t0)
            self._save_state(pop, it)
        ranked = self.rank(pop)
        best = min(pop, key=lambda c: c.loss)
        return SearchResult(best=best, population=ranked, evaluated=list(self.evaluated.values()), history=self.history)

    def _record(self, it: int, pop: list[Candidate], seconds: float) -> None:
        losses = np.array([c.loss for c in pop])
        row = {
            "iteration": it,
            "best_loss": float(losses.min()),
            "mean_loss": float(losses.mean()),
            "population": len(pop),
            "evaluations": self.fitness.evaluations,
            "cache_hits": self.fitness.hits,
            "seconds": seconds,
        }
        if self.latency is not None:
            lat = np.array([c.latency for c in pop])
            row.update(best_latency_ms=float(lat[losses.argmin()]), min_latency_ms=float(lat.min()))
        self.history.append(row)
        if self.progress:
            self.progress(row)

    # ---- resume --------------------------------------------------------------------------------
    def _save_state(self, pop: list[Candidate], it: int) -> None:
        if self.state_path is None:
            return
        state = {
            "config": asdict(self.config),
            "iteration": it,
            "rng": _rng_to_json(self.rng.getstate()),
            "population": [c.arch.to_json() for c in pop],
            "cache": self.fitness.cache,
            "errors": self.fitness.errors,
            "evaluated": [c.row() for c in self.evaluated.values()],
            "history": self.history,
            "counters": [self.fitness.evaluations, self.fitness.hits],
        }
        atomic_write_text(self.state_path, json.dumps(state))

    def _load_state(self) -> tuple[list[Candidate] | None, int]:
        if self.state_path is None or not self.state_path.exists():
            return None, 0
        try:
            state = json.loads(self.state_path.read_text())
            if state["config"] != json.loads(json.dumps(asdict(self.config))):
                raise UserError(
                    f"{self.state_path}: saved with other search settings; use the same flags or a new --out"
                )
            self.rng.setstate(_rng_from_json(state["rng"]))
            self.fitness.cache.update(state["cache"])
            self.fitness.errors.update(state.get("errors", {}))  # states saved before errors existed have none
            self.fitness.evaluations, self.fitness.hits = state["counters"]
            self.history = state["history"]
            for r in state["evaluated"]:
                g = [
                    r[k]
                    for k in sorted((k for k in r if k.startswith("g") and k[1:].isdigit()), key=lambda k: int(k[1:]))
                ]
                self.evaluated[r["arch_id"]] = Candidate(
                    Arch.from_json(r["arch"]), r["loss"], r["latency_ms"], g, r.get("loss_se", float("nan"))
                )
            pop = [self.evaluated[Arch.from_json(s).arch_id] for s in state["population"]]
            return pop, int(state["iteration"])
        except (
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            RecursionError,
        ) as e:  # UnicodeDecodeError is a ValueError
            if isinstance(e, UserError):
                raise
            raise UserError(
                f"{self.state_path}: not a readable search state ({type(e).__name__}); remove it or use a new --out"
            ) from None


def _rng_to_json(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def _rng_from_json(state: list) -> tuple:
    return (state[0], tuple(state[1]), state[2])


def random_search(
    space: SearchSpace,
    fitness: CachedFitness,
    constraints: ConstraintSet,
    n_evals: int,
    seed: int = 0,
    latency: LatencyFn | None = None,
) -> SearchResult:
    """The baseline: ``n_evals`` feasible random archs, best by loss."""
    evo = Evolution(
        space,
        fitness,
        constraints,
        EvolutionConfig(population=max(n_evals, 1), parents=1, iterations=0, seed=seed),
        latency=latency,
    )
    return evo.run()
