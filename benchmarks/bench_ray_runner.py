"""Claim: Ray spreads the search's fitness over workers like the process pool does, at a
small cost per batch.

The same archs, sampled from the supernet's space, are evaluated (validation loss with inherited
weights, `SupernetFitness`) by each runner: in-process, a process pool of 2 workers, and Ray
with 1 and 2 actors on one local Ray cluster of 2 CPUs. Each runner is warmed up first (pool or
actors started, supernet loaded in every worker: ``startup_s``), then timed on the archs:
``archs_per_s``. Every runner must return the in-process values (``same_values``). The overhead
rows time a fitness that does nothing, one arch per batch: ``ms_per_batch`` is then the cost of
sending a batch and getting its result back (Ray against the process pool).

    python benchmarks/bench_ray_runner.py --supernet runs/demo/supernet.pt      # after `make demo`
    python benchmarks/bench_ray_runner.py --supernet CKPT --quick --out /tmp/x.csv  # micro sizes: a smoke run

Results: benchmarks/results/bench_ray_runner.csv, with the machine and versions in every row.
Run it on a quiet machine: the 2 workers take both cores of this project's machines.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

RESULTS = Path(__file__).parent / "results"
RUNNERS = (("in-process", 1), ("process", 2), ("ray", 1), ("ray", 2))  # (runner, workers)
CLUSTER_CPUS = 2


@dataclass(frozen=True)
class BenchConfig:
    supernet: str
    archs: int = 64  # timed archs per runner
    batch_size: int = 8  # archs per batch (the search's runners use 16)
    valid_sentences: int = 100  # fixed validation subset of each fitness call
    overhead_batches: int = 200  # one-arch batches of the do-nothing fitness
    seed: int = 0


QUICK = {"archs": 4, "batch_size": 2, "valid_sentences": 4, "overhead_batches": 4}


@dataclass(frozen=True)
class BenchRow:
    measure: str  # "fitness" (supernet loss) or "overhead" (a fitness that does nothing)
    runner: str
    workers: int
    archs: int
    batch_size: int
    batches: int
    startup_s: float  # warm-up: workers started, fitness built in each
    seconds: float
    archs_per_s: float
    ms_per_batch: float
    same_values: bool  # equal to the in-process runner's values


def zeros(archs: Sequence[Any]) -> list[float]:
    """The do-nothing fitness of the overhead rows."""
    return [0.0] * len(archs)


def zeros_factory() -> Callable[[Sequence[Any]], list[float]]:
    return zeros


def make_runner(name: str, workers: int, factory: Callable, batch_size: int):
    from moenas.search.fitness_runners import InProcessRunner, ProcessPoolRunner
    from moenas.search.ray_runner import RayRunner

    if name == "ray":
        return RayRunner(factory, workers, batch_size)
    if name == "process":
        return ProcessPoolRunner(factory, workers, batch_size)
    return InProcessRunner(batch_size)


def time_runner(runner, fitness, warm: list, archs: list) -> tuple[list[float], float, float]:
    """(fitness values, warm-up seconds, timed seconds); the warm-up gives every worker a batch or
    two. The values' errors are dropped: a nan never equals another, so they cannot be compared."""
    try:
        t = time.perf_counter()
        runner.evaluate(fitness, warm)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        values = [v for v, _ in runner.evaluate(fitness, archs)]
        return values, startup, time.perf_counter() - t
    finally:
        runner.close()


