"""Saving and loading predictors without unpickling arbitrary code.

A predictor directory holds:

``model.skops``     the fitted estimator in skops' format, loaded with an explicit list of
                    trusted types (:func:`trusted_types`); a file naming any other type is
                    refused before anything in it is constructed;
``predictor.json``  the metadata: model name, target, protocol, space, device fingerprint,
                    dataset hash, feature list, package versions, metrics, and the SHA-256 of
                    ``model.skops`` (a file changed after saving is refused).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from moenas.arch import UserError
from moenas.arch.checks import check_fields, read_json
from moenas.arch.files import atomic_write, atomic_write_text, json_dict, output_lock
from moenas.arch.provenance import now_iso
from moenas.arch.provenance import versions as _versions

FORMAT = "moenas-predictor"
FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
META_FILE = "predictor.json"

# What a predictor file may hold around its core (the cores' own types come from the model registry).
WRAPPERS = (
    "moenas.arch.protocol.LatencyProtocol",
    "moenas.arch.protocol.LMProtocol",
    "moenas.predictor.calibrate.ScaledModel",
    "moenas.predictor.features.ArchFeatures",
    "moenas.predictor.models.LatencyModel",
    "moenas.predictor.models.TransferModel",  # files saved before predictor/transfer.py
    "moenas.predictor.transfer.RidgeCorrection",
    "moenas.predictor.transfer.TransferModel",
)


def trusted_types() -> list[str]:
    """Types beyond skops' defaults (numpy, scikit-learn estimators) that a predictor may
    contain: the wrappers and what each registered model's core holds (its registration says)."""
    from .models import trusted_types as core_types

    return sorted(set(WRAPPERS) | core_types())


