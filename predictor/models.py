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

A model joins in one place: a factory decorated with :func:`register_model`, which also names
the classes its fitted core holds (the types a predictor file of it may contain, see
:mod:`moenas.predictor.persist`). ``names.MODELS`` repeats the names so that the CLI's --help
needs no scikit-learn; a test holds the two equal, and scikit-learn's estimator checks run on
every registered core (tests/predictor/test_sklearn_checks.py). A core receives the feature
matrix, and the names of its columns as its ``feature_names`` parameter.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
from sklearn.preprocessing import MaxAbsScaler
from sklearn.tree._tree import Tree
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

from moenas.arch import UserError
from moenas.arch.protocol import LatencyProtocol

from .features import GROUPS, HAT_FEATURES, ArchFeatures, as_archs, family_columns, roofline_names, upgrade_protocol
from .metrics import mape
from .names import MODELS  # noqa: F401 - re-exported: callers list the models from here
from .stacking import StackedModel, oof_predictions

MIN_TRAIN = 8  # archs; fewer cannot be cross-validated for the interval
# the stack's default candidates: the MLPs are left out (the published baselines, ~10-100x slower to
# fit and never better here); pass candidates=... to include them.
AUTO_CANDIDATES = ("flops-linear", "gbt", "rf", "hybrid")
# rows per call to a tree ensemble's predict: small enough to stay in cache, large enough that
# scikit-learn's per-call overhead (input checks) is negligible; measured best of 1k-100k.
TREE_CHUNK = 16384


# ---- core regressors on a feature matrix ---------------------------------------------------------

# the encoder-decoder family's; a matrix of another family's features uses its own (features.family_columns)
ROOFLINE_COLUMNS = roofline_names()


