"""``auto``'s model: a blend of the candidate latency models fitted on their out-of-fold predictions.

Why a blend and not the best candidate: on the shipped datasets the candidate with the lowest
cross-validated MAPE was not reliably the best on held-out archs (with 117 training archs the
CV ranking of hybrid, gbt, rf and flops-linear flips between shuffles), while a blend of them
was better than every single model on average over ten random splits of each shipped dataset
(``benchmarks/bench_auto_choice.py``). This is the super learner / stacked regression recipe
(Breiman 1996; van der Laan et al. 2007), written here because scikit-learn's
``StackingRegressor`` fits its final estimator on raw predictions, while latencies span 10x and
the models are combined best in log space, with weights constrained to a convex combination.

    log y_hat(x) = sum_c w_c log f_c(x),   w_c >= 0,   sum_c w_c = 1,

w minimising sum_i (log y_i - sum_c w_c log f_c^oof(x_i))^2 over the K-fold out-of-fold
predictions f_c^oof (one K-fold: averaging 3 or 5 shuffles was no better on held-out archs in
an exploration on 8-10 splits per shipped dataset). A convex combination
in log space is a weighted geometric mean: it never predicts outside the candidates' range.
Candidates whose weight is below :data:`MIN_WEIGHT` are dropped and the rest renormalised, so
only the candidates that matter are refitted on all the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import lsq_linear
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from .metrics import mape

MIN_WEIGHT = 0.01
_SUM_ROW_WEIGHT = 1e3  # the appended row that holds sum(w) = 1 (an equality constraint lsq_linear lacks)


def oof_predictions(core: Any, X: np.ndarray, y: np.ndarray, folds: int, random_state: int) -> np.ndarray:
    """Out-of-fold predictions of ``core`` (a fresh clone per fold), shape (n,): K-fold with
    K = min(folds, n) (at least 2), shuffled by ``random_state``."""
    n = len(y)
    k = max(2, min(folds, n))
    pred = np.empty(n)
    for tr, te in KFold(k, shuffle=True, random_state=random_state).split(X):
        pred[te] = clone(core).fit(X[tr], y[tr]).predict(X[te])
    return pred


def simplex_weights(L: np.ndarray, target: np.ndarray) -> np.ndarray:
    """w >= 0 with sum(w) = 1 minimising ||L w - target||^2; L (n, c), target (n,).
    The sum is held by one heavily weighted extra row (exact to ~1e-6 at this weight)."""
    A = np.vstack([L, np.full((1, L.shape[1]), _SUM_ROW_WEIGHT)])
    b = np.append(target, _SUM_ROW_WEIGHT)
    w = np.clip(lsq_linear(A, b, bounds=(0.0, 1.0)).x, 0.0, None)
    return w / w.sum()


class StackedModel(RegressorMixin, BaseEstimator):
    """Weighted geometric mean of ``cores`` (name -> unfitted core), weights from their
    out-of-fold predictions (module docstring). After ``fit``: ``weights_`` (name -> w, the kept
    ones), ``cv_scores_`` (name -> out-of-fold MAPE %, every candidate and ``"stack"``),
    ``oof_pred_`` (the blend's out-of-fold predictions, ms, for the interval calibration; the
    weights saw them, which makes that calibration slightly optimistic: the benchmark reports
    the coverage on held-out archs) and ``fitted_`` (name -> core refitted on all rows)."""

    def __init__(self, cores: dict[str, Any] | None = None, folds: int = 5, random_state: int = 0):
        self.cores = cores
        self.folds = folds
        self.random_state = random_state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True  # latencies, blended in log space
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> StackedModel:
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        cores = self._named_cores()
        cands = list(cores)
        if not cands:
            raise ValueError("a stack needs at least one candidate model")
        logs = np.column_stack(
            [np.log(oof_predictions(cores[c], X, y, self.folds, self.random_state)) for c in cands]
        )  # (n, c)
        w = simplex_weights(logs, np.log(y))
        keep = w >= MIN_WEIGHT
        w = np.where(keep, w, 0.0) / w[keep].sum()
        self.oof_pred_ = np.exp(logs @ w)
        self.cv_scores_ = {
            **{c: mape(y, np.exp(logs[:, j])) for j, c in enumerate(cands)},
            "stack": mape(y, self.oof_pred_),
        }
        self.weights_ = {c: float(w[j]) for j, c in enumerate(cands) if keep[j]}
        self.fitted_ = {c: clone(cores[c]).fit(X, y) for c in self.weights_}
        return self

    def _named_cores(self) -> dict[str, Any]:
        """``cores``, each one that takes ``feature_names`` and has none given those of the
        DataFrame fitted on (the stack passes its candidates the checked array, without names)."""
        names = getattr(self, "feature_names_in_", None)
        out = {}
        for c, core in (self.cores or {}).items():
            params = core.get_params(deep=False)
            if names is not None and "feature_names" in params and params["feature_names"] is None:
                core = clone(core).set_params(feature_names=list(names))
            out[c] = core
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Latency (ms), shape (len(X),)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        log = sum(w * np.log(self.fitted_[c].predict(X)) for c, w in self.weights_.items())
        return np.exp(log)

    def describe(self) -> str:
        """'stack(gbt 0.55, hybrid 0.45)': the kept candidates and their weights, largest first."""
        parts = sorted(self.weights_.items(), key=lambda kv: -kv[1])
        return "stack(" + ", ".join(f"{c} {w:.2f}" for c, w in parts) + ")"
