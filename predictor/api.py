"""The public face of the predictor package: :class:`Predictor` and :func:`fit_predictor`.

Search uses only this::

    from moenas.predictor import Predictor
    p = Predictor.load("predictors/gbt", protocol=my_protocol, space="tiny")  # checks they match
    pred = p.predict(archs, confidence=0.9)      # vectorised over thousands of archs
    pred.mean, pred.lower, pred.upper             # numpy arrays, ms
    p.metadata["device"], p.metadata["metrics"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from moenas.arch import Arch, UserError
from moenas.arch.protocol import Protocol, protocol_from_dict, shape_differences

from . import metrics as M
from . import persist
from .dataset import Dataset
from .features import as_archs, describe
from .models import LatencyModel, make_model
from .transfer import TransferModel


@dataclass(frozen=True)
class Prediction:
    """Predicted latency (ms) per arch: mean and a ``confidence`` interval [lower, upper]."""

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: float

    def __len__(self) -> int:
        return len(self.mean)

    def records(self) -> list[dict[str, float]]:
        return [
            {"mean_ms": float(m), "lower_ms": float(lo), "upper_ms": float(hi)}
            for m, lo, hi in zip(self.mean, self.lower, self.upper)
        ]


class Predictor:
    """A fitted latency model plus its metadata; see the module docstring."""

    def __init__(self, model: LatencyModel | TransferModel, metadata: dict[str, Any]):
        self.model = model
        self._metadata = metadata

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def protocol(self) -> Protocol | None:
        """The latency protocol of the training data, of its family (None: the metadata records none)."""
        d = self._metadata.get("protocol")
        return protocol_from_dict(d) if d else None

    # ---- persistence ------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path, protocol: Protocol | None = None, space: str | None = None, target: str | None = None
    ) -> "Predictor":
        """Load a saved predictor; with protocol/space/target, refuse one made for others."""
        model, meta = persist.load(path)
        p = cls(model, meta)
        p.check(protocol=protocol, space=space, target=target, where=str(path))
        return p

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        d = persist.save(self.model, self._metadata, path, overwrite=overwrite)
        self._metadata = persist.read_metadata(d)
        return d

    def check(
        self,
        protocol: Protocol | None = None,
        space: str | None = None,
        target: str | None = None,
        where: str = "predictor",
    ) -> None:
        """UserError if this predictor was made for another protocol (shape), space or target."""
        meta = self._metadata
        diff = shape_differences(self.protocol, protocol) if protocol is not None else []
        if diff:
            raise UserError(f"{where} was fitted for another latency protocol ({', '.join(diff)})")
        if space is not None and meta.get("space") not in (None, space):
            raise UserError(f"{where} was fitted on space {meta.get('space')!r}, not {space!r}")
        if target is not None and meta.get("target") != target:
            raise UserError(f"{where} predicts {meta.get('target')!r} latency, not {target!r}")

    # ---- prediction -------------------------------------------------------------------------
    def features(self, archs: Iterable[Arch | str]) -> np.ndarray:
        return self.model.features_.transform(as_archs(archs))

    def predict(self, archs: Arch | str | Sequence[Arch | str], confidence: float = 0.9) -> Prediction:
        """Mean and interval (ms) for every arch, the interval of the model's own kind
        (split-conformal; a transfer's jackknife+; a calibration's widened by its factor's
        uncertainty): what its benchmarks measure is what every caller gets."""
        mean, lower, upper = self.model.predict_interval(as_archs(archs), confidence)
        return Prediction(np.asarray(mean), np.asarray(lower), np.asarray(upper), confidence)

    def __repr__(self) -> str:
        m = self._metadata
        return (
            f"Predictor({m.get('model')!r} -> {m.get('chosen')!r}, target={m.get('target')!r}, "
            f"space={m.get('space')!r}, device={m.get('device')!r})"
        )


# ---- what a predictor was fitted on ----------------------------------------------------------------
# compared between a predictor and the data or machine it meets; not the device (a machine's
# name: another machine is what transfer and calibration are for, and `predict` / `search` name it)
FITTED_ON = ("backend", "threads_intra", "threads_inter", "space")


def fitted_on_differences(meta: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Where the data or machine ``facts`` (protocol, backend, threads_intra, threads_inter,
    space; :meth:`Dataset.fitted_on`) differ from what the predictor with
    metadata ``meta`` was fitted on, one phrase each. A fact either side does not know is not
    compared (predictors saved before thread counts were recorded fall back to their reference's)."""
    out = []
    if facts.get("protocol") is not None and meta.get("protocol"):
        out += [f"protocol {d}" for d in shape_differences(protocol_from_dict(meta["protocol"]), facts["protocol"])]
    ref = meta.get("reference") or {}
    for k in FITTED_ON:
        mine, theirs = meta.get(k, ref.get(k) if k.startswith("threads") else None), facts.get(k)
        if mine is not None and theirs is not None and mine != theirs:
            out.append(f"{k} {mine} (predictor) vs {theirs}")
    return out


