"""Accuracy metrics for latency predictors (all on milliseconds; percentages as 0..100).

RMSE (ms), MAPE, RMSPE, the share of predictions within ±5% / ±10%, Kendall's tau and
Spearman's rho (does the predictor rank archs as the device does: what search needs), and the
interval's real coverage and mean relative width.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

METRIC_NAMES = ("n", "rmse_ms", "mape", "rmspe", "within_5", "within_10", "kendall_tau", "spearman_rho")


def _arrays(y, p):
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} measured vs {p.size} predicted")
    return y, p


def rmse(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def mape(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.mean(np.abs(p - y) / y) * 100)


def rmspe(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.sqrt(np.mean(((p - y) / y) ** 2)) * 100)


def within(y, p, pct: float) -> float:
    """Share (%) of predictions within ±pct% of the measurement."""
    y, p = _arrays(y, p)
    return float(np.mean(np.abs(p - y) / y <= pct / 100 + 1e-12) * 100)


def kendall_tau(y, p) -> float:
    y, p = _arrays(y, p)
    return float(stats.kendalltau(y, p).statistic) if y.size > 1 else float("nan")


def spearman_rho(y, p) -> float:
    y, p = _arrays(y, p)
    return float(stats.spearmanr(y, p).statistic) if y.size > 1 else float("nan")


def coverage(y, lower, upper) -> float:
    y = np.asarray(y, dtype=float)
    return float(np.mean((y >= np.asarray(lower)) & (y <= np.asarray(upper))) * 100)


def report(
    y, p, lower=None, upper=None, confidence: float | None = None, noise_floor: float | None = None
) -> dict[str, Any]:
    """Every metric in one dict; interval ones when lower/upper are given."""
    y, p = _arrays(y, p)
    out: dict[str, Any] = {
        "n": int(y.size),
        "rmse_ms": rmse(y, p),
        "mape": mape(y, p),
        "rmspe": rmspe(y, p),
        "within_5": within(y, p, 5),
        "within_10": within(y, p, 10),
        "kendall_tau": kendall_tau(y, p),
        "spearman_rho": spearman_rho(y, p),
        "noise_floor_mape": noise_floor,
    }
    if lower is not None and upper is not None:
        out["confidence"] = confidence
        out["coverage"] = coverage(y, lower, upper)
        out["interval_rel_width"] = float(np.mean((np.asarray(upper) - np.asarray(lower)) / p) * 100)
    if noise_floor:
        out["mape_over_noise"] = out["mape"] / noise_floor
    return out


def learning_curve_points(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n: int,
    test_share: float = 0.25,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    y: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Holdout error vs training size. ``fit_predict(train_idx, test_idx) -> predictions on test``.

    One fixed random holdout (``test_share`` of the n archs); training sets are nested random
    prefixes of the rest, sizes 25, 50, 100, 200, 400, ... up to all of it."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = max(1, int(round(n * test_share)))
    test, pool = perm[:n_test], perm[n_test:]
    if sizes is None:
        sizes = [s for s in (25, 50, 100, 200, 400, 800, 1600) if s < len(pool)] + [len(pool)]
    out = []
    for s in sorted(set(int(s) for s in sizes if 0 < s <= len(pool))):
        pred = fit_predict(pool[:s], test)
        yt = y[test]
        out.append(
            {
                "n_train": s,
                "n_test": int(len(test)),
                "mape": mape(yt, pred),
                "within_10": within(yt, pred, 10),
                "kendall_tau": kendall_tau(yt, pred),
            }
        )
    return out
