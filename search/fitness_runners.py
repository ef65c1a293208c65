"""Where fitness evaluations run, injected into the search as an object (pymoo-style).

A fitness function maps a batch of archs to one value each (validation loss, lower is better),
either a float or a (value, standard error) pair. A runner has two methods:
``evaluate(fitness, archs)`` (one (value, error) pair per arch, in input order; error nan when
the fitness gives none) and
``close()`` (release workers; the search calls it when it ends, also on an error).
``InProcessRunner`` calls the fitness in this process (HAT's loop); ``ProcessPoolRunner`` spreads
batches over worker processes and ``ray_runner.RayRunner`` over Ray actors on a cluster. Both
build the fitness once per worker from a picklable factory (so the supernet is loaded once per
worker, not per batch) and send archs as canonical JSON; their results equal the in-process ones.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from moenas.arch import Arch

FitnessFn = Callable[[Sequence[Arch]], Sequence[Any]]  # float or (value, standard error) per arch
Scored = tuple[float, float]  # (fitness, its standard error; nan when unknown)


# --runner of `moenas search`: auto = in-process for one worker, a process pool for more
RUNNERS = ("auto", "process", "ray")


class Runner(Protocol):
    def evaluate(self, fitness: FitnessFn, archs: Sequence[Arch]) -> list[Scored]: ...

    def close(self) -> None: ...


def _batches(archs: Sequence[Arch], size: int) -> list[Sequence[Arch]]:
    return [archs[i : i + size] for i in range(0, len(archs), size)]


def json_batches(archs: Sequence[Arch], size: int) -> list[list[str]]:
    """``archs`` cut into batches of at most ``size``, each arch as its canonical JSON (what a
    worker process or actor receives: plain strings pickle small and the same everywhere)."""
    return [[a.to_json() for a in b] for b in _batches(archs, size)]


def scored(v: Any) -> Scored:
    """A fitness value as (value, standard error): a bare float's error is unknown (nan)."""
    if isinstance(v, (tuple, list)):
        return float(v[0]), float(v[1])
    return float(v), float("nan")


def evaluate_json(fitness: FitnessFn, arch_json: Sequence[str]) -> list[Scored]:
    """The worker side of :func:`json_batches`: one (value, error) per arch of the batch, in order."""
    return [scored(v) for v in fitness([Arch.from_json(s) for s in arch_json])]


@dataclass
class InProcessRunner:
    batch_size: int = 16

    def evaluate(self, fitness: FitnessFn, archs: Sequence[Arch]) -> list[Scored]:
        return [scored(v) for b in _batches(archs, self.batch_size) for v in fitness(b)]

    def close(self) -> None:
        """Nothing to release."""


_WORKER_FITNESS: FitnessFn | None = None


def _init_worker(factory: Callable[[], FitnessFn]) -> None:
    global _WORKER_FITNESS
    _WORKER_FITNESS = factory()


def _run_batch(arch_json: list[str]) -> list[Scored]:
    assert _WORKER_FITNESS is not None
    return evaluate_json(_WORKER_FITNESS, arch_json)


@dataclass
class ProcessPoolRunner:
    """Batches over ``workers`` processes. ``factory`` (picklable) builds the fitness in each
    worker; the ``fitness`` argument of :meth:`evaluate` is ignored in favour of it."""

    factory: Callable[[], FitnessFn]
    workers: int = 2
    batch_size: int = 16
    _pool: cf.ProcessPoolExecutor | None = field(default=None, init=False, repr=False)

    def evaluate(self, fitness: FitnessFn, archs: Sequence[Arch]) -> list[Scored]:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, initializer=_init_worker, initargs=(self.factory,))
        return [v for part in self._pool.map(_run_batch, json_batches(archs, self.batch_size)) for v in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class CachedFitness:
    """Fitness memoised by arch_id: an arch is evaluated at most once per search. Calls return
    the values; ``errors`` holds each value's standard error (nan when the fitness gives none)."""

    def __init__(self, fitness: FitnessFn, runner: Runner | None = None, cache: dict[str, float] | None = None):
        self.fitness = fitness
        self.runner = runner or InProcessRunner()
        self.cache: dict[str, float] = dict(cache or {})
        self.errors: dict[str, float] = {}
        self.evaluations = 0
        self.hits = 0

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        todo: dict[str, Arch] = {}
        for a in archs:
            if a.arch_id in self.cache:
                self.hits += 1
            else:
                todo.setdefault(a.arch_id, a)
        if todo:
            pairs = self.runner.evaluate(self.fitness, list(todo.values()))
            self.cache.update((k, v) for k, (v, _) in zip(todo, pairs))
            self.errors.update((k, se) for k, (_, se) in zip(todo, pairs))
            self.evaluations += len(todo)
        return [self.cache[a.arch_id] for a in archs]