def mismatch_line(where: str, against: str, diffs: list[str]) -> str:
    """The one line naming every difference between a predictor and what it meets."""
    return f"{where} was fitted on other data than {against}: {'; '.join(diffs)}"


# ---- fitting with reports -------------------------------------------------------------------------


def _base_metadata(ds: Dataset, model_name: str, model: Any) -> dict[str, Any]:
    return {
        "model": model_name,
        "chosen": getattr(model, "chosen_", model_name),
        "description": getattr(model, "description_", getattr(model, "chosen_", model_name)),
        "target": ds.target,
        "space": ds.space,
        "protocol": ds.protocol.to_dict(),
        "protocol_id": ds.protocol_id,
        "device": ds.device,
        "backend": ds.backend,
        "fingerprint_id": ds.fingerprint_id,
        "fingerprint": ds.fingerprint,
        "dataset": ds.describe(),
        "features": describe(model.features_),
        "n_train": int(model.n_train_),
        "train_arch_ids": list(ds.arch_ids),
        **ds.threads,
        # the reference model's latency in the training rows: what `moenas calibrate` rescales by
        "reference": ds.reference,
    }


def cv_report(model: LatencyModel, ds: Dataset, confidence: float = 0.9) -> dict[str, Any]:
    """K-fold cross-validated metrics from the out-of-fold predictions kept by ``fit``."""
    return M.report(ds.y, model.oof_pred_, noise_floor=ds.noise_floor)