class ColumnModel(RegressorMixin, BaseEstimator):
    """Base for the cores: a regressor on a feature matrix that may use only some columns, picked
    by name. The names come the scikit-learn way: the ``feature_names`` parameter (what
    :func:`make_core` passes), else the columns of a DataFrame given to ``fit``
    (``feature_names_in_``). y must be positive (latencies)."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True  # latencies: the cores fit log y or the error relative to y
        return tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A file saved before a parameter existed lacks it: it takes its default. The loaded
        core predicts from its fitted state as saved; the defaults let it clone and print."""
        params = inspect.signature(type(self).__init__).parameters.values()
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        super().__setstate__({**defaults, **state})

    def _fit_input(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """X and y checked (and n_features_in_, feature_names_in_ set) as scikit-learn does."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if np.any(y <= 0):
            raise ValueError(f"{type(self).__name__} fits latencies: y must be positive")
        return X, y

    def _predict_input(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def _names(self) -> list[str] | None:
        """The column names: ``feature_names``, else those of the DataFrame fitted on (or None)."""
        names = self.feature_names if self.feature_names is not None else getattr(self, "feature_names_in_", None)
        return None if names is None else list(names)

    def _cols(self, wanted: Sequence[str] | None) -> list[int]:
        """Indices of the ``wanted`` columns of the matrix being fitted; None: all of them."""
        if wanted is None:
            return list(range(self.n_features_in_))
        names = self._names()
        if names is None or len(names) != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__} picks columns by name: pass feature_names (one per column) "
                "or fit on a DataFrame"
            )
        wanted = family_columns(wanted, names)  # a default list names the encoder-decoder family's columns
        missing = [w for w in wanted if w not in names]
        if missing:
            raise UserError(f"features {', '.join(missing)} are missing")
        return [names.index(w) for w in wanted]


class RooflineLinear(ColumnModel):
    """latency = c0 + sum_j w_j x_j, w >= 0, c0 >= 0, minimising squared *relative* error.

    x = ``columns``: by default FLOPs and bytes of the encoder and decoder (in GFLOP / GB so the
    solver is well scaled); None: every column."""

    def __init__(self, columns: Sequence[str] | None = ROOFLINE_COLUMNS, feature_names: Sequence[str] | None = None):
        self.columns = columns
        self.feature_names = feature_names

    def fit(self, X: Any, y: Any) -> RooflineLinear:
        X, y = self._fit_input(X, y)
        self.idx_ = self._cols(self.columns)
        Z = X[:, self.idx_] / 1e9
        Z1 = np.column_stack([np.ones(len(Z)), Z])
        w = 1.0 / y  # rows scaled by 1/y: least squares on relative error
        from scipy.optimize import nnls

        coef, _ = nnls(Z1 * w[:, None], np.ones(len(y)))
        self.intercept_ = float(coef[0])
        self.coef_ = coef[1:]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = self._predict_input(X)
        p = self.intercept_ + (X[:, self.idx_] / 1e9) @ self.coef_
        return np.maximum(p, 1e-6)


class LogTreeModel(ColumnModel):
    """Trees (``kind`` = gbt | rf) on log latency, on all columns or ``columns``."""

    def __init__(
        self,
        kind: str = "gbt",
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        max_depth: int | None = 4,
        min_samples_leaf: int = 2,
        subsample: float = 0.8,
        max_features: float | str | None = 0.5,
        columns: Sequence[str] | None = None,
        random_state: int = 0,
        feature_names: Sequence[str] | None = None,
    ):
        self.kind = kind
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.max_features = max_features
        self.columns = columns
        self.random_state = random_state
        self.feature_names = feature_names

    def _make(self) -> GradientBoostingRegressor | RandomForestRegressor:
        if self.kind == "gbt":
            return GradientBoostingRegressor(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                max_depth=self.max_depth,
                min_samples_leaf=self.min_samples_leaf,
                subsample=self.subsample,
                max_features=self.max_features,
                random_state=self.random_state,
            )
        if self.kind == "rf":
            return RandomForestRegressor(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                n_jobs=1,
                random_state=self.random_state,
            )
        raise UserError(f"unknown tree kind {self.kind!r}")

    def fit(self, X: Any, y: Any) -> LogTreeModel:
        X, y = self._fit_input(X, y)
        self.idx_ = self._cols(self.columns)
        self.model_ = self._make().fit(X[:, self.idx_], np.log(y))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """exp(trees), computed TREE_CHUNK rows at a time: scikit-learn runs an ensemble one tree
        at a time over all the rows it is given, so 100k rows (40 MB) would be re-read from memory
        for each of the 400 trees; a chunk stays in cache. Same numbers, ~1.5x the throughput."""
        X = self._predict_input(X)
        Xs = X if np.array_equal(self.idx_, np.arange(X.shape[1])) else X[:, self.idx_]  # no copy of all columns
        out = np.empty(len(Xs))
        for i in range(0, len(Xs), TREE_CHUNK):
            out[i : i + TREE_CHUNK] = self.model_.predict(Xs[i : i + TREE_CHUNK])
        return np.exp(out)


AUTOMOE_FEATURES = HAT_FEATURES + ["moe.enc_experts_mean", "moe.dec_experts_mean"]
# HatMLP's ``features``: the columns each choice feeds the MLP (None: every column)
MLP_FEATURES: dict[str, list[str] | None] = {"hat": HAT_FEATURES, "automoe": AUTOMOE_FEATURES, "all": None}


class HatMLP(ColumnModel):
    """HAT's latency MLP: features / max (HAT: fixed norms [640, 6, 2048, ...]), ReLU layers of
    400, MSE on latency / lat_norm (HAT: 200 ms; here the training mean).

    ``features="hat"``: HAT's 10 features; ``"automoe"``: plus the mean expert count of each
    side (AutoMoE's predictor); ``"all"``: every column. ``steps``: train for this many Adam
    steps of ``batch`` archs with no early stop (HAT's code: 5000 of 128); None: at most
    ``max_iter`` epochs, stopping when the training loss stalls (the faster variant ``hat-mlp``
    uses)."""

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (400, 400, 400),
        max_iter: int = 300,
        learning_rate_init: float = 1e-3,
        random_state: int = 0,
        features: str = "hat",
        steps: int | None = None,
        batch: int = 128,
        feature_names: Sequence[str] | None = None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.random_state = random_state
        self.features = features
        self.steps = steps
        self.batch = batch
        self.feature_names = feature_names

    def fit(self, X: Any, y: Any) -> HatMLP:
        X, y = self._fit_input(X, y)
        if self.features not in MLP_FEATURES:
            raise UserError(f"unknown MLP features {self.features!r} (choose from {', '.join(MLP_FEATURES)})")
        self.idx_ = self._cols(MLP_FEATURES[self.features])
        self.scaler_ = MaxAbsScaler().fit(X[:, self.idx_])
        self.lat_norm_ = float(np.mean(y))
        self.mlp_ = self._mlp(len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp_.fit(self.scaler_.transform(X[:, self.idx_]), y / self.lat_norm_)
        self.n_iter_ = self.mlp_.n_iter_
        return self

    def _mlp(self, n: int) -> MLPRegressor:
        """The unfitted MLP for ``n`` training rows: ``steps`` become epochs (scikit-learn counts
        epochs: steps / batches per epoch, never stopping early), else ``max_iter`` with early stop."""
        batch = min(self.batch, n)
        if self.steps:
            epochs = max(1, math.ceil(self.steps / math.ceil(n / batch)))
            stop = dict(max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1)
        else:
            stop = dict(max_iter=self.max_iter, tol=1e-7, n_iter_no_change=50)
        return MLPRegressor(
            hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            activation="relu",
            solver="adam",
            learning_rate_init=self.learning_rate_init,
            batch_size=batch,
            random_state=self.random_state,
            **stop,
        )

    def predict(self, X: Any) -> np.ndarray:
        X = self._predict_input(X)
        p = self.mlp_.predict(self.scaler_.transform(X[:, self.idx_])) * self.lat_norm_
        return np.maximum(p, 1e-3 * self.lat_norm_)


class HybridModel(ColumnModel):
    """The analytical (roofline on ``base_columns``) model times a learned correction: GBT on
    log(y / base) over all columns."""

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        max_depth: int = 3,
        random_state: int = 0,
        base_columns: Sequence[str] | None = ROOFLINE_COLUMNS,
        feature_names: Sequence[str] | None = None,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.random_state = random_state
        self.base_columns = base_columns
        self.feature_names = feature_names

    def fit(self, X: Any, y: Any) -> HybridModel:
        X, y = self._fit_input(X, y)
        self.base_ = RooflineLinear(columns=self.base_columns, feature_names=self._names()).fit(X, y)
        ratio = y / self.base_.predict(X)
        self.residual_ = LogTreeModel(
            "gbt",
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            random_state=self.random_state,
        ).fit(X, ratio)
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = self._predict_input(X)
        return self.base_.predict(X) * self.residual_.predict(X)


# ---- the model registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    """A model name's core factory, ``factory(random_state, feature_names, **params)``, and the
    classes beyond numpy and scikit-learn's estimators that its fitted core holds: the types
    :mod:`moenas.predictor.persist` trusts in a predictor file."""

    factory: Callable[..., Any]
    trusted: tuple[type, ...]


MODEL_REGISTRY: dict[str, RegisteredModel] = {}
Factory = TypeVar("Factory", bound=Callable[..., Any])


def register_model(name: str, *trusted: type) -> Callable[[Factory], Factory]:
    """Decorator: make the core factory it decorates available as model ``name`` (``moenas fit
    --model name``), its fitted core holding the classes ``trusted``. ``names.MODELS`` lists the
    same names in the same order (a test holds them equal) so that --help needs no scikit-learn."""

    def add(factory: Factory) -> Factory:
        MODEL_REGISTRY[name] = RegisteredModel(factory, trusted)
        return factory

    return add


def check_model_name(name: str) -> str:
    """``name`` when a model is registered under it; UserError naming the choices otherwise."""
    if name not in MODEL_REGISTRY:
        raise UserError(f"unknown model {name!r} (choose from {', '.join(MODEL_REGISTRY)})")
    return name


def make_core(
    name: str, random_state: int = 0, feature_names: Sequence[str] | None = None, **params: Any
) -> ColumnModel | StackedModel:
    """An unfitted core of model ``name`` for a matrix whose columns are ``feature_names``;
    ``params`` override its defaults."""
    return MODEL_REGISTRY[check_model_name(name)].factory(random_state, feature_names, **params)


def trusted_types() -> set[str]:
    """Dotted names of the classes the registered models' fitted cores hold."""
    return {f"{t.__module__}.{t.__qualname__}" for m in MODEL_REGISTRY.values() for t in m.trusted}


@register_model("flops-linear", RooflineLinear)
def _flops_linear(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> RooflineLinear:
    return RooflineLinear(feature_names=feature_names, **params)  # deterministic: no seed


@register_model("hat-mlp", HatMLP, AdamOptimizer)
def _hat_mlp(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> HatMLP:
    return HatMLP(random_state=random_state, feature_names=feature_names, **params)


@register_model("automoe-mlp", HatMLP, AdamOptimizer)
def _automoe_mlp(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> HatMLP:
    """AutoMoE's recipe, faithfully: HAT's code's hyper-parameters plus the expert counts."""
    recipe = {"features": "automoe", "learning_rate_init": 1e-5, "steps": 5000}
    return HatMLP(random_state=random_state, feature_names=feature_names, **{**recipe, **params})


@register_model("gbt", LogTreeModel, Tree)
def _gbt(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> LogTreeModel:
    return LogTreeModel("gbt", random_state=random_state, feature_names=feature_names, **params)


@register_model("rf", LogTreeModel, Tree)
def _rf(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> LogTreeModel:
    defaults = dict(n_estimators=200, max_depth=None, min_samples_leaf=1, max_features=0.5)
    return LogTreeModel("rf", random_state=random_state, feature_names=feature_names, **{**defaults, **params})


@register_model("hybrid", HybridModel, RooflineLinear, LogTreeModel, Tree)
def _hybrid(random_state: int, feature_names: Sequence[str] | None, **params: Any) -> HybridModel:
    return HybridModel(random_state=random_state, feature_names=feature_names, **params)


@register_model("auto", StackedModel)
@register_model("stack", StackedModel)
def _stack(
    random_state: int, feature_names: Sequence[str] | None, candidates: Sequence[str] = AUTO_CANDIDATES, **params: Any
) -> StackedModel:
    """The stack of ``candidates`` (their cores come from their own registrations)."""
    cores = {c: make_core(c, random_state, feature_names) for c in candidates}
    return StackedModel(cores=cores, random_state=random_state, **params)


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


def widened(
    mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, log_sd: float, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """An interval (ms) widened by an independent error of ``log_sd`` (a standard deviation of
    log latency; a calibration factor's uncertainty): each side's log half-width h becomes
    sqrt(h^2 + (z * log_sd)^2), z the normal quantile of (1 + confidence) / 2 (independent
    errors add in quadrature in log space). ``log_sd`` 0: the interval as it was."""
    if not log_sd:
        return lower, upper
    z = NormalDist().inv_cdf((1.0 + confidence) / 2.0) * log_sd
    lo = mean * np.exp(-np.hypot(np.log(mean / lower), z))
    hi = mean * np.exp(np.hypot(np.log(upper / mean), z))
    return lo, hi


# ---- the public estimator -------------------------------------------------------------------------


class LatencyModel(RegressorMixin, BaseEstimator):
    """Arch list -> latency (ms) with a conformal interval. ``model`` names the core (see the
    module docstring); ``protocol``/``space`` configure the features; ``folds`` is K for the
    interval calibration (and for ``auto``'s choice); ``params`` go to the core."""

    def __init__(
        self,
        model: str = "gbt",
        protocol: LatencyProtocol | None = None,
        space: str | None = None,
        folds: int = 5,
        random_state: int = 0,
        params: dict | None = None,
        candidates: Sequence[str] = AUTO_CANDIDATES,
    ):
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
        check_model_name(self.model)
        self.features_ = ArchFeatures(protocol=self.protocol, space=self.space, groups=GROUPS).fit(archs)
        X = self.features_.transform(archs)
        core = make_core(self.model, self.random_state, self.features_.feature_names_, **self._core_params())
        if isinstance(core, StackedModel):  # its weights come from out-of-fold predictions it makes anyway
            self.core_ = core.fit(X, y)
            oof, self.cv_scores_, self.chosen_ = core.oof_pred_, core.cv_scores_, "stack"
        else:
            oof = oof_predictions(core, X, y, self.folds, self.random_state)
            self.cv_scores_ = {self.model: mape(y, oof)}
            self.core_, self.chosen_ = core.fit(X, y), self.model
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


def make_model(
    name: str,
    protocol: LatencyProtocol | None = None,
    space: str | None = None,
    folds: int = 5,
    random_state: int = 0,
    params: dict[str, Any] | None = None,
) -> LatencyModel:
    check_model_name(name)
    return LatencyModel(
        model=name, protocol=protocol, space=space, folds=folds, random_state=random_state, params=params
    )


def __getattr__(name: str) -> Any:
    """Predictor files saved before the transfer model had its own module name it
    ``moenas.predictor.models.TransferModel``; skops resolves that path here (lazily: the
    transfer module imports this one)."""
    if name == "TransferModel":
        from .transfer import TransferModel

        return TransferModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