def row(
    kind: str, name: str, workers: int, n: int, batch_size: int, startup: float, secs: float, same: bool
) -> BenchRow:
    batches = -(-n // batch_size)
    print(
        f"{kind:8s} {name:10s} x{workers}: {n / secs:8.2f} archs/s, {1000 * secs / batches:8.2f} ms/batch, "
        f"start-up {startup:.2f} s",
        flush=True,
    )
    return BenchRow(kind, name, workers, n, batch_size, batches, startup, secs, n / secs, 1000 * secs / batches, same)


def run(cfg: BenchConfig) -> list[BenchRow]:
    """Every runner on both workloads. The local processes go first: forking a process that
    already runs a Ray driver (its gRPC threads) is asking for trouble."""
    from moenas.search.fitness import SupernetFitness
    from moenas.search.search_job import fitness_factory

    fitness = SupernetFitness(cfg.supernet, cfg.valid_sentences)
    space = fitness.space
    noop_archs = space.sample_n(cfg.overhead_batches, seed=cfg.seed + 2)
    workloads = {  # kind: (fitness, factory, timed archs, warm-up archs, batch size)
        "fitness": (
            fitness,
            fitness_factory(cfg.supernet, cfg.valid_sentences),
            space.sample_n(cfg.archs, seed=cfg.seed),
            space.sample_n(2 * CLUSTER_CPUS * cfg.batch_size, seed=cfg.seed + 1),
            cfg.batch_size,
        ),
        "overhead": (zeros, zeros_factory, noop_archs, noop_archs[: 2 * CLUSTER_CPUS], 1),
    }
    rows: list[BenchRow] = []
    expected: dict[str, list[float]] = {}
    started = None
    try:
        for name, workers in RUNNERS:
            if name == "ray" and started is None:
                started = start_ray()
            for kind, (fn, factory, archs, warm, bs) in workloads.items():
                values, startup, secs = time_runner(make_runner(name, workers, factory, bs), fn, warm, archs)
                same = expected.setdefault(kind, values) == values
                rows.append(row(kind, name, workers, len(archs), bs, startup, secs, same))
    finally:
        if started:
            import ray

            ray.shutdown()
    return rows


def start_ray() -> bool:
    """One local cluster of 2 CPUs for every Ray row (its start-up is not a batch's cost); True
    when this script started it. The do-nothing fitness travels by value: actors cannot import
    this script."""
    from moenas.arch.ray_cluster import import_ray

    ray = import_ray("bench_ray_runner")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if ray.is_initialized():
        return False
    ray.init(num_cpus=CLUSTER_CPUS, include_dashboard=False, logging_level="WARNING")
    return True


def write_csv(path: Path, rows: list[BenchRow]) -> None:
    from moenas.profiler.fingerprint import bench_environment

    env = bench_environment(packages=("ray",))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*asdict(rows[0]), *env])
        w.writeheader()
        for r in rows:
            w.writerow({**asdict(r), **env})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supernet", default="runs/demo/supernet.pt", help="supernet checkpoint [runs/demo/supernet.pt]")
    for name, default in asdict(BenchConfig("")).items():
        if name != "supernet":
            ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default, help=f"[{default}]")
    ap.add_argument("--quick", action="store_true", help="micro sizes (a smoke run; its figures mean nothing)")
    ap.add_argument("--out", default=str(RESULTS / "bench_ray_runner.csv"))
    a = ap.parse_args(argv)
    if not Path(a.supernet).is_file():
        sys.stderr.write(
            f"bench_ray_runner: {a.supernet}: no such supernet checkpoint (run `make demo` or pass --supernet)\n"
        )
        return 2
    sizes = {k: getattr(a, k) for k in asdict(BenchConfig("")) if k != "supernet"}
    cfg = BenchConfig(a.supernet, **{**sizes, **(QUICK if a.quick else {})})
    if min(cfg.archs, cfg.batch_size, cfg.valid_sentences, cfg.overhead_batches) < 1:
        sys.stderr.write("bench_ray_runner: every size must be >= 1\n")
        return 2
    from moenas.arch import UserError
    from moenas.arch.ray_cluster import import_ray

    try:
        import_ray("bench_ray_runner")
    except UserError as e:
        sys.stderr.write(f"bench_ray_runner: {e}\n")
        return 2
    import torch

    torch.set_num_threads(1)
    rows = run(cfg)
    write_csv(Path(a.out), rows)
    print(f"wrote {a.out}")
    return 0 if all(r.same_values for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
