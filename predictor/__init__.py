"""Latency predictors: features, models with intervals, metrics, safe persistence.

Search uses :class:`Predictor` (``Predictor.load(path).predict(archs, confidence=0.9)``); the
CLI (`moenas fit / evaluate / predict`) uses :func:`fit_predictor` and :func:`transfer_predictor`.
Names are imported lazily so that `moenas --help` does not pay for scikit-learn.
"""

from importlib import import_module

from .names import MODELS, TARGETS

_LAZY = {
    "Prediction": "api",
    "Predictor": "api",
    "fit_predictor": "api",
    "transfer_predictor": "api",
    "Dataset": "dataset",
    "load_dataset": "dataset",
    "ArchFeatures": "features",
    "LatencyModel": "models",
    "TransferModel": "models",
    "make_model": "models",
    "ScaledModel": "calibrate",
    "calibrated": "calibration",
}
__all__ = ["MODELS", "TARGETS", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
