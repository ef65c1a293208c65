"""Fitness evaluations on a Ray cluster (`moenas search --runner ray [--ray-address ADDR]`).

``RayRunner`` keeps the runner contract of ``fitness_runners.py``: ``evaluate(fitness, archs)`` returns
one (value, error) pair per arch in input order, equal to ``InProcessRunner``'s for the same supernet (the
fitness of an arch does not depend on its batch), and ``close()`` releases the workers.

A pool of ``workers`` Ray actors (1 CPU each) is started at the first ``evaluate``; each actor
builds its fitness ONCE from the picklable ``factory`` (as a ``ProcessPoolRunner`` worker does),
so the supernet is loaded once per actor. Batches of archs travel as canonical JSON strings and
go to whichever actor is idle (``ray.util.ActorPool``). An actor whose process dies (killed, out
of memory, its node lost) is restarted by Ray (a new process, on any node with a free CPU: it
builds its fitness again) and the batches it held are retried there, at most ``retries`` times;
after that the search stops with one line naming the failure. Retry and placement are Ray's own
(``max_restarts``, ``max_task_retries``): moenas schedules nothing itself.

Ray is imported only when a RayRunner starts, so moenas works without it; without it,
:func:`moenas.arch.ray_cluster.import_ray` is the one-line error naming the ``ray`` extra. ``close()`` kills the actors
and shuts down only a Ray moenas started: a local cluster (``num_cpus = workers``) or the driver
connection to ``address``; a cluster this process had already joined is left as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from moenas.arch import Arch, UserError
from moenas.arch.ray_cluster import check_reachable, import_ray

from .fitness_runners import FitnessFn, Scored, evaluate_json, json_batches


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class FitnessActor:
    """What one Ray actor holds: the fitness built once from the factory (made a Ray actor
    class by :meth:`RayRunner._start`, so that this module imports without Ray)."""

    def __init__(self, factory: Callable[[], FitnessFn]):
        self.fitness = factory()

    def evaluate(self, arch_json: list[str]) -> list[Scored]:
        return evaluate_json(self.fitness, arch_json)


@dataclass
class RayRunner:
    """Batches of ``batch_size`` archs over ``workers`` Ray actors. ``factory`` (picklable)
    builds the fitness in each actor; the ``fitness`` argument of :meth:`evaluate` is ignored in
    favour of it. ``address``: a running cluster (``ray start --head`` prints it; ``auto`` finds
    one on this machine); None starts a local cluster of ``workers`` CPUs. ``retries``: how many
    times a dead actor is restarted and its batches retried before the search gives up."""

    factory: Callable[[], FitnessFn]
    workers: int = 2
    batch_size: int = 16
    address: str | None = None
    retries: int = 2
    _actors: list[Any] = field(default_factory=list, init=False, repr=False)
    _pool: Any = field(default=None, init=False, repr=False)
    _owns_ray: bool = field(default=False, init=False, repr=False)

    def evaluate(self, fitness: FitnessFn, archs: Sequence[Arch]) -> list[Scored]:
        ray = import_ray("--runner ray")
        pool = self._start(ray)
        try:
            parts = list(pool.map(lambda actor, job: actor.evaluate.remote(job), json_batches(archs, self.batch_size)))
        except ray.exceptions.RayActorError as e:
            self._kill_actors(ray)  # their queue went with them; a later evaluate starts afresh
            raise UserError(
                f"a Ray fitness worker died {self.retries + 1} times on one batch of archs, giving up "
                f"(see the Ray logs of its node): {_first_line(e)}"
            ) from None
        return [v for part in parts for v in part]

    def close(self) -> None:
        if not (self._actors or self._owns_ray):
            return
        ray = import_ray("--runner ray")
        self._kill_actors(ray)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # ---- set-up ----------------------------------------------------------------------------------
    def _start(self, ray: Any) -> Any:
        """The actor pool, started on first use: Ray joined or started, enough CPUs checked."""
        if self._pool is not None:
            return self._pool
        if not ray.is_initialized():
            self._connect(ray)
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.workers:  # the missing actors would wait for a CPU forever
            raise UserError(f"the Ray cluster has {cpus:g} CPUs, fewer than --workers {self.workers}")
        actor_cls = ray.remote(num_cpus=1, max_restarts=self.retries, max_task_retries=self.retries)(FitnessActor)
        self._actors = [actor_cls.remote(self.factory) for _ in range(self.workers)]
        self._pool = ray.util.ActorPool(self._actors)
        return self._pool

    def _connect(self, ray: Any) -> None:
        if self.address:
            check_reachable(self.address, "--ray-address")
        try:
            if self.address:  # a running cluster's own settings (CPUs, dashboard) are not ours to pass
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray-address {self.address}: cannot join the Ray cluster ({_first_line(e)})") from None
        self._owns_ray = True

    def _kill_actors(self, ray: Any) -> None:
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors, self._pool = [], None
