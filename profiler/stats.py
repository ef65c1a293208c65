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
        acc += math.comb(n, j) * 0.5 ** n
        cdf.append(acc)
    best = None
    for l in range(1, n // 2 + 1):
        if 2.0 * cdf[l - 1] <= alpha + 1e-12:
            best = l
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


def measure(step: Callable[[], dict[str, float]], rule: StopRule = StopRule(),
            clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Run ``step`` (one repetition; returns seconds per component) under ``rule``.

    ``step`` times itself (so it can split encoder / decoder); ``clock`` only bounds the total.
    """
    t0 = clock()
    for _ in range(rule.warmup):
        step()
    t1 = clock()
    samples: dict[str, list[float]] = {}
    while True:
        for k, sec in step().items():
            samples.setdefault(k, []).append(sec * 1e3)
        n = len(next(iter(samples.values())))
        elapsed = clock() - t1
        if n >= rule.max_runs or (n >= rule.min_runs and elapsed >= rule.max_seconds):
            break
        if n >= rule.min_runs and all(ci_rel(v, rule.confidence) <= rule.target_rel for v in samples.values()):
            break
    t2 = clock()
    summaries = {k: summarize(v, rule.target_rel, rule.confidence) for k, v in samples.items()}
    return Measurement(samples, summaries, rule.warmup, t2 - t1, t1 - t0)


def mape(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute percentage error of b against a, in percent."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    return float(np.mean(np.abs(y - x) / x) * 100.0)
