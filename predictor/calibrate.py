"""The model a calibration produces: a fitted latency model times one constant factor.

`moenas calibrate` (:func:`moenas.predictor.calibration.calibrated`) wraps a predictor's model
in :class:`ScaledModel`; the factor is the reference model's latency here / in the predictor's
data (:mod:`moenas.data.reference`). The class stays at this path because a saved predictor
names its model's types by their module: calibrated predictor files say
``moenas.predictor.calibrate.ScaledModel``, a type ``persist.trusted_types()`` lets load.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from moenas.arch import UserError

from .models import widened


class ScaledModel(RegressorMixin, BaseEstimator):
    """A fitted latency model times a constant: predictions and intervals (ms) x ``factor``.

    The conformal interval is relative (mean * exp(+-q)), so scaling the mean scales the
    interval and keeps its width in percent: the base model's residuals are reused as they are.
    ``log_sd``: the factor's own uncertainty, a standard deviation of log(factor); the interval
    at confidence c widens to mean * exp(+-sqrt(q^2 + (z_c * log_sd)^2)), z_c the normal quantile
    of (1 + c) / 2 (the base model's error and the factor's add as independent errors in log
    space). ``fit`` fits nothing (the factor comes from a reference timing); it exists for the
    scikit-learn contract and returns self."""

    def __init__(self, base: Any = None, factor: float = 1.0, log_sd: float = 0.0):
        self.base = base
        self.factor = factor
        self.log_sd = log_sd

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({"log_sd": 0.0, **state})  # files saved before log_sd existed: no widening

    def fit(self, archs=None, y=None):
        if self.base is None:
            raise UserError("a scaled model needs a fitted base model")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise UserError(f"scale factor must be positive and finite, got {self.factor}")
        if not (math.isfinite(self.log_sd) and self.log_sd >= 0):
            raise UserError(f"the factor's log standard deviation must be >= 0 and finite, got {self.log_sd}")
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
        """The base model's interval (its own kind: split-conformal, or a transfer's jackknife+)
        times the factor, widened by the factor's uncertainty ``log_sd``."""
        mean, lo, hi = (np.asarray(v) * self.factor for v in self.base.predict_interval(archs, confidence))
        lo, hi = widened(mean, lo, hi, self.log_sd, confidence)
        return mean, lo, hi


def rescaled_model(model: Any, factor: float, log_sd: float = 0.0) -> ScaledModel:
    """``model`` x ``factor`` (of uncertainty ``log_sd``); an already scaled model gets one
    combined factor (no nesting) whose uncertainties add in quadrature."""
    if isinstance(model, ScaledModel):
        return ScaledModel(model.base, float(model.factor) * factor, math.hypot(model.log_sd, log_sd)).fit()
    return ScaledModel(model, factor, log_sd).fit()
