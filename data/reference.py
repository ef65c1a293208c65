"""The reference model's latency in profile data: its statistics, their stored form, comparisons.

Every profile row carries the timing of a fixed reference model (``ref_before_ms`` /
``ref_after_ms``: the checks that opened and closed the row's interval). A predictor keeps its
training rows' statistics of them (:func:`reference_stats`, stored as ``metadata["reference"]``
and read back by :func:`stored_reference`); a later timing of the same model elsewhere is
compared with them by :func:`calibration_factor` and :func:`beyond_noise`.

They live on the data floor because both sides use them: the predictor stores and rescales by
them, the profiler times the reference model and judges its timing against them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from moenas.arch import UserError

# Smallest relative tolerance used when judging whether two reference timings differ: below
# ~2% the comparison is within what one reference check resolves (its stop rule aims at a
# ±2% CI of the median), whatever the data's own spread says.
MIN_NOISE_REL = 0.02
# Robust standard deviation of a normal sample = 1.4826 * median absolute deviation.
MAD_TO_STD = 1.4826


def _one_value(series: pd.Series) -> Any:
    vals = series.dropna().unique()
    if len(vals) != 1:
        return None
    v = vals[0]
    return v.item() if hasattr(v, "item") else v


def reference_stats(rows: pd.DataFrame, metas: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The reference model's latency in the rows a predictor is fitted on, or None without any.

    ``rows``: profile rows (one component, the valid first measurements: the training rows).
    Every row contributes the reference checks before and after it; ``median_ms`` is their
    median (ms) and ``noise_rel`` their robust relative spread (1.4826 * MAD / median): how far
    one reference check wanders on that machine, the tolerance a check elsewhere is judged by.
    ``metas`` (the datasets' sidecars) add the reference arch id and the stop rule the profiler
    timed it with, when all files agree on them."""
    cols = [c for c in ("ref_before_ms", "ref_after_ms") if c in rows.columns]
    if not cols or len(rows) == 0:
        return None
    vals = np.concatenate([pd.to_numeric(rows[c], errors="coerce").to_numpy(float) for c in cols])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return None
    med = float(np.median(vals))
    out: dict[str, Any] = {
        "median_ms": med,
        "noise_rel": float(MAD_TO_STD * np.median(np.abs(vals - med)) / med),
        "p10_ms": float(np.percentile(vals, 10)),
        "p90_ms": float(np.percentile(vals, 90)),
        "n_checks": int(vals.size),
        "n_rows": int(len(rows)),
        "source": "profile rows (ref_before_ms, ref_after_ms)",
    }
    for col in ("threads_intra", "threads_inter", "export_method", "backend", "device"):
        out[col] = _one_value(rows[col]) if col in rows.columns else None
    refs = [(m.get("reference") or {}) for m in (metas or [])]
    ids = {r.get("arch_id") for r in refs}
    out["arch_id"] = ids.pop() if len(ids) == 1 else None
    rules = [(m.get("measurement") or {}).get("reference_stop_rule") for m in (metas or [])]
    out["stop_rule"] = rules[0] if rules and all(r == rules[0] for r in rules) and isinstance(rules[0], dict) else None
    return out


def stored_reference(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The reference latency a predictor's predictions refer to (None = unknown: a predictor
    fitted before references were stored, or on data without reference timings)."""
    ref = meta.get("reference")
    if not isinstance(ref, dict):
        return None
    ms = ref.get("median_ms")
    return ref if isinstance(ms, (int, float)) and math.isfinite(ms) and ms > 0 else None


def calibration_factor(here_ms: float, stored_ms: float) -> float:
    """here / there: > 1 when this machine runs the reference slower. UserError on nonsense."""
    for name, v in (("reference latency here", here_ms), ("stored reference latency", stored_ms)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise UserError(f"{name} must be a positive number of ms, got {v!r}")
    return float(here_ms) / float(stored_ms)


def tolerance(noise_rel: float | None) -> float:
    """Relative difference two reference timings may show on one machine: twice the data's
    spread of one check (about a 95% band), at least :data:`MIN_NOISE_REL`."""
    return max(MIN_NOISE_REL, 2.0 * float(noise_rel or 0.0))


def beyond_noise(factor: float, noise_rel: float | None) -> bool:
    """True when ``factor`` is further from 1 than the reference's noise explains (either way)."""
    return abs(math.log(factor)) > math.log1p(tolerance(noise_rel))