def dataset_learning_curve(
    ds: Dataset, model_name: str, folds: int = 5, seed: int = 0, confidence: float = 0.9, params: dict | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Holdout error vs number of training archs (25, 50, 100, ...), plus the interval coverage
    of the largest fit on the same holdout."""
    last: dict[str, Any] = {}

    def fit_predict(tr, te):
        est = make_model(model_name, ds.protocol, ds.space, folds, seed, params).fit(
            [ds.archs[i] for i in tr], ds.y[tr]
        )
        mean, lo, hi = est.predict_interval([ds.archs[i] for i in te], confidence)
        last.update(
            n_train=len(tr),
            coverage=M.coverage(ds.y[te], lo, hi),
            confidence=confidence,
            mape=M.mape(ds.y[te], mean),
            n_test=len(te),
        )
        return mean

    if len(ds) < 2 * 8:
        return [], {}
    curve = M.learning_curve_points(fit_predict, len(ds), seed=seed, y=ds.y)
    return curve, dict(last)


def fit_predictor(
    ds: Dataset,
    model: str = "auto",
    folds: int = 5,
    seed: int = 0,
    params: dict | None = None,
    with_learning_curve: bool = True,
    confidence: float = 0.9,
) -> tuple[Predictor, dict[str, Any]]:
    """Fit ``model`` on a dataset; returns the predictor and a report (CV metrics, learning curve)."""
    est = make_model(model, ds.protocol, ds.space, folds, seed, params).fit(ds.archs, ds.y)
    rep: dict[str, Any] = {"cv": cv_report(est, ds), "folds": folds, "cv_by_model_mape": est.cv_scores_}
    if with_learning_curve:
        curve, hold = dataset_learning_curve(ds, est.chosen_, folds, seed, confidence, params)
        rep["learning_curve"], rep["holdout_interval"] = curve, hold
    meta = _base_metadata(ds, model, est)
    meta["metrics"] = rep
    return Predictor(est, meta), rep


def transfer_predictor(
    base: Predictor,
    ds: Dataset,
    n_samples: int = 20,
    seed: int = 0,
    residual: bool = False,
    compare_model: str | None = None,
    confidence: float = 0.9,
) -> tuple[Predictor, dict[str, Any]]:
    """Adapt ``base`` to the device of ``ds`` from ``n_samples`` of its archs.

    With more archs than ``n_samples`` in ``ds``: a random 25% is held out, ``n_samples`` archs
    of the rest fit the transfer, and the report compares on that holdout (1) the transfer,
    (2) the base model's kind fitted from scratch on the same few archs, (3) the same fitted
    on all the remaining archs, (4) the base predictor uncorrected."""
    bm = base.metadata
    diff = shape_differences(base.protocol, ds.protocol)
    if diff:
        raise UserError(f"base predictor and data use different latency protocols ({diff[0]})")
    if bm.get("target") != ds.target:
        raise UserError(f"base predictor predicts {bm.get('target')!r} latency, the data gives {ds.target!r}")
    if n_samples < 3:
        raise UserError(f"--transfer-n must be >= 3, got {n_samples}")
    base_model = base.model if isinstance(base.model, LatencyModel) else base.model.base
    rng = np.random.default_rng(seed)
    n = len(ds)
    rep: dict[str, Any] = {"n_samples": min(n_samples, n), "base": bm.get("device"), "target_device": ds.device}
    compare_model = compare_model or bm.get("chosen") or "gbt"
    if n > n_samples + 8:
        perm = rng.permutation(n)
        n_test = max(8, n // 4)
        test, pool = perm[:n_test], perm[n_test:]
        few = pool[:n_samples]
        xs = lambda idx: [ds.archs[i] for i in idx]  # noqa: E731
        tm = TransferModel(base=base_model, residual=residual, random_state=seed).fit(xs(few), ds.y[few])
        yt = ds.y[test]
        m, lo, hi = tm.predict_interval(xs(test), confidence)
        rows = {"transfer": {**M.report(yt, m, lo, hi, confidence, ds.noise_floor)}}
        rows["base_uncorrected"] = M.report(yt, base_model.predict(xs(test)), noise_floor=ds.noise_floor)
        for label, idx in ((f"scratch_{len(few)}", few), (f"scratch_all_{len(pool)}", pool)):
            if len(idx) >= 8:
                est = make_model(compare_model, ds.protocol, ds.space, 5, seed).fit(xs(idx), ds.y[idx])
                m2, lo2, hi2 = est.predict_interval(xs(test), confidence)
                rows[label] = M.report(yt, m2, lo2, hi2, confidence, ds.noise_floor)
        rep["holdout"] = {"n_test": int(len(test)), "compare_model": compare_model, "rows": rows}
        fit_idx = few
    else:
        fit_idx = np.arange(n)[:n_samples]
    tm = TransferModel(base=base_model, residual=residual, random_state=seed).fit(
        [ds.archs[i] for i in fit_idx], ds.y[fit_idx]
    )
    rep["loo_mape"] = float(np.mean(np.expm1(tm.abs_log_residuals_)) * 100)
    rep["scale"], rep["ridge_alpha"] = tm.scale_, tm.alpha_
    rep["blend"] = tm.describe()["blend"]  # each correction's weight, ridge strength and scale
    meta = _base_metadata(ds.subset(list(fit_idx)), f"transfer({bm.get('model')})", tm)
    meta["chosen"] = f"transfer({bm.get('chosen')})"
    meta["description"] = f"transfer({bm.get('description') or bm.get('chosen')})"
    meta["dataset"] = {**ds.describe(), "n_used": int(len(fit_idx))}
    meta["transfer"] = {
        "base_device": bm.get("device"),
        "base_fingerprint_id": bm.get("fingerprint_id"),
        "base_dataset_sha256": (bm.get("dataset") or {}).get("sha256"),
        "n_samples": int(len(fit_idx)),
    }
    meta["metrics"] = {"transfer": rep}
    return Predictor(tm, meta), rep
