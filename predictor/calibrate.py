"""Calibration from the reference workload: the pure math, no timing.

Every profile row carries the timing of a fixed reference model (``ref_before_ms`` /
``ref_after_ms``: the checks that opened and closed the row's interval). A predictor keeps its
training data's reference latency (:func:`reference_stats`, stored as ``metadata["reference"]``).
On another machine `moenas calibrate` times the same reference model with the profiler's
method and :func:`calibrated` rescales the predictor by factor = reference here / reference in
the data. That is a pure rescale: it assumes every arch slows down or speeds up like the
reference. Measured on two machines of one kind it removes most of the cross-machine error but
not all (README, "Latency predictors"); `moenas fit --base` with ~20 archs measured here
corrects what the scale cannot.

This module never times anything (the predictor floor may not import the profiler): the
timing is done by the caller (``moenas/commands/calibrate.py``) and handed in as numbers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from moenas.arch import UserError
from moenas.arch.provenance import now_iso

from .models import conformal_halfwidth

# Smallest relative tolerance used when judging whether two reference timings differ: below
# ~2% the comparison is within what one reference check resolves (its stop rule aims at a
# ±2% CI of the median), whatever the data's own spread says.
MIN_NOISE_REL = 0.02
# Robust standard deviation of a normal sample = 1.4826 * median absolute deviation.
MAD_TO_STD = 1.4826


# ---- what a predictor stores at fit time -----------------------------------------------------------


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
        "median_ms": med, "noise_rel": float(MAD_TO_STD * np.median(np.abs(vals - med)) / med),
        "p10_ms": float(np.percentile(vals, 10)), "p90_ms": float(np.percentile(vals, 90)),
        "n_checks": int(vals.size), "n_rows": int(len(rows)), "source": "profile rows (ref_before_ms, ref_after_ms)",
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


def holds_on(meta: dict[str, Any]) -> str | None:
    """Fingerprint id of the machine a predictor's predictions are for: the one it was
    calibrated on, else its data's; None = unknown."""
    cal = meta.get("calibration")
    if isinstance(cal, dict) and cal.get("fingerprint_id"):
        return str(cal["fingerprint_id"])
    fid = meta.get("fingerprint_id")
    return str(fid) if fid else None


def holds_on_fingerprint(meta: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields behind :func:`holds_on` (may be empty)."""
    cal = meta.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("fingerprint"), dict):
        return cal["fingerprint"]
    return meta.get("fingerprint") if isinstance(meta.get("fingerprint"), dict) else {}


# ---- comparing and rescaling ---------------------------------------------------------------------------


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


class ScaledModel(RegressorMixin, BaseEstimator):
    """A fitted latency model times a constant: predictions and intervals (ms) x ``factor``.

    The conformal interval is relative (mean * exp(+-q)), so scaling the mean scales the
    interval and keeps its width in percent: the base model's residuals are reused as they are.
    ``fit`` fits nothing (the factor comes from a reference timing); it exists for the
    scikit-learn contract and returns self."""

    def __init__(self, base: Any = None, factor: float = 1.0):
        self.base = base
        self.factor = factor

    def fit(self, archs=None, y=None):
        if self.base is None:
            raise UserError("a scaled model needs a fitted base model")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise UserError(f"scale factor must be positive and finite, got {self.factor}")
        return self

    @property
    def features_(self):
        return self.base.features_

    @property
    def abs_log_residuals_(self) -> np.ndarray:
        return self.base.abs_log_residuals_

    @property
    def n_train_(self) -> int:
        return int(self.base.n_train_)

    @property
    def chosen_(self) -> str | None:
        return getattr(self.base, "chosen_", None)

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.base.predict_features(X) * self.factor

    def predict(self, archs) -> np.ndarray:
        return self.predict_features(self.features_.transform(archs))

    def predict_interval(self, archs, confidence: float = 0.9):
        mean = self.predict(archs)
        q = conformal_halfwidth(self.abs_log_residuals_, confidence)
        return mean, mean * math.exp(-q), mean * math.exp(q)


def rescaled_model(model: Any, factor: float) -> ScaledModel:
    """``model`` x ``factor``; an already scaled model gets one combined factor (no nesting)."""
    if isinstance(model, ScaledModel):
        return ScaledModel(model.base, float(model.factor) * factor).fit()
    return ScaledModel(model, factor).fit()


def calibrated(pred: Any, here: dict[str, Any], fingerprint: dict[str, Any] | None = None,
               source: str | None = None, when: str | None = None) -> Any:
    """A new Predictor = ``pred`` rescaled to the machine where ``here`` was timed.

    ``here``: the reference timing on this machine, at least ``median_ms`` (also recorded:
    ``ci_rel``, ``n_runs``, ``arch_id``, ``threads_intra``, ``stop_rule``, ``timed_s``).
    ``fingerprint``: this machine's (fingerprint_id + fields). The metadata keeps everything of
    ``pred`` and adds ``calibration`` (factor, reference ms here and there, both fingerprints,
    date); ``reference`` becomes the timing here, so calibrating again composes correctly."""
    from .api import Predictor

    meta = pred.metadata
    stored = stored_reference(meta)
    if stored is None:
        raise UserError(f"{source or 'the predictor'} stores no reference latency (fitted before moenas recorded it, "
                        "or on data without reference timings); refit it with `moenas fit --data ...` on its dataset")
    factor = calibration_factor(float(here["median_ms"]), float(stored["median_ms"]))
    fp = dict(fingerprint or {})
    when = when or now_iso()
    cal = {
        "factor": factor, "reference_ms_here": float(here["median_ms"]), "reference_ms_source": float(stored["median_ms"]),
        "noise_rel": stored.get("noise_rel"), "tolerance_rel": tolerance(stored.get("noise_rel")),
        "beyond_noise": beyond_noise(factor, stored.get("noise_rel")),
        "fingerprint_id": fp.get("fingerprint_id"), "fingerprint": fp,
        "source_fingerprint_id": holds_on(meta), "source_predictor": source,
        "source_model_sha256": meta.get("model_sha256"), "date": when, "here": dict(here),
        "previous": meta.get("calibration"),
        "method": "predictions and intervals x factor; factor = reference model median here / in the data",
    }
    new = {k: v for k, v in meta.items() if k not in ("created", "model_sha256", "versions", "format",
                                                      "format_version", "model_file")}
    new["chosen"] = f"calibrated({meta.get('chosen')})"
    new["description"] = f"calibrated({meta.get('description') or meta.get('chosen')})"
    new["calibration"] = cal
    how = {k: here[k] for k in ("arch_id", "threads_intra", "threads_inter", "stop_rule") if here.get(k) is not None}
    new["reference"] = {**stored, **how, "median_ms": float(here["median_ms"]), "source": "moenas calibrate",
                        "ci_rel": here.get("ci_rel"), "n_runs": here.get("n_runs"), "date": when}
    return Predictor(rescaled_model(pred.model, factor), new)
