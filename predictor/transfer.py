"""Transfer: adapt a latency model fitted on one device to another from a few measured archs.

:class:`TransferModel` corrects the base model's prediction in log space,

    log y_new = log y_base + a + z . beta,

with two corrections fitted side by side and blended:

* ``scale``: z = [log y_base] (the new device is the old one times a constant, to a power);
* ``full``: z = [log y_base, log FLOPs and log bytes of each timed component (encoder and
  decoder; a language model's prefill and decode), layer and expert counts of each stack] (a
  device that weighs FLOPs, bytes or operator counts differently; ``features.transfer_names``).

Each is a ridge regression on z standardised over the few samples, its strength picked from
:data:`RIDGE_GRID` by exact leave-one-out error. Their log predictions are averaged with weights
inversely proportional to each one's jackknife (leave-one-out refit) squared error. Why a blend:
the full correction alone overfits 5-10 archs when the base predictor already ranks the new
device well, and the scale alone cannot bend when it does not. Over the six transfers among the
three shipped tiny datasets the blend lowered the mean MAPE at 5, 10 and 20 archs (10.9 / 9.7 /
8.0% against 11.8 / 10.5 / 8.2% for the full correction alone; ``python
benchmarks/bench_transfer.py --all-pairs --model hybrid --repeats 60``). A one-off exploration
on the same pairs (40 draws, not kept as a benchmark) also tried the scale alone and picking
whichever correction had the lower leave-one-out error: the pick was no better than the full
correction (the choice is noisy at n = 10), and the blend came within 0.5 points of the better
of the two on every pair.

Intervals are jackknife+ (Barber et al. 2021) over the refits without each sample, blended with
the same weights.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from moenas.arch import UserError
from moenas.arch.family import ENCODER_DECODER

from .features import COST_FEATURES, as_archs, family_columns, transfer_names
from .models import LatencyModel, LogTreeModel, conformal_halfwidth

# the encoder-decoder family's; a base of another family uses its own (features.family_columns)
TRANSFER_FEATURES = transfer_names(ENCODER_DECODER)
RIDGE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)


class RidgeCorrection:
    """One log-space correction r = log y - log y_base ~ a + z . beta on the columns ``features``
    (``()``: z = [log y_base] only), with its jackknife refits. Plain object: fitted inside a
    :class:`TransferModel` (n samples, d = 1 + len(features) columns of z)."""

    def __init__(self, features: Sequence[str]):
        self.features = tuple(features)

    def z(self, X: np.ndarray, lb: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """(m, d) columns: log base prediction, then the features (FLOPs and bytes in log)."""
        cols = [lb]
        for f in self.features:
            v = X[:, list(names).index(f)]
            cols.append(np.log(np.maximum(v, 1.0)) if f.startswith(("flops", "bytes")) else v)
        return np.column_stack(cols)

    def fit(self, Z: np.ndarray, r: np.ndarray) -> "RidgeCorrection":
        self.z_mean_, self.z_std_, self.alpha_, self.coef_, self.intercept_, loo = ridge_fit(Z, r)
        self.loo_ = loo
        n = len(r)
        fits = [ridge_fit(Z[np.arange(n) != j], r[np.arange(n) != j]) for j in range(n)]
        zm, zs, _, beta, a = (np.array([f[i] for f in fits]) for i in range(5))
        pred = np.array([a[j] + ((Z[j] - zm[j]) / zs[j]) @ beta[j] for j in range(n)])
        # the whole fit (standardisation and strength included) redone without each sample j:
        # the exact ridge LOO at the chosen strength ignores that the strength was chosen on all
        # samples, and its intervals covered 84% where 90% was asked (13 transfer archs)
        self.jackknife_ = {"z_mean": zm, "z_std": zs, "coef": beta, "intercept": a, "signed": r - pred}
        return self

    def correction(self, Z: np.ndarray) -> np.ndarray:
        """(m,) the fitted log correction."""
        return self.intercept_ + ((Z - self.z_mean_) / self.z_std_) @ self.coef_

    def refit_corrections(self, Z: np.ndarray) -> np.ndarray:
        """(n, m): the log correction of each refit without sample j."""
        jk = self.jackknife_
        return jk["intercept"][:, None] + np.einsum(
            "jmd,jd->jm", (Z[None, :, :] - jk["z_mean"][:, None, :]) / jk["z_std"][:, None, :], jk["coef"]
        )

    @property
    def scale(self) -> float:
        """Exponent of the base prediction in this correction (1 = pure scale)."""
        return float(1.0 + self.coef_[0] / self.z_std_[0])


def ridge_loo(Z: np.ndarray, r: np.ndarray, lam: float) -> tuple[np.ndarray, float, np.ndarray]:
    """(beta, intercept, leave-one-out residuals) of ridge r ~ a + Z beta (Z standardised)."""
    n = len(r)
    Zc = Z - Z.mean(0)
    A = np.column_stack([np.ones(n), Zc])
    P = np.eye(A.shape[1]) * lam
    P[0, 0] = 0.0
    G = np.linalg.solve(A.T @ A + P, A.T)
    coef = G @ r
    H = A @ G
    res = r - A @ coef
    loo = res / np.maximum(1.0 - np.diag(H), 1e-9)
    return coef[1:], float(coef[0] - Z.mean(0) @ coef[1:]), loo


def ridge_fit(Z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float, np.ndarray]:
    """(z mean, z std, strength, beta, intercept, leave-one-out residuals): Z standardised on
    these rows, the ridge strength picked from :data:`RIDGE_GRID` by exact leave-one-out error."""
    zm, zs = Z.mean(0), np.where(Z.std(0) > 1e-12, Z.std(0), 1.0)
    Zs = (Z - zm) / zs
    best = None
    for lam in RIDGE_GRID:
        beta, a, loo = ridge_loo(Zs, r, lam * len(r) / 20)
        err = float(np.mean(loo**2))
        if best is None or err < best[0]:
            best = (err, lam, beta, a, loo)
    return zm, zs, best[1], best[2], best[3], best[4]


class TransferModel(RegressorMixin, BaseEstimator):
    """Adapt a model fitted on one device to another from a few (5-20) measurements (see the
    module docstring). ``features``: z's extra columns of the full correction (``()`` = the
    scale correction alone, no blend; the default :data:`TRANSFER_FEATURES` stands for the same
    list of the base's family, ``features.transfer_names``); ``blend=False``: the full
    correction alone (moenas before 2026-12-03). ``residual=True`` adds a small GBT on what is
    left (>= 10 samples; its interval is then split-conformal on the leave-one-out residuals)."""

    def __init__(
        self,
        base: LatencyModel | None = None,
        features: Sequence[str] = TRANSFER_FEATURES,
        residual: bool = False,
        random_state: int = 0,
        blend: bool = True,
    ):
        self.base = base
        self.features = features
        self.residual = residual
        self.random_state = random_state
        self.blend = blend

    def fit(self, archs, y):
        if self.base is None:
            raise UserError("a transfer needs a base predictor")
        archs = as_archs(archs)
        y = np.asarray(y, dtype=float).ravel()
        if len(y) != len(archs) or len(y) < 3:
            raise UserError(f"a transfer needs at least 3 measured archs on the new device, got {len(y)}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise UserError("latencies must be positive and finite")
        X = self.base.features_.transform(archs)
        lb = np.log(self.base.predict_features(X))
        r = np.log(y) - lb
        names = self.base.features_.feature_names_
        features = tuple(family_columns(self.features, names))
        sets = [features]
        if self.blend and features:
            sets = [(), features]
        self.parts_ = [RidgeCorrection(fs) for fs in sets]
        for p in self.parts_:
            p.fit(p.z(X, lb, names), r)
        mse = np.array([np.mean(p.jackknife_["signed"] ** 2) for p in self.parts_])
        w = 1.0 / np.maximum(mse, 1e-12)
        self.weights_ = w / w.sum()
        signed = sum(wk * p.jackknife_["signed"] for wk, p in self._blend())
        self.residual_model_ = None
        if self.residual and len(y) >= 10:
            ratio = np.exp(r - self._correction(X, lb))
            self.residual_model_ = LogTreeModel(
                "gbt",
                n_estimators=50,
                max_depth=2,
                learning_rate=0.1,
                columns=family_columns(COST_FEATURES, names),
                random_state=self.random_state,
                feature_names=names,
            ).fit(X, ratio)
            loo = sum(wk * p.loo_ for wk, p in self._blend())
            self.abs_log_residuals_ = np.abs(loo)  # the ridge's exact leave-one-out residuals
        else:
            self.abs_log_residuals_ = np.abs(signed)  # jackknife+ residuals
        self.n_train_ = int(len(y))
        self.features_ = self.base.features_
        return self

    def _parts(self) -> list[RidgeCorrection]:
        """The fitted corrections. A model saved before the blend (moenas.predictor.models'
        TransferModel: one full correction in ``coef_``, ``z_mean_``, ...) becomes one part;
        saved before the refits were kept (``jackknife_`` None), its interval is split-conformal."""
        if getattr(self, "parts_", None) is None:
            p = RidgeCorrection(self.features)
            for a in ("z_mean_", "z_std_", "alpha_", "coef_", "intercept_"):
                setattr(p, a, self.__dict__[a])
            p.jackknife_ = self.__dict__.get("jackknife_")
            self.parts_, self.weights_ = [p], np.array([1.0])
        return self.parts_

    def _blend(self) -> list[tuple[float, RidgeCorrection]]:
        """(weight, correction) pairs, the legacy model converted first (see :meth:`_parts`)."""
        parts = self._parts()
        return list(zip(self.weights_, parts))

    def _zs(self, X: np.ndarray, lb: np.ndarray) -> list[np.ndarray]:
        names = self.base.features_.feature_names_
        return [p.z(X, lb, names) for p in self._parts()]

    def _correction(self, X: np.ndarray, lb: np.ndarray) -> np.ndarray:
        """(m,) the blended log correction of the full fits."""
        return sum(wk * p.correction(Z) for (wk, p), Z in zip(self._blend(), self._zs(X, lb)))

    @property
    def scale_(self) -> float:
        """Exponent of the base prediction in the blended correction (1 = pure scale)."""
        return float(sum(wk * p.scale for wk, p in self._blend()))

    @property
    def alpha_(self) -> float:
        """The ridge strength of the full correction (the one with features)."""
        return float(self._parts()[-1].alpha_)

    def describe(self) -> dict[str, Any]:
        """What was fitted, for reports: each correction's weight, ridge strength and scale."""
        return {
            "blend": [
                {
                    "features": list(p.features) or ["scale"],
                    "weight": round(float(wk), 4),
                    "ridge_alpha": p.alpha_,
                    "scale": round(p.scale, 4),
                }
                for wk, p in self._blend()
            ]
        }

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        lb = np.log(self.base.predict_features(X))
        p = np.exp(lb + self._correction(X, lb))
        if self.residual_model_ is not None:
            p = p * self.residual_model_.predict(X)
        return p

    def predict(self, archs) -> np.ndarray:
        return self.predict_features(self.base.features_.transform(archs))

    def predict_interval(self, archs, confidence: float = 0.9):
        """Mean (the full fits) and a jackknife+ interval: the ceil(c (n+1))-th smallest of
        log mu_-j(x) + R_j and the as-large of log mu_-j(x) - R_j over the n refits without
        sample j (mu_-j and R_j blended with the fit's weights). With a residual GBT: the
        split-conformal band mean * exp(+-q) on the leave-one-out residuals."""
        X = self.base.features_.transform(archs)
        mean = self.predict_features(X)
        q = conformal_halfwidth(self.abs_log_residuals_, confidence)  # also checks confidence
        if self.residual_model_ is not None or any(p.jackknife_ is None for p in self._parts()):
            return mean, mean * math.exp(-q), mean * math.exp(q)
        lb = np.log(self.base.predict_features(X))
        mu = lb[None, :] + sum(wk * p.refit_corrections(Z) for (wk, p), Z in zip(self._blend(), self._zs(X, lb)))
        n = len(self.abs_log_residuals_)
        k = min(int(math.ceil((n + 1) * confidence)), n)
        upper = np.sort(mu + self.abs_log_residuals_[:, None], axis=0)[k - 1]
        lower = -np.sort(-(mu - self.abs_log_residuals_[:, None]), axis=0)[k - 1]
        return mean, np.minimum(np.exp(lower), mean), np.maximum(np.exp(upper), mean)
