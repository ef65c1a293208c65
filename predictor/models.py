"""Latency models: scikit-learn estimators from a list of Arch to milliseconds, with intervals.

Every model follows the scikit-learn conventions (parameters in ``__init__``, fitted attributes
end in ``_``, ``fit`` returns self) and the same contract, checked by one parametrised test over
:data:`MODELS`:

- ``fit(archs, y_ms)``; ``predict(archs) -> mean_ms``;
- ``predict_interval(archs, confidence=0.9) -> (mean, lower, upper)``, lower <= mean <= upper.

Intervals are split-conformal on relative (log-ratio) residuals, with cross-validation
standing in for a held-out calibration split (CV+ style): ``fit`` refits the model on K-1 folds
K times, keeps the out-of-fold |log(y / y_hat)|, and the interval at confidence c is
y_hat * exp(±q) with q the ceil((n+1)c)-th smallest residual. The width is thus relative,
which matches latencies spanning 10x; its real coverage is what ``evaluate`` reports.

Models (the core estimators work on the full feature matrix of :class:`ArchFeatures`):

``flops-linear``  latency = c0 + sum_i a_i FLOPs_i + b_i bytes_i per component (encoder,
                  decoder), non-negative, least squares on relative error: the roofline baseline.
``hat-mlp``       HAT's MLP on HAT's 10 features only, scaled by their max, 3 hidden ReLU layers
                  of 400, MSE on latency / mean latency (HAT: / 200 ms); Adam at 1e-3, <= 300
                  epochs with early stop (faster than HAT's recipe, and no expert features).
``automoe-mlp``   AutoMoE's predictor as its code runs it: the same MLP on HAT's 10 features plus
                  the mean expert count of each side, Adam 1e-5, 5000 steps of 128, no early stop.
``gbt``           gradient-boosted trees on all features, log latency.
``rf``            random forest on all features, log latency.
``hybrid``        flops-linear times exp(GBT on the log-ratio residual).
``stack``         a weighted geometric mean of flops-linear, gbt, rf and hybrid, the weights
                  fitted on their K-fold out-of-fold predictions (moenas.predictor.stacking).
``auto``          the recommended model: today ``stack``. Picking the single candidate with the
                  best CV MAPE was measured against it and lost on both shipped spaces
                  (benchmarks/bench_auto_choice.py).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import MaxAbsScaler

from moenas.arch import UserError
from moenas.arch.protocol import LatencyProtocol

from .metrics import mape
from .names import MODELS
from .stacking import StackedModel, oof_predictions
from .features import COST_FEATURES, GROUPS, HAT_FEATURES, ArchFeatures, as_archs, upgrade_protocol

MIN_TRAIN = 8  # archs; fewer cannot be cross-validated for the interval
# the stack's default candidates: the MLPs are left out (the published baselines, ~10-100x slower to
# fit and never better here); pass candidates=... to include them.
AUTO_CANDIDATES = ("flops-linear", "gbt", "rf", "hybrid")
# rows per call to a tree ensemble's predict: small enough to stay in cache, large enough that
# scikit-learn's per-call overhead (input checks) is negligible; measured best of 1k-100k.
TREE_CHUNK = 16384


# ---- core regressors on a feature matrix ---------------------------------------------------------


class ColumnModel(RegressorMixin, BaseEstimator):
    """Base for the cores: they receive the full feature matrix plus its column names."""

    def _cols(self, names: Sequence[str], wanted: Sequence[str]) -> list[int]:
        missing = [w for w in wanted if w not in names]
        if missing:
            raise UserError(f"features {', '.join(missing)} are missing")
        return [list(names).index(w) for w in wanted]


class RooflineLinear(ColumnModel):
    """latency = c0 + sum_j w_j x_j, w >= 0, c0 >= 0, minimising squared *relative* error.

    x = FLOPs and bytes of the encoder and decoder (in GFLOP / GB so the solver is well scaled)."""

    def __init__(self, columns: Sequence[str] = ("flops_encoder", "bytes_encoder", "flops_decoder", "bytes_decoder")):
        self.columns = columns

    def fit(self, X, y, names=None):
        self.idx_ = self._cols(names, self.columns)
        Z = X[:, self.idx_] / 1e9
        Z1 = np.column_stack([np.ones(len(Z)), Z])
        w = 1.0 / np.asarray(y)  # rows scaled by 1/y: least squares on relative error
        from scipy.optimize import nnls

        coef, _ = nnls(Z1 * w[:, None], np.ones(len(y)))
        self.intercept_ = float(coef[0])
        self.coef_ = coef[1:]
        return self

    def predict(self, X):
        p = self.intercept_ + (X[:, self.idx_] / 1e9) @ self.coef_
        return np.maximum(p, 1e-6)


class LogTreeModel(ColumnModel):
    """Trees (``kind`` = gbt | rf) on log latency, on all columns or ``columns``."""

    def __init__(self, kind: str = "gbt", n_estimators: int = 400, learning_rate: float = 0.05, max_depth: int | None = 4,
                 min_samples_leaf: int = 2, subsample: float = 0.8, max_features: float | str | None = 0.5,
                 columns: Sequence[str] | None = None, random_state: int = 0):
        self.kind = kind
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.max_features = max_features
        self.columns = columns
        self.random_state = random_state

    def _make(self):
        if self.kind == "gbt":
            return GradientBoostingRegressor(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                             max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                             subsample=self.subsample, max_features=self.max_features,
                                             random_state=self.random_state)
        if self.kind == "rf":
            return RandomForestRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
                                         n_jobs=1, random_state=self.random_state)
        raise UserError(f"unknown tree kind {self.kind!r}")

    def fit(self, X, y, names=None):
        self.idx_ = list(range(X.shape[1])) if self.columns is None else self._cols(names, self.columns)
        self.model_ = self._make().fit(X[:, self.idx_], np.log(y))
        return self

    def predict(self, X):
        """exp(trees), computed TREE_CHUNK rows at a time: scikit-learn runs an ensemble one tree
        at a time over all the rows it is given, so 100k rows (40 MB) would be re-read from memory
        for each of the 400 trees; a chunk stays in cache. Same numbers, ~1.5x the throughput."""
        Xs = X if np.array_equal(self.idx_, np.arange(X.shape[1])) else X[:, self.idx_]  # no copy of all columns
        out = np.empty(len(Xs))
        for i in range(0, len(Xs), TREE_CHUNK):
            out[i:i + TREE_CHUNK] = self.model_.predict(Xs[i:i + TREE_CHUNK])
        return np.exp(out)


AUTOMOE_FEATURES = HAT_FEATURES + ["moe.enc_experts_mean", "moe.dec_experts_mean"]


class HatMLP(ColumnModel):
    """HAT's latency MLP: features / max (HAT: fixed norms [640, 6, 2048, ...]), ReLU layers of
    400, MSE on latency / lat_norm (HAT: 200 ms; here the training mean).

    ``features="hat"``: HAT's 10 features; ``"automoe"``: plus the mean expert count of each
    side (AutoMoE's predictor). ``steps``: train for this many Adam steps of ``batch`` archs with
    no early stop (HAT's code: 5000 of 128); None: at most ``max_iter`` epochs, stopping when the
    training loss stalls (the faster variant ``hat-mlp`` uses)."""

    def __init__(self, hidden_layer_sizes: Sequence[int] = (400, 400, 400), max_iter: int = 300,
                 learning_rate_init: float = 1e-3, random_state: int = 0, features: str = "hat",
                 steps: int | None = None, batch: int = 128):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.random_state = random_state
        self.features = features
        self.steps = steps
        self.batch = batch

    def fit(self, X, y, names=None):
        self.idx_ = self._cols(names, AUTOMOE_FEATURES if self.features == "automoe" else HAT_FEATURES)
        self.scaler_ = MaxAbsScaler().fit(X[:, self.idx_])
        self.lat_norm_ = float(np.mean(y))
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        batch = min(self.batch, len(y))
        if self.steps:  # sklearn counts epochs: steps / batches per epoch, never stopping early
            epochs = max(1, math.ceil(self.steps / math.ceil(len(y) / batch)))
            stop = dict(max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1)
        else:
            stop = dict(max_iter=self.max_iter, tol=1e-7, n_iter_no_change=50)
        self.mlp_ = MLPRegressor(hidden_layer_sizes=tuple(self.hidden_layer_sizes), activation="relu", solver="adam",
                                 learning_rate_init=self.learning_rate_init, batch_size=batch,
                                 random_state=self.random_state, **stop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp_.fit(self.scaler_.transform(X[:, self.idx_]), np.asarray(y) / self.lat_norm_)
        return self

    def predict(self, X):
        p = self.mlp_.predict(self.scaler_.transform(X[:, self.idx_])) * self.lat_norm_
        return np.maximum(p, 1e-3 * self.lat_norm_)


class HybridModel(ColumnModel):
    """The analytical (roofline) model times a learned correction: GBT on log(y / base)."""

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, max_depth: int = 3,
                 random_state: int = 0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.random_state = random_state

    def fit(self, X, y, names=None):
        self.base_ = RooflineLinear().fit(X, y, names)
        ratio = np.asarray(y) / self.base_.predict(X)
        self.residual_ = LogTreeModel("gbt", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                                      max_depth=self.max_depth, random_state=self.random_state).fit(X, ratio, names)
        return self

    def predict(self, X):
        return self.base_.predict(X) * self.residual_.predict(X)


def make_core(name: str, random_state: int = 0, **params) -> ColumnModel:
    if name == "flops-linear":
        return RooflineLinear(**params)
    if name == "hat-mlp":
        return HatMLP(random_state=random_state, **params)
    if name == "automoe-mlp":  # AutoMoE's recipe, faithfully: HAT's code's hyper-parameters + expert counts
        return HatMLP(random_state=random_state, **{"features": "automoe", "learning_rate_init": 1e-5, "steps": 5000, **params})
    if name == "gbt":
        return LogTreeModel("gbt", random_state=random_state, **params)
    if name == "rf":
        defaults = dict(n_estimators=200, max_depth=None, min_samples_leaf=1, max_features=0.5)
        return LogTreeModel("rf", random_state=random_state, **{**defaults, **params})
    if name == "hybrid":
        return HybridModel(random_state=random_state, **params)
    if name in ("stack", "auto"):
        cands = params.pop("candidates", AUTO_CANDIDATES)
        return StackedModel(cores={c: make_core(c, random_state) for c in cands}, random_state=random_state, **params)
    raise UserError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")


# ---- conformal intervals -------------------------------------------------------------------------


def conformal_halfwidth(abs_log_residuals: np.ndarray, confidence: float) -> float:
    """Half-width q in log space: the ceil((n+1)c)-th smallest |log(y/y_hat)| (capped at the max)."""
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be in (0, 1), got {confidence}")
    r = np.sort(np.asarray(abs_log_residuals, dtype=float))
    if r.size == 0:
        return math.inf
    k = min(int(math.ceil((r.size + 1) * confidence)), r.size)
    return float(r[k - 1])


# ---- the public estimator -------------------------------------------------------------------------


class LatencyModel(RegressorMixin, BaseEstimator):
    """Arch list -> latency (ms) with a conformal interval. ``model`` names the core (see the
    module docstring); ``protocol``/``space`` configure the features; ``folds`` is K for the
    interval calibration (and for ``auto``'s choice); ``params`` go to the core."""

    def __init__(self, model: str = "gbt", protocol: LatencyProtocol | None = None, space: str | None = None,
                 folds: int = 5, random_state: int = 0, params: dict | None = None,
                 candidates: Sequence[str] = AUTO_CANDIDATES):
        self.model = model
        self.protocol = protocol
        self.space = space
        self.folds = folds
        self.random_state = random_state
        self.params = params
        self.candidates = candidates

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(upgrade_protocol(state, "protocol"))

    def _check_y(self, archs: list, y) -> np.ndarray:
        y = np.asarray(y, dtype=float).ravel()
        if len(archs) != len(y):
            raise UserError(f"{len(archs)} archs but {len(y)} latencies")
        if len(y) < MIN_TRAIN:
            raise UserError(f"need at least {MIN_TRAIN} measured archs to fit a predictor, got {len(y)}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise UserError("latencies must be positive and finite")
        return y

    def fit(self, archs, y):
        archs = as_archs(archs)
        y = self._check_y(archs, y)
        if self.model not in MODELS:
            raise UserError(f"unknown model {self.model!r} (choose from {', '.join(MODELS)})")
        self.features_ = ArchFeatures(protocol=self.protocol, space=self.space, groups=GROUPS).fit(archs)
        X = self.features_.transform(archs)
        names = self.features_.feature_names_
        core = make_core(self.model, self.random_state, **self._core_params())
        if isinstance(core, StackedModel):  # its weights come from out-of-fold predictions it makes anyway
            self.core_ = core.fit(X, y, names)
            oof, self.cv_scores_, self.chosen_ = core.oof_pred_, core.cv_scores_, "stack"
        else:
            oof = oof_predictions(core, X, y, names, self.folds, self.random_state)
            self.cv_scores_ = {self.model: mape(y, oof)}
            self.core_, self.chosen_ = core.fit(X, y, names), self.model
        self.oof_pred_ = oof
        self.abs_log_residuals_ = np.abs(np.log(y / oof))
        self.n_train_ = int(len(y))
        return self

    def _core_params(self) -> dict[str, Any]:
        """The core's settings: ``params``, plus for the stack its candidates, K and seed."""
        params = dict(self.params or {})
        if self.model in ("stack", "auto"):
            params = {"candidates": tuple(self.candidates), "folds": self.folds, **params}
        return params

    @property
    def description_(self) -> str:
        """What was fitted, for reports: the model name, or the stack with its weights."""
        core = self.core_
        return core.describe() if isinstance(core, StackedModel) else self.chosen_

    def predict(self, archs) -> np.ndarray:
        return self.core_.predict(self.features_.transform(archs))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        return self.core_.predict(X)

    def predict_interval(self, archs, confidence: float = 0.9):
        mean = self.predict(archs)
        q = conformal_halfwidth(self.abs_log_residuals_, confidence)
        return mean, mean * math.exp(-q), mean * math.exp(q)


TRANSFER_FEATURES = ("flops_encoder", "flops_decoder", "bytes_encoder", "bytes_decoder", "hat.enc_layers",
                     "hat.dec_layers", "moe.enc_experts_total", "moe.dec_experts_total")
RIDGE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)


class TransferModel(RegressorMixin, BaseEstimator):
    """Adapt a model fitted on one device to another from a few (~20) measurements.

    log y_new = log y_base + a + z . beta, where z = [log y_base, log FLOPs and log bytes of the
    encoder and decoder, layer counts, expert counts] standardised on the few samples. beta is
    ridge-shrunk towards 0 (= "the new device is the old one times a constant"), the strength
    picked from a grid by exact leave-one-out error, so with very few or very consistent samples
    the correction stays a scale, and with a device that weighs FLOPs, bytes or operator counts
    differently it bends accordingly. ``features`` chooses z's extra columns (``()`` = scale +
    power of the base prediction only). The interval is recalibrated from the leave-one-out
    residuals of the chosen fit. ``residual=True`` adds a small GBT on what is left (>= 10 samples).
    """

    def __init__(self, base: LatencyModel | None = None, features: Sequence[str] = TRANSFER_FEATURES,
                 residual: bool = False, random_state: int = 0):
        self.base = base
        self.features = features
        self.residual = residual
        self.random_state = random_state

    def _z(self, X: np.ndarray, lb: np.ndarray) -> np.ndarray:
        names = self.base.features_.feature_names_
        cols = [lb]
        for f in self.features:
            v = X[:, names.index(f)]
            cols.append(np.log(np.maximum(v, 1.0)) if f.startswith(("flops", "bytes")) else v)
        return np.column_stack(cols)

    @staticmethod
    def _ridge_loo(Z: np.ndarray, r: np.ndarray, lam: float) -> tuple[np.ndarray, float, np.ndarray]:
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
        Z, r = self._z(X, lb), np.log(y) - lb
        self.z_mean_, self.z_std_, self.alpha_, self.coef_, self.intercept_, loo = self._ridge_fit(Z, r)
        self.residual_model_ = None
        if self.residual and len(y) >= 10:
            ratio = np.exp(r - (self.intercept_ + (Z - self.z_mean_) / self.z_std_ @ self.coef_))
            self.residual_model_ = LogTreeModel("gbt", n_estimators=50, max_depth=2, learning_rate=0.1,
                                                columns=list(COST_FEATURES), random_state=self.random_state).fit(
                X, ratio, self.base.features_.feature_names_)
        self.jackknife_ = None if self.residual_model_ is not None else self._jackknife(Z, r)
        if self.jackknife_ is not None:
            self.abs_log_residuals_ = self.jackknife_["residuals"]
        else:  # the ridge's exact leave-one-out residuals at the chosen strength
            self.abs_log_residuals_ = np.abs(loo)
        self.n_train_ = int(len(y))
        self.features_ = self.base.features_
        return self

    def _ridge_fit(self, Z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float, np.ndarray]:
        """(z mean, z std, strength, beta, intercept, leave-one-out residuals): Z standardised on
        these rows, the ridge strength picked from :data:`RIDGE_GRID` by exact leave-one-out error."""
        zm, zs = Z.mean(0), np.where(Z.std(0) > 1e-12, Z.std(0), 1.0)
        Zs = (Z - zm) / zs
        best = None
        for lam in RIDGE_GRID:
            beta, a, loo = self._ridge_loo(Zs, r, lam * len(r) / 20)
            err = float(np.mean(loo ** 2))
            if best is None or err < best[0]:
                best = (err, lam, beta, a, loo)
        return zm, zs, best[1], best[2], best[3], best[4]

    def _jackknife(self, Z: np.ndarray, r: np.ndarray) -> dict[str, np.ndarray]:
        """The whole fit (standardisation and strength included) redone without each sample j:
        its parameters and |residual| on j. The exact ridge LOO at the chosen strength ignores
        that the strength was chosen on all samples, and its intervals covered 84% where 90% was
        asked (13 transfer archs, benchmarks/bench_transfer_coverage.py); jackknife+ over these
        refits is what ``predict_interval`` uses (Barber et al. 2021: coverage >= 1 - 2 alpha
        in theory, about nominal in practice)."""
        n = len(r)
        fits = [self._ridge_fit(Z[np.arange(n) != j], r[np.arange(n) != j]) for j in range(n)]
        zm, zs, _, beta, a = (np.array([f[i] for f in fits]) for i in range(5))
        loo = np.array([a[j] + ((Z[j] - zm[j]) / zs[j]) @ beta[j] for j in range(n)])
        return {"z_mean": zm, "z_std": zs, "coef": beta, "intercept": a, "residuals": np.abs(r - loo)}

    @property
    def scale_(self) -> float:
        """Exponent of the base prediction in the correction (1 = pure scale)."""
        return float(1.0 + self.coef_[0] / self.z_std_[0])

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        lb = np.log(self.base.predict_features(X))
        Zs = (self._z(X, lb) - self.z_mean_) / self.z_std_
        p = np.exp(lb + self.intercept_ + Zs @ self.coef_)
        if self.residual_model_ is not None:
            p = p * self.residual_model_.predict(X)
        return p

    def predict(self, archs) -> np.ndarray:
        return self.predict_features(self.base.features_.transform(archs))

    def predict_interval(self, archs, confidence: float = 0.9):
        """Mean (the full fit) and a jackknife+ interval: the ceil(c (n+1))-th smallest of
        log mu_-j(x) + R_j and the as-large of log mu_-j(x) - R_j over the n refits without
        sample j. Models saved before moenas kept the refits, or with a residual GBT: the
        split-conformal band mean * exp(+-q) on the leave-one-out residuals."""
        X = self.base.features_.transform(archs)
        mean = self.predict_features(X)
        jk = getattr(self, "jackknife_", None)
        if jk is None:
            q = conformal_halfwidth(self.abs_log_residuals_, confidence)
            return mean, mean * math.exp(-q), mean * math.exp(q)
        conformal_halfwidth(jk["residuals"], confidence)  # the same check of confidence
        lb = np.log(self.base.predict_features(X))
        Z = self._z(X, lb)  # (m, d)
        mu = lb[None, :] + jk["intercept"][:, None] + np.einsum(
            "jmd,jd->jm", (Z[None, :, :] - jk["z_mean"][:, None, :]) / jk["z_std"][:, None, :], jk["coef"])  # (n, m)
        n = len(jk["residuals"])
        k = min(int(math.ceil((n + 1) * confidence)), n)
        upper = np.sort(mu + jk["residuals"][:, None], axis=0)[k - 1]
        lower = -np.sort(-(mu - jk["residuals"][:, None]), axis=0)[k - 1]
        return mean, np.minimum(np.exp(lower), mean), np.maximum(np.exp(upper), mean)


def make_model(name: str, protocol: LatencyProtocol | None = None, space: str | None = None, folds: int = 5,
               random_state: int = 0, params: dict[str, Any] | None = None) -> LatencyModel:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r} (choose from {', '.join(MODELS)})")
    return LatencyModel(model=name, protocol=protocol, space=space, folds=folds, random_state=random_state,
                        params=params)
