"""Saving and loading predictors without unpickling arbitrary code.

A predictor directory holds:

``model.skops``     the fitted estimator in skops' format, loaded with an explicit list of
                    trusted types (:data:`TRUSTED`); a file naming any other type is refused
                    before anything in it is constructed;
``predictor.json``  the metadata: model name, target, protocol, space, device fingerprint,
                    dataset hash, feature list, package versions, metrics, and the SHA-256 of
                    ``model.skops`` (a file changed after saving is refused).
"""
from __future__ import annotations

import hashlib
import json
import platform
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moenas.arch import UserError

FORMAT = "moenas-predictor"
FORMAT_VERSION = 1
MODEL_FILE = "model.skops"
META_FILE = "predictor.json"

# Types beyond skops' defaults (numpy, scikit-learn estimators) that a predictor may contain.
TRUSTED = [
    "moenas.predictor.features.ArchFeatures",
    "moenas.predictor.models.HatMLP",
    "moenas.predictor.models.HybridModel",
    "moenas.predictor.models.LatencyModel",
    "moenas.predictor.models.LogTreeModel",
    "moenas.predictor.models.RooflineLinear",
    "moenas.predictor.models.TransferModel",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
]


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("moenas", "scikit-learn", "numpy", "scipy", "skops"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(model: Any, metadata: dict[str, Any], path: str | Path, overwrite: bool = False) -> Path:
    """Write ``model`` + metadata into directory ``path`` (refused if it exists, unless overwrite)."""
    import skops.io as sio

    d = Path(path)
    if d.exists() and not overwrite:
        raise UserError(f"{d} exists; pass --overwrite to replace it")
    if d.exists() and not d.is_dir():
        raise UserError(f"{d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(model))) - set(TRUSTED)
    if untrusted:  # a bug, not bad input: the trusted list must cover every model we write
        raise RuntimeError(f"model contains types outside persist.TRUSTED: {sorted(untrusted)}")
    sio.dump(model, d / MODEL_FILE)
    meta = dict(metadata)
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
                 "model_file": MODEL_FILE, "model_sha256": _sha256(d / MODEL_FILE),
                 "created": meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")})
    (d / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n")
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
        meta = json.loads((d / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{d / META_FILE}: corrupt metadata (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{d}: not a moenas predictor (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{d}: predictor format version {meta.get('format_version')!r} is not supported by this "
                        f"moenas (reads {FORMAT_VERSION}); refit it with `moenas fit`")
    return meta


def load(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(model, metadata); UserError for a missing, foreign, modified or untrusted predictor."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    from .models import LatencyModel, TransferModel

    d = Path(path)
    meta = read_metadata(d)
    f = d / MODEL_FILE
    if not f.is_file():
        raise UserError(f"{d}: the model file {MODEL_FILE} is missing")
    if _sha256(f) != meta.get("model_sha256"):
        raise UserError(f"{f}: the model file was modified after it was saved (SHA-256 mismatch); refusing to load it")
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=f)) - set(TRUSTED))
    except Exception as e:  # noqa: BLE001 - a corrupt zip / schema raises several types
        raise UserError(f"{f}: not a readable skops file ({type(e).__name__}); refusing to load it") from None
    if untrusted:
        raise UserError(f"{f}: contains untrusted types ({', '.join(untrusted)}); refusing to load it")
    saved_skl = (meta.get("versions") or {}).get("scikit-learn")
    now_skl = versions()["scikit-learn"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's InconsistentVersionWarning: handled below
            model = sio.load(f, trusted=TRUSTED)
    except UntrustedTypesFoundException as e:
        raise UserError(f"{f}: contains untrusted types ({e}); refusing to load it") from None
    except Exception as e:  # noqa: BLE001
        hint = f" (saved with scikit-learn {saved_skl}, this is {now_skl}: refit it)" if saved_skl != now_skl else ""
        raise UserError(f"{f}: cannot be loaded: {type(e).__name__}{hint}") from None
    if not isinstance(model, (LatencyModel, TransferModel)):
        raise UserError(f"{f}: holds a {type(model).__name__}, not a moenas latency model; refusing it")
    if saved_skl and saved_skl.split(".")[:2] != now_skl.split(".")[:2]:
        warnings.warn(f"{d}: saved with scikit-learn {saved_skl}, loaded with {now_skl}; "
                      "predictions may differ: refit when possible", stacklevel=2)
    return model, meta