def versions() -> dict[str, str]:
    """What a predictor file depends on (checked on load: another scikit-learn may unpickle differently)."""
    return _versions(("moenas", "scikit-learn", "numpy", "scipy", "skops"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_out(path: str | Path, overwrite: bool = False) -> None:
    """UserError unless ``path`` may receive a predictor: absent, or (with ``overwrite``) a
    predictor directory or an empty one. ``--overwrite`` replaces a predictor, never a folder
    of someone's own files that ``--out`` happened to name."""
    d = Path(path)
    if d.exists() and not overwrite:
        raise UserError(f"{d} exists; pass --overwrite to replace it")
    if d.exists() and not d.is_dir():
        raise UserError(f"{d} exists and is not a directory")
    if d.is_dir() and any(d.iterdir()) and (json_dict(d / META_FILE) or {}).get("format") != FORMAT:
        raise UserError(
            f"{d} is a directory that holds no moenas predictor; --overwrite replaces only a predictor "
            "(choose another --out)"
        )


def save(model: Any, metadata: dict[str, Any], path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` + metadata into directory ``path`` (refused if it exists, unless overwrite;
    see :func:`check_out`). Each file is written atomically, under the directory's lock."""
    import skops.io as sio

    d = Path(path)
    with output_lock(d, "predictor"):
        check_out(d, overwrite)
        untrusted = set(sio.get_untrusted_types(data=sio.dumps(model))) - set(trusted_types())
        if untrusted:  # a bug, not bad input: a model's registration must name every type its core holds
            raise RuntimeError(f"model contains types outside persist.trusted_types(): {sorted(untrusted)}")
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / MODEL_FILE, lambda tmp: sio.dump(model, tmp))
        meta = dict(metadata)
        meta.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "versions": versions(),
                "model_file": MODEL_FILE,
                "model_sha256": _sha256(d / MODEL_FILE),
                "created": meta.get("created") or now_iso(),
            }
        )
        atomic_write_text(d / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
    return d


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def read_metadata(path: str | Path) -> dict[str, Any]:
    d = Path(path)
    if not d.exists():
        raise UserError(f"{d}: no such predictor (fit one with `moenas fit ... --out {d}`)")
    if not d.is_dir() or not (d / META_FILE).is_file():
        raise UserError(f"{d}: not a predictor directory (no {META_FILE})")
    try:
        meta = read_json(d / META_FILE, "metadata")
    except UserError as e:
        raise UserError(f"{e} (corrupt predictor metadata)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(
            f"{d}: not a moenas predictor (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{d}: predictor format version {meta.get('format_version')!r} is not supported by this "
            f"moenas (reads {FORMAT_VERSION}); refit it with `moenas fit`"
        )
    return check_metadata(meta, str(d / META_FILE))


# Fields readers use without guarding (`moenas predict`, `evaluate`, search's constraints): a
# hand-edited predictor.json with another type there is refused here, not met as AttributeError.
META_FIELDS: dict[str, Any] = {
    "model_sha256": str,
    "model": str,
    "chosen": str,
    "target": str,
    "space": str,
    "device": str,
    "backend": str,
    "protocol": dict,
    "protocol_id": str,
    "fingerprint": dict,
    "fingerprint_id": str,
    "dataset": dict,
    "features": dict,
    "n_train": int,
    "train_arch_ids": list,
    "versions": dict,
    "metrics": dict,
    "created": str,
    "reference": dict,
    "calibration": dict,
    "description": str,
}
CURVE_FIELDS = {"n_train": int, "mape": (int, float), "within_10": (int, float), "kendall_tau": (int, float)}


def check_metadata(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """``meta`` when every field above has its type (and the learning curve's rows theirs)."""
    check_fields(meta, where, {"format": str, "format_version": int}, META_FIELDS)
    if meta.get("protocol") is not None:
        from moenas.arch.protocol import protocol_from_dict

        try:
            protocol_from_dict(meta["protocol"])  # its own type and range checks (any family's)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    curve = check_fields(meta.get("metrics") or {}, f"{where} metrics", {}, {"learning_curve": list}).get(
        "learning_curve"
    )
    for i, row in enumerate(curve or []):
        check_fields(row, f"{where} metrics.learning_curve[{i}]", CURVE_FIELDS)
    return meta


def load(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(model, metadata); UserError for a missing, foreign, modified or untrusted predictor."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    from .calibrate import ScaledModel
    from .models import LatencyModel
    from .transfer import TransferModel

    d = Path(path)
    meta = read_metadata(d)
    f = d / MODEL_FILE
    if not f.is_file():
        raise UserError(f"{d}: the model file {MODEL_FILE} is missing")
    if _sha256(f) != meta.get("model_sha256"):
        raise UserError(f"{f}: the model file was modified after it was saved (SHA-256 mismatch); refusing to load it")
    trusted = trusted_types()
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=f)) - set(trusted))
    except Exception as e:  # noqa: BLE001 - a corrupt zip / schema raises several types
        raise UserError(f"{f}: not a readable skops file ({type(e).__name__}); refusing to load it") from None
    if untrusted:
        raise UserError(f"{f}: contains untrusted types ({', '.join(untrusted)}); refusing to load it")
    saved_skl = (meta.get("versions") or {}).get("scikit-learn")
    now_skl = versions()["scikit-learn"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's InconsistentVersionWarning: handled below
            model = sio.load(f, trusted=trusted)
    except UntrustedTypesFoundException as e:
        raise UserError(f"{f}: contains untrusted types ({e}); refusing to load it") from None
    except Exception as e:  # noqa: BLE001
        hint = f" (saved with scikit-learn {saved_skl}, this is {now_skl}: refit it)" if saved_skl != now_skl else ""
        raise UserError(f"{f}: cannot be loaded: {type(e).__name__}{hint}") from None
    if not isinstance(model, (LatencyModel, TransferModel, ScaledModel)):
        raise UserError(f"{f}: holds a {type(model).__name__}, not a moenas latency model; refusing it")
    if saved_skl and saved_skl.split(".")[:2] != now_skl.split(".")[:2]:
        warnings.warn(
            f"{d}: saved with scikit-learn {saved_skl}, loaded with {now_skl}; "
            "predictions may differ: refit when possible",
            stacklevel=2,
        )
    return model, meta
