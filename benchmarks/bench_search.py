"""Claim: evolution beats random search at the same number of fitness evaluations, and a search
iteration costs little once fitness is cached.

For each seed: NSGA-II (objectives loss, latency) and single-objective evolution against random
search with the same evaluation count, all under one latency budget with the same supernet and
predictor. Reported: hypervolume of the (loss, predicted latency) front of everything evaluated
(reference point = worst loss and the budget), best loss under the budget, wall time per
iteration, and the share of fitness calls served from the cache.

Usage (after `make demo`, which leaves a supernet and a predictor in runs/demo):
  python benchmarks/bench_search.py --supernet runs/demo/supernet.pt --predictor runs/demo/predictor
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from moenas.profiler.fingerprint import bench_environment


@dataclass(frozen=True)
class BenchConfig:
    supernet: str
    predictor: str
    budget_ms: float | None = None  # None: the predicted median latency of 200 random archs
    seeds: tuple[int, ...] = (0, 1, 2)
    population: int = 40
    parents: int = 10
    mutations: int = 15
    crossovers: int = 15
    iterations: int = 8
    valid_sentences: int = 100


@dataclass(frozen=True)
class BenchResult:
    method: str
    seed: int
    evaluations: int
    hypervolume: float
    best_loss: float
    best_latency_ms: float
    seconds: float
    seconds_per_iteration: float
    cache_hit_share: float


def run(cfg: BenchConfig) -> list[BenchResult]:
    from moenas.arch import SearchSpace
    from moenas.predictor import Predictor
    from moenas.search.constraints import ConstraintSet, LatencyConstraint
    from moenas.search.evolution import Evolution, EvolutionConfig, random_search
    from moenas.search.fitness import SupernetFitness
    from moenas.search.fitness_runners import CachedFitness
    from moenas.search.pareto import hypervolume

    fitness = SupernetFitness(cfg.supernet, cfg.valid_sentences)
    space: SearchSpace = fitness.space
    pred = Predictor.load(cfg.predictor, space=space.name)
    budget = cfg.budget_ms or float(np.median(pred.predict(space.sample_n(200, seed=99)).mean))
    cons = ConstraintSet([LatencyConstraint(pred, budget, 0.9)])
    latency = lambda archs: pred.predict(list(archs)).mean  # noqa: E731
    shared_cache: dict[str, float] = {}  # fitness of an arch does not depend on the method: share it across runs
    out: list[BenchResult] = []
    fronts: dict[tuple[str, int], np.ndarray] = {}
    for seed in cfg.seeds:
        for method in ("evolution", "nsga2", "random"):
            cached = CachedFitness(fitness, cache=shared_cache)
            before = dict(shared_cache)
            t = time.perf_counter()
            econf = dict(
                population=cfg.population,
                parents=cfg.parents,
                mutations=cfg.mutations,
                crossovers=cfg.crossovers,
                iterations=cfg.iterations,
                seed=seed,
            )
            if method == "random":
                n_evo = next(r.evaluations for r in out if r.seed == seed and r.method == "evolution")
                res = random_search(space, cached, cons, n_evo, seed=seed + 1000, latency=latency)
            else:
                objectives = ("loss", "latency") if method == "nsga2" else ("loss",)
                res = Evolution(
                    space, cached, cons, EvolutionConfig(objectives=objectives, **econf), latency=latency
                ).run()
            secs = time.perf_counter() - t
            F = np.array([[c.loss, c.latency] for c in res.evaluated])
            fronts[(method, seed)] = F
            evals = len(res.evaluated)
            iters = max(len(res.history) - 1, 1)
            out.append(
                BenchResult(
                    method,
                    seed,
                    evals,
                    float("nan"),
                    res.best.loss,
                    res.best.latency,
                    secs,
                    secs / iters if method != "random" else float("nan"),
                    float(sum(a in before for a in (c.arch.arch_id for c in res.evaluated)) / max(evals, 1)),
                )
            )
    worst = max(float(F[:, 0].max()) for F in fronts.values())
    ref = np.array([worst, budget])
    return [BenchResult(**{**asdict(r), "hypervolume": hypervolume(fronts[(r.method, r.seed)], ref)}) for r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", default="runs/demo/supernet.pt")
    ap.add_argument("--predictor", default="runs/demo/predictor")
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/bench_search.csv")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cfg = BenchConfig(a.supernet, a.predictor, a.budget_ms, iterations=a.iterations)
    rows = run(cfg)
    versions = bench_environment()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*asdict(rows[0]), *versions])
        w.writeheader()
        for r in rows:
            w.writerow({**asdict(r), **versions})
    print(f"{'method':10} {'seed':>4} {'evals':>5} {'HV':>9} {'best loss':>9} {'lat ms':>7} {'s/iter':>7}")
    for r in rows:
        print(
            f"{r.method:10} {r.seed:4d} {r.evaluations:5d} {r.hypervolume:9.4f} {r.best_loss:9.4f} {r.best_latency_ms:7.3g} {r.seconds_per_iteration:7.2f}"
        )
    for m in ("evolution", "nsga2", "random"):
        sel = [r for r in rows if r.method == m]
        print(
            f"{m:10} mean HV {np.mean([r.hypervolume for r in sel]):.4f}  mean best loss {np.mean([r.best_loss for r in sel]):.4f}"
        )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
