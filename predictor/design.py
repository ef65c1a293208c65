"""Which archs to measure: the profiling designs.

Measuring an arch costs seconds to minutes; a predictor is only as good as the archs it was
fitted on. Three designs choose ``n`` archs out of a candidate pool (a large seeded sample of
the space):

``random``         a seeded random subset (what profiling did before designs existed).
``space-filling``  greedy maximin over the *design space*: the cost model's features of each
                   arch (FLOPs and bytes per component and part, parameters, expert counts), as
                   logs, standardised over the pool. The first pick is the arch farthest from the
                   pool's centre, every next one the arch farthest from all picked and measured
                   archs (Kennard and Stone's rule), so the extremes and the gaps go first.
``uncertainty``    where the current data predict worst: a random forest fitted on the archs
                   measured so far (log latency on the same design features) scores every
                   candidate by the spread of its trees' predictions, and the batch is picked
                   greedily by spread x distance to everything picked (uncertainty alone would
                   pick near-duplicates of one uncertain region). With fewer than
                   :data:`MIN_MEASURED` measured archs there is nothing to fit: space-filling.

Why a forest's spread and not the predictor's own interval: the predictor's conformal
intervals have one relative width for all archs (a property of split conformal), so they
cannot rank candidates; the trees' disagreement can.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from moenas.arch import Arch, UserError
from moenas.arch.protocol import LatencyProtocol

from .features import ArchFeatures
from .names import DESIGNS

MIN_MEASURED = 5  # archs a forest needs before its spread means anything


def design_matrix(
    pool: Sequence[Arch], others: Sequence[Arch] = (), protocol: LatencyProtocol | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, other rows) of the design space: log1p of the cost and MoE features,
    standardised by the pool's mean and spread; constant columns dropped. Shapes (len(pool), d)
    and (len(others), d)."""
    feats = ArchFeatures(protocol=protocol, groups=("cost", "moe")).fit(list(pool) + list(others))
    x = np.log1p(np.maximum(feats.transform(list(pool) + list(others)), 0.0))
    mu, sd = x[: len(pool)].mean(0), x[: len(pool)].std(0)
    keep = sd > 1e-12
    z = (x[:, keep] - mu[keep]) / sd[keep]
    return z[: len(pool)], z[len(pool) :]


def maximin(x: np.ndarray, n: int, fixed: np.ndarray | None = None, weight: np.ndarray | None = None) -> list[int]:
    """Greedy maximin: ``n`` row indices of ``x`` (m, d), each next the row whose distance to the
    nearest picked or ``fixed`` row (k, d), times its ``weight`` (m,), is largest. Without fixed
    rows the first pick is the (weighted) row farthest from the centre of ``x``."""
    w = np.ones(len(x)) if weight is None else np.asarray(weight, float)
    anchored = fixed is not None and len(fixed) > 0
    if anchored:
        d = np.min(np.linalg.norm(x[:, None, :] - fixed[None, :, :], axis=2), axis=1)
    else:  # only ranks the first pick; replaced by the distance to it
        d = np.linalg.norm(x - x.mean(0), axis=1)
    taken = np.zeros(len(x), bool)
    picked: list[int] = []
    for k in range(min(n, len(x))):
        i = int(np.argmax(np.where(taken, -np.inf, d * w)))
        picked.append(i)
        taken[i] = True
        to_i = np.linalg.norm(x - x[i], axis=1)
        d = np.minimum(d, to_i) if anchored or k > 0 else to_i
    return picked


def tree_spread(x_measured: np.ndarray, y_ms: np.ndarray, x_pool: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-candidate std of a random forest's per-tree log-latency predictions, shape (len(x_pool),):
    how much the archs measured so far disagree about a candidate."""
    from sklearn.ensemble import RandomForestRegressor

    rf = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, max_features=0.5, random_state=seed)
    rf.fit(x_measured, np.log(np.asarray(y_ms, float)))
    per_tree = np.stack([t.predict(x_pool) for t in rf.estimators_])
    return per_tree.std(0)


def choose(
    design: str,
    pool: Sequence[Arch],
    n: int,
    measured: Sequence[Arch] = (),
    y_ms: Sequence[float] = (),
    seed: int = 0,
    protocol: LatencyProtocol | None = None,
) -> list[int]:
    """Indices into ``pool`` of the ``n`` archs to measure next under ``design``, given the archs
    ``measured`` so far and their latencies ``y_ms`` (ms; only ``uncertainty`` reads them).
    Pool archs already measured are never chosen."""
    if design not in DESIGNS:
        raise UserError(f"unknown design {design!r} (choose from {', '.join(DESIGNS)})")
    done = {a.arch_id for a in measured}
    free = [i for i, a in enumerate(pool) if a.arch_id not in done]
    n = min(n, len(free))
    if design == "random":
        rng = np.random.default_rng(seed)
        return [free[i] for i in sorted(rng.choice(len(free), n, replace=False))]
    x_pool, x_meas = design_matrix([pool[i] for i in free], measured, protocol)
    weight = None
    if design == "uncertainty" and len(measured) >= MIN_MEASURED:
        weight = tree_spread(x_meas, np.asarray(y_ms, float), x_pool, seed)
    return [free[i] for i in maximin(x_pool, n, x_meas, weight)]
