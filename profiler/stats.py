"""Timing statistics: a distribution-free confidence interval of the median and the
"repeat until precise enough" rule.

CI of the median (order statistics, no distribution assumed): for n i.i.d. samples sorted as
x_(1) <= ... <= x_(n), the number of samples below the true median is Binomial(n, 1/2), so
[x_(l), x_(n+1-l)] covers the median with probability 1 - 2 * P(B <= l - 1), B ~ Bin(n, 1/2).
We take the largest l whose coverage is still >= the confidence level (exact, not the normal
approximation). The smallest n that has a 95% interval at all is 6.

Precision: ``ci_rel`` = max(median - lo, hi - median) / median, i.e. the interval lies within
±ci_rel of the median. The stopping rule (:func:`measure`) keeps timing until ``ci_rel`` <=
the target (default 2%) for every component, or a run/time cap is reached; whether the target
was reached is recorded with the result.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks (l, u) with P(x_(l) <= median <= x_(u)) >= confidence, or None if n is too
    small for any such interval. u = n + 1 - l (symmetric)."""
    if n < 1:
        return None
    alpha = 1.0 - confidence
    # cdf[j] = P(B <= j)
    cdf, acc = [], 0.0
    for j in range(n + 1):
        acc += math.comb(n, j) * 0.5**n
        cdf.append(acc)
    best = None
    for lo in range(1, n // 2 + 1):
        if 2.0 * cdf[lo - 1] <= alpha + 1e-12:
            best = lo
        else:
            break
    return None if best is None else (best, n + 1 - best)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free CI of the median (see module docstring); None when n is too small."""
    x = np.sort(np.asarray(samples, dtype=float))
    ranks = median_ci_ranks(len(x), confidence)
    if ranks is None:
        return None
    lo, hi = ranks
    return float(x[lo - 1]), float(x[hi - 1])


def ci_rel(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the median's CI relative to the median (max of the two sides); inf if the
    sample is too small for an interval."""
    ci = median_ci(samples, confidence)
    if ci is None:
        return math.inf
    med = float(np.median(samples))
    if med <= 0:
        return math.inf
    return max(med - ci[0], ci[1] - med) / med


@dataclass(frozen=True)
class Summary:
    """One component's timing summary, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    ci_lo_ms: float
    ci_hi_ms: float
    ci_rel: float
    n_runs: int
    precision_reached: bool

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples_ms: Sequence[float], target_rel: float = 0.02, confidence: float = 0.95) -> Summary:
    x = np.asarray(samples_ms, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    ci = median_ci(x, confidence)
    rel = ci_rel(x, confidence)
    return Summary(
        median_ms=float(np.median(x)),
        p10_ms=float(np.percentile(x, 10)),
        p90_ms=float(np.percentile(x, 90)),
        mean_ms=float(x.mean()),
        std_ms=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        ci_lo_ms=float(ci[0]) if ci else math.nan,
        ci_hi_ms=float(ci[1]) if ci else math.nan,
        ci_rel=float(rel),
        n_runs=int(x.size),
        precision_reached=bool(rel <= target_rel),
    )


@dataclass(frozen=True)
class StopRule:
    """When to stop repeating: after ``warmup`` untimed runs, at least ``min_runs`` timed runs;
    then stop as soon as every component's ci_rel <= ``target_rel`` at ``confidence``, or after
    ``max_runs`` runs, or once ``max_seconds`` of timed runs have passed (whichever first)."""

    warmup: int = 5
    min_runs: int = 10
    max_runs: int = 200
    max_seconds: float = 30.0
    target_rel: float = 0.02
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise ValueError("need 1 <= min_runs <= max_runs")


@dataclass
class Measurement:
    """Samples (ms) per component, the summaries, and time spent (s) in the timed runs."""

    samples: dict[str, list[float]]
    summaries: dict[str, Summary]
    n_warmup: int
    timed_s: float
    warmup_s: float


def measure(
    step: Callable[[], dict[str, float]], rule: StopRule = StopRule(), clock: Callable[[], float] = time.perf_counter
) -> Measurement:
    """Run ``step`` (one repetition; returns seconds per component) under ``rule``, alone:
    warm-up, then timed runs until the rule stops it.

    ``step`` times itself (so it can split encoder / decoder); ``clock`` only bounds the total.
    """
    return measure_interleaved([step], rule, visit_runs=1, visit_warmup=0, clock=clock)[0]


def measure_interleaved(
    steps: Sequence[Callable[[], dict[str, float]]],
    rule: StopRule = StopRule(),
    visit_runs: int = 5,
    visit_warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    follower: int | None = None,
) -> list[Measurement]:
    """Time several workloads round-robin: each visit = ``visit_warmup`` untimed runs (the cache
    was left to another model) + ``visit_runs`` timed runs; the first visit warms up with
    ``rule.warmup`` instead. Each workload stops on its own under ``rule`` (checked after each
    visit; ``max_seconds`` counts only its own timed runs) and drops out of the rotation.

    Why: on a shared VM the machine's speed wanders over seconds to minutes. Timed back to back,
    an arch's samples all come from one short stretch, so its median carries that stretch's speed;
    interleaved, each median spans the whole group's window and archs measured together share the
    same mix (measured here on 16 tiny archs, three passes: repeat MAPE 0.9-1.2% against 1.2-2.0%
    sequential, same number of timed runs).

    ``follower``: the index of a step that follows the group instead of the rule (the profiler's
    reference model, whose median is the group's drift check): it is visited every round, with
    ``visit_runs`` timed runs until it has ``rule.min_runs`` and one run per visit after that,
    and it leaves the rotation only when every other step has (its own caps and precision do
    not stop it), so its median spans the group's whole window at a fraction of an arch's
    timing (10 automoe-wmt archs in groups of 5, archs at the 16 s cap: 30 s of reference timing
    per run instead of 65 s, benchmarks/bench_ref_timing.py).
    """
    if visit_runs < 1 or visit_warmup < 0:
        raise ValueError("need visit_runs >= 1 and visit_warmup >= 0")
    if follower is not None and not 0 <= follower < len(steps):
        raise ValueError(f"follower {follower} is not a step index")
    n = len(steps)
    if n == 1:  # alone: nothing evicts its cache between visits, so no visits at all
        visit_runs, visit_warmup = 1, 0
    samples: list[dict[str, list[float]]] = [{} for _ in range(n)]
    timed = [0.0] * n
    warm = [0.0] * n
    visits = [0] * n
    n_warm = [0] * n
    active = list(range(n))
    while active:
        still = []
        for i in active:
            t0 = clock()
            for _ in range(rule.warmup if visits[i] == 0 else visit_warmup):
                steps[i]()
                n_warm[i] += 1
            t1 = clock()
            runs = visit_runs if i != follower or _runs(samples[i]) < rule.min_runs else 1
            for _ in range(runs):
                for k, sec in steps[i]().items():
                    samples[i].setdefault(k, []).append(sec * 1e3)
                if i != follower and _capped(samples[i], timed[i] + clock() - t1, rule):
                    break
            t2 = clock()
            warm[i] += t1 - t0
            timed[i] += t2 - t1
            visits[i] += 1
            if i == follower or not (_capped(samples[i], timed[i], rule) or _precise(samples[i], rule)):
                still.append(i)
        if follower is not None and still == [follower] and _runs(samples[follower]) >= rule.min_runs:
            still = []  # the group is done, and the follower has its minimum
        active = still
    return [
        Measurement(
            samples[i],
            {k: summarize(v, rule.target_rel, rule.confidence) for k, v in samples[i].items()},
            n_warm[i],
            timed[i],
            warm[i],
        )
        for i in range(n)
    ]


def _runs(samples: dict[str, list[float]]) -> int:
    return len(next(iter(samples.values()))) if samples else 0


def _capped(samples: dict[str, list[float]], elapsed_s: float, rule: StopRule) -> bool:
    """A cap ends a workload at once, even inside a visit."""
    n = _runs(samples)
    return n >= rule.max_runs or (n >= rule.min_runs and elapsed_s >= rule.max_seconds)


def _precise(samples: dict[str, list[float]], rule: StopRule) -> bool:
    """Tested only after a visit, so a visit's runs are not cut short by a lucky early interval."""
    return _runs(samples) >= rule.min_runs and all(
        ci_rel(v, rule.confidence) <= rule.target_rel for v in samples.values()
    )
