"""The profile dataset: measured latencies in long format, on disk as Parquet + a JSON sidecar.

One row per (measurement, component): every time an arch is timed, one row per component of
its model family and one for the total are written (encoder, decoder, total; a decoder-only
language model's prefill, decode, total) sharing a ``measurement_id``. Every row carries its
protocol's fields (:data:`PROTOCOL_COLUMNS`; ``family`` NA = encoder-decoder, as in every
dataset written before the decoder-only family). An arch can have several
measurements: ``repeat_index`` 0 is the first, 1 the noise-floor re-measurement, and a row
taken while the reference model had drifted is kept with ``drift_flag`` = True and measured
again later (the new rows have ``remeasured`` = True).

``X.parquet`` holds the rows and, in its key-value metadata, a copy of the sidecar;
``X.parquet.json`` (the sidecar, human-readable) holds the schema version, protocol, fingerprint,
command, creation time, counts, reference-model checks and noise floor. The sidecar is named
after the whole output, so it never lands on a user's ``X.json`` (an arch list, say). Datasets
written before that have their sidecar at ``X.json``: it is still read, and refreshed on a
rewrite only while it is the exact copy of that dataset's metadata (otherwise left alone).

Public API (the predictor codes against exactly this): :func:`read_profiles`,
:func:`latency_table`, :func:`noise_floor`, the ``protocol_id`` / ``fingerprint_id`` columns
and :data:`PROFILE_SCHEMA_VERSION`. The writer side (:func:`write_profiles`,
:func:`merge_profiles`) is used by the profiler.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from moenas.arch import Arch
from moenas.arch.checks import check_fields, parse_json, read_json
from moenas.arch.errors import UserError
from moenas.arch.family import DEFAULT_FAMILY, FAMILIES, TOTAL, all_row_components
from moenas.arch.files import atomic_write, atomic_write_text, check_replaceable, json_dict
from moenas.arch.protocol import PROTOCOLS, Protocol, protocol_from_dict
from moenas.arch.provenance import now_iso  # noqa: F401  (re-exported: the profiler stamps rows with it)

PROFILE_SCHEMA_VERSION = 1
FORMAT = "moenas-profiles"
META_KEY = b"moenas_profiles"
COMPONENTS = all_row_components()  # any family's; one measurement's rows: its family's row_components
SHIPPED_DIR = Path(__file__).parent / "profiles"

# column -> pandas dtype. Order = order on disk.
COLUMNS: dict[str, str] = {
    "arch_id": "string",
    "arch_json": "string",
    "space": "string",
    "component": "string",
    "backend": "string",
    "device": "string",
    "median_ms": "float64",
    "p10_ms": "float64",
    "p90_ms": "float64",
    "mean_ms": "float64",
    "std_ms": "float64",
    "ci_lo_ms": "float64",
    "ci_hi_ms": "float64",
    "ci_rel": "float64",
    "n_runs": "Int64",
    "n_warmup": "Int64",
    "precision_reached": "boolean",
    "target_rel": "float64",
    "threads_intra": "Int64",
    "threads_inter": "Int64",
    "session_options": "string",
    "batch": "Int64",
    "src_len": "Int64",
    "decoder_steps": "Int64",
    "beam": "Int64",
    "routing": "string",
    "model_seed": "Int64",
    "input_seed": "Int64",
    "protocol_id": "string",
    "expert_counts": "string",
    "op_profile": "string",
    "cpu_model": "string",
    "cpu_cores": "Int64",
    "gpu_name": "string",
    "gpu_driver": "string",
    "os": "string",
    "python": "string",
    "onnxruntime_version": "string",
    "torch_version": "string",
    "triton_version": "string",
    "moenas_version": "string",
    "versions": "string",
    "fingerprint_id": "string",
    "export_method": "string",
    "timestamp": "string",
    "run_id": "string",
    "measurement_id": "string",
    "drift_flag": "boolean",
    "remeasured": "boolean",
    "repeat_index": "Int64",
    "reference_ratio": "float64",
    "ref_before_ms": "float64",
    "ref_after_ms": "float64",
    # the decoder-only family's protocol columns, last: a dataset written before them reads back
    # with every earlier column where it was and these NA ("family" NA = encoder-decoder)
    "family": "string",
    "prompt_len": "Int64",
    "decode_steps": "Int64",
}
# Every protocol field of any family, as stored in each row (``protocol_columns``): a row leaves
# the other family's shape fields NA, and an encoder-decoder row its family (its protocol's
# to_dict has none, so its protocol_id is what it always was).
PROTOCOL_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(["family", *(f.name for cls in PROTOCOLS.values() for f in fields(cls))])
)
REQUIRED = (
    "arch_id",
    "arch_json",
    "component",
    "backend",
    "device",
    "median_ms",
    "repeat_index",
    "drift_flag",
    "protocol_id",
    "fingerprint_id",
)


def check_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` when its keys are exactly :data:`COLUMNS`; ValueError naming the unknown and the
    missing ones otherwise. For the profiler's own writes: :func:`to_frame` and
    :func:`read_profiles` accept other column sets (datasets reshaped with ordinary tools), so
    a misspelt key would otherwise pass as an extra column beside an empty one."""
    unknown = [k for k in row if k not in COLUMNS]
    missing = [c for c in COLUMNS if c not in row]
    if unknown or missing:
        raise ValueError(f"profile row does not match the schema: unknown columns {unknown}, missing columns {missing}")
    return row


def protocol_columns(protocol: Protocol) -> dict[str, Any]:
    """The :data:`PROTOCOL_COLUMNS` of a row measured under ``protocol`` (None where the
    protocol has no such field)."""
    d = protocol.to_dict()
    return {c: d.get(c) for c in PROTOCOL_COLUMNS}


def row_protocol(row: Any) -> Protocol:
    """The protocol a row (a Series or a dict) was measured under, read back with
    :func:`~moenas.arch.protocol.protocol_from_dict` (NA fields: the defaults; no family:
    encoder-decoder). UserError for values no protocol takes."""
    vals = {c: row[c] for c in PROTOCOL_COLUMNS if c in row and not pd.isna(row[c])}
    return protocol_from_dict({c: v.item() if hasattr(v, "item") else v for c, v in vals.items()})


def dataset_protocol(df: pd.DataFrame, meta: dict[str, Any]) -> Protocol:
    """The protocol of a dataset: its metadata's (``meta["protocol"]``, any family) or, when
    the metadata has none (a reshaped file), its first row's."""
    if isinstance(meta.get("protocol"), dict):
        return protocol_from_dict(meta["protocol"])
    if not len(df):
        raise UserError("a dataset without rows or a recorded protocol has no protocol")
    return row_protocol(df.iloc[0])


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts) -> a frame with exactly :data:`COLUMNS` (missing -> NA), typed."""
    df = pd.DataFrame(list(rows))
    for c, t in COLUMNS.items():
        if c not in df:
            df[c] = pd.Series(np.nan if t == "float64" else pd.NA, index=df.index, dtype=t)
    df = df[list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]]
    return df.astype({c: t for c, t in COLUMNS.items()})


# ---- reading ------------------------------------------------------------------------------------


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of dataset ``path`` is written: ``X.parquet`` -> ``X.parquet.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def legacy_sidecar_path(path: str | Path) -> Path:
    """Where datasets written by older moenas (and the shipped ones) keep it: ``X.json``."""
    return Path(path).with_suffix(".json")


def _is_sidecar(p: Path) -> bool:
    d = json_dict(p)
    return d is not None and d.get("format") == FORMAT


def check_sidecar(path: str | Path) -> None:
    """UserError before any work when the sidecar's name is taken by a file moenas did not write."""
    check_replaceable(sidecar_path(path), _is_sidecar, "a moenas profile sidecar")


def read_profiles(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(rows, metadata) of a profile dataset; UserError if missing, corrupt, foreign or lacking
    required columns. Metadata is the copy inside the Parquet file (written atomically with the
    rows; the ``.json`` sidecar is the same text for people and other tools).

    Data a user reshaped with ordinary tools is accepted: a Parquet file without moenas
    metadata (pandas ``to_parquet`` of a filtered dataset) or a CSV file, as long as it has the
    schema's columns; every row carries its own protocol, fingerprint and versions. The sidecar
    is then optional (its fingerprint is read when present)."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such profile dataset")
    if p.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(p)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{p}: not a readable CSV file ({type(e).__name__})") from None
        meta = _meta_from_rows(p)
    else:
        try:
            table = pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise UserError(
                f"{p}: not a readable Parquet file ({type(e).__name__}); corrupt or not a profile dataset"
            ) from None
        kv = table.schema.metadata or {}
        meta = _embedded_meta(p, kv[META_KEY]) if META_KEY in kv else _meta_from_rows(p)
        try:
            df = table.to_pandas()
        except (TypeError, ValueError):  # a column that contradicts its recorded pandas dtype: named below
            df = table.to_pandas(ignore_metadata=True)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        what = "not a moenas profile dataset (no metadata, and " if meta.get("reshaped") else "("
        raise UserError(f"{p}: {what}missing columns {', '.join(missing)})")
    for c, t in COLUMNS.items():
        if c not in df:
            df[c] = pd.Series(np.nan if t == "float64" else pd.NA, index=df.index, dtype=t)
    for c, t in COLUMNS.items():
        try:
            df[c] = df[c].astype(t)
        except (ValueError, TypeError):
            raise UserError(f"{p}: column {c!r} does not hold {t} values") from None
    check_values(p, df)
    check_arch_column(p, df)
    if meta.get("reshaped"):  # the ids the rows agree on, as a written dataset's metadata holds them
        for c in ("protocol_id", "fingerprint_id", "space"):
            vals = df[c].dropna().unique() if c in df else []
            meta[c] = str(vals[0]) if len(vals) == 1 else None
        if meta["protocol_id"] is not None:
            try:
                meta["protocol"] = row_protocol(df.iloc[0]).to_dict()
            except UserError as e:
                raise UserError(f"{p}: {e}") from None
    return df, meta


def check_values(p: Path, df: pd.DataFrame) -> None:
    """UserError when a row cannot be a measurement: an empty required field, a component the
    schema does not know (a column of integers reads as "0", "1"), or a median that is not a
    positive finite number of milliseconds. Such rows used to pass reading, and a --resume run
    rewrote the file around them with exit 0."""
    for c in REQUIRED:
        empty = df[c].isna() | (df[c].astype("string").str.strip() == "")
        if empty.any():
            raise UserError(
                f"{p}: {int(empty.sum())} row(s) with an empty {c!r} (first: row {int(empty.to_numpy().argmax())})"
            )
    bad = ~df["component"].isin(COMPONENTS)
    if bad.any():
        raise UserError(f"{p}: component {df['component'][bad].iloc[0]!r} is not one of {', '.join(COMPONENTS)}")
    check_families(p, df)
    ms = df["median_ms"].to_numpy(dtype=float)
    bad_ms = ~np.isfinite(ms) | (ms <= 0)
    if bad_ms.any():
        raise UserError(
            f"{p}: median_ms {ms[bad_ms][0]} is not a positive number of milliseconds ({int(bad_ms.sum())} row(s))"
        )


def check_families(p: Path, df: pd.DataFrame) -> None:
    """UserError when a row names no model family moenas knows, or a component its family
    (``family``; NA: encoder-decoder) does not time (a prefill row of a translation model)."""
    fam = df["family"].fillna(DEFAULT_FAMILY.name) if "family" in df else pd.Series(DEFAULT_FAMILY.name, index=df.index)
    for name in fam.unique():
        if name not in FAMILIES:
            raise UserError(f"{p}: family {name!r} is not a model family (known: {', '.join(FAMILIES)})")
        comps = FAMILIES[name].row_components
        bad = (fam == name) & ~df["component"].isin(comps)
        if bad.any():
            raise UserError(
                f"{p}: component {df['component'][bad].iloc[0]!r} is not one of family {name}'s ({', '.join(comps)})"
            )


def check_arch_column(p: Path, df: pd.DataFrame) -> None:
    """UserError unless every row's ``arch_json`` is an arch whose id is the row's ``arch_id``.

    A garbage arch_json used to pass reading and break later: a --resume run re-measured and
    rewrote such a file, and a fit failed on it midway. Checked once per distinct pair."""
    for aid, text in df[["arch_id", "arch_json"]].drop_duplicates().itertuples(index=False):
        if not isinstance(text, str):
            raise UserError(f"{p}: a row of arch {aid} has no arch_json")
        try:
            arch = Arch.from_json(text)
        except UserError as e:
            raise UserError(f"{p}: the arch_json of arch {aid} is not an arch ({e})") from None
        if arch.arch_id != aid:
            raise UserError(
                f"{p}: a row's arch_id {aid} is not the id {arch.arch_id} of its arch_json (damaged dataset)"
            )


def _embedded_meta(p: Path, blob: bytes) -> dict[str, Any]:
    try:
        meta = parse_json(blob, "metadata")
    except UserError as e:
        raise UserError(f"{p}: its embedded metadata is corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(
            f"{p}: not a moenas profile dataset (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("schema_version") != PROFILE_SCHEMA_VERSION:
        raise UserError(
            f"{p}: profile schema version {meta.get('schema_version')!r} is not supported (this moenas reads {PROFILE_SCHEMA_VERSION})"
        )
    return check_metadata(meta, f"{p} metadata")


# Fields the profiler (on --resume), merge and the predictor read without guarding; a dataset
# whose metadata holds another type there is refused on reading, not met as AttributeError.
META_FIELDS: dict[str, Any] = {
    "protocol": dict,
    "protocol_id": str,
    "fingerprint": dict,
    "fingerprint_id": str,
    "space": str,
    "reference": dict,
    "runs": list,
    "counts": dict,
    "noise_floor": dict,
    "command": list,
    "created": str,
    "updated": str,
    "merged_from": list,
    "reference_earlier": list,
    "synthetic": bool,
    "mixed": bool,
    "split_from": dict,
    "measurement": dict,
}
REFERENCE_FIELDS: dict[str, Any] = {
    "checks": list,
    "arch_id": str,
    "arch_json": str,
    "fingerprint_id": str,
    "threshold": (int, float),
    "baseline_ms": (int, float),
}


def check_metadata(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """``meta`` when its fields, the reference block, every reference check and every run have
    the types their readers assume (a check's ``median_ms`` sets the drift baseline)."""
    check_fields(meta, where, {"format": str, "schema_version": int}, META_FIELDS)
    ref = check_fields(meta.get("reference") or {}, f"{where} reference", {}, REFERENCE_FIELDS)
    for i, c in enumerate(ref.get("checks") or []):
        check_fields(c, f"{where} reference.checks[{i}]", {"median_ms": (int, float)})
    for i, r in enumerate(meta.get("runs") or []):
        check_fields(r, f"{where} runs[{i}]", {})
    return meta


def _meta_from_rows(p: Path) -> dict[str, Any]:
    """Metadata of a reshaped file: the rows speak for themselves; a sidecar adds the fingerprint."""
    meta: dict[str, Any] = {"format": FORMAT, "schema_version": PROFILE_SCHEMA_VERSION, "reshaped": str(p)}
    side = sidecar_path(p)
    if side.is_file():
        extra = read_json(side, "sidecar JSON")
    else:  # the old name may be anyone's X.json: used only when it reads as a sidecar
        extra = json_dict(legacy_sidecar_path(p))
    if isinstance(extra, dict) and isinstance(extra.get("fingerprint"), dict):
        meta["fingerprint"] = extra["fingerprint"]
    return meta


# ---- derived tables ---------------------------------------------------------------------------


def valid_rows(df: pd.DataFrame, component: str = TOTAL, repeat_index: int | None = 0) -> pd.DataFrame:
    """Rows of ``component`` (and ``repeat_index`` unless None) that are not drift-flagged,
    keeping the latest per arch (a re-measurement supersedes an earlier one)."""
    if component not in COMPONENTS:
        raise UserError(f"unknown component {component!r} (choose from {', '.join(COMPONENTS)})")
    sel = df[(df["component"] == component) & (~df["drift_flag"].fillna(False).astype(bool))]
    if repeat_index is not None:
        sel = sel[sel["repeat_index"] == repeat_index]
    return sel.sort_values("timestamp", kind="stable").drop_duplicates("arch_id", keep="last")


def latency_table(df: pd.DataFrame, component: str = TOTAL) -> pd.DataFrame:
    """One row per arch_id from first measurements (repeat_index 0); rows flagged for drift and
    not re-measured are dropped (a re-measurement replaces them). Columns: arch_id, arch_json,
    median_ms, p10_ms, p90_ms, ci_rel."""
    cols = ["arch_id", "arch_json", "median_ms", "p10_ms", "p90_ms", "ci_rel"]
    out = valid_rows(df, component, 0)[cols].sort_values("arch_id").reset_index(drop=True)
    return out


def noise_floor(df: pd.DataFrame, component: str = TOTAL) -> float | None:
    """MAPE (percent) between the first measurement (repeat_index 0) and the noise-floor
    re-measurement (repeat_index 1) of the same archs; None without such pairs."""
    a = valid_rows(df, component, 0).set_index("arch_id")["median_ms"]
    b = valid_rows(df, component, 1).set_index("arch_id")["median_ms"]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        return None
    x, y = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    return float(np.mean(np.abs(y - x) / x) * 100.0)


def noise_pairs(df: pd.DataFrame, component: str = TOTAL) -> int:
    a = valid_rows(df, component, 0)["arch_id"]
    b = valid_rows(df, component, 1)["arch_id"]
    return len(set(a) & set(b))


def present_components(df: pd.DataFrame) -> list[str]:
    """The components ``df`` has rows of, in :data:`COMPONENTS` order."""
    have = set(df["component"].dropna()) if len(df) else set()
    return [c for c in COMPONENTS if c in have]


def counts(df: pd.DataFrame) -> dict[str, Any]:
    tot = df[df["component"] == TOTAL]
    return {
        "rows": int(len(df)),
        "measurements": int(len(tot)),
        "archs": int(tot["arch_id"].nunique()),
        "archs_valid": int(len(latency_table(df))) if len(df) else 0,
        "flagged_measurements": int(tot["drift_flag"].fillna(False).astype(bool).sum()),
        "remeasured_measurements": int(tot["remeasured"].fillna(False).astype(bool).sum()),
        "noise_pairs": noise_pairs(df) if len(df) else 0,
    }


# ---- writing ------------------------------------------------------------------------------------


def write_profiles(path: str | Path, df: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """Atomically write rows + metadata (Parquet, zstd; then the JSON sidecar). The metadata's
    format, schema version, counts and noise floor are filled in; returns the metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    check_sidecar(p)  # before anything is written
    legacy = _own_legacy_sidecar(p)
    df = to_frame(df.to_dict("records")) if not set(COLUMNS) <= set(df.columns) else df
    meta = dict(meta)
    meta["format"] = FORMAT
    meta["schema_version"] = PROFILE_SCHEMA_VERSION
    meta.setdefault("created", now_iso())
    meta["updated"] = now_iso()
    meta["counts"] = counts(df) if len(df) else {"rows": 0}
    nf = noise_floor(df) if len(df) else None
    meta["noise_floor"] = {
        "component": TOTAL,
        "mape_percent": nf,
        "pairs": noise_pairs(df) if len(df) else 0,
        "by_component": {c: noise_floor(df, c) for c in present_components(df)},
    }
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
    )
    atomic_write(p, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    text = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_text(sidecar_path(p), text)
    if legacy is not None:
        atomic_write_text(legacy, text)
    return meta


def _own_legacy_sidecar(p: Path) -> Path | None:
    """The old-name sidecar ``X.json`` when it is this dataset's (the exact copy of the metadata
    inside ``p``), so a rewrite keeps it true; None when absent or anything else (a user's file
    of that name is never touched)."""
    import pyarrow.parquet as pq

    legacy = legacy_sidecar_path(p)
    if legacy in (p, sidecar_path(p)) or not legacy.is_file() or not p.is_file():
        return None
    side = json_dict(legacy)
    if side is None or side.get("format") != FORMAT:
        return None
    try:
        embedded = json.loads((pq.read_schema(p).metadata or {})[META_KEY])
    except Exception:  # noqa: BLE001 - unreadable or foreign dataset: not provably ours
        return None
    return legacy if embedded == side else None


def check_compatible(metas: list[tuple[str, dict[str, Any]]], allow_mixed: bool = False) -> None:
    """UserError unless every dataset has the same protocol_id and fingerprint_id."""
    if allow_mixed or len(metas) < 2:
        return
    for key, what in (("protocol_id", "protocols"), ("fingerprint_id", "device fingerprints")):
        vals = {name: m.get(key) for name, m in metas}
        if len(set(vals.values())) > 1:
            desc = ", ".join(f"{n}: {v}" for n, v in vals.items())
            raise UserError(
                f"refusing to merge datasets with different {what} ({desc}); pass --allow-mixed to merge anyway"
            )


def merge_profiles(
    paths: list[str | Path],
    out: str | Path,
    allow_mixed: bool = False,
    overwrite: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Join profile datasets (e.g. shards) into one; duplicate measurement rows kept once."""
    if not paths:
        raise UserError("merge needs at least one input dataset")
    o = Path(out)
    if o.exists() and not overwrite:
        raise UserError(f"{o} exists; pass --overwrite to replace it")
    check_sidecar(o)
    parts = [(str(p), *read_profiles(p)) for p in paths]
    check_compatible([(n, m) for n, _, m in parts], allow_mixed)
    # rows too: a dataset's rows must agree with its own metadata
    if not allow_mixed:
        ids = {c: set() for c in ("protocol_id", "fingerprint_id")}
        for _, df, _ in parts:
            for c in ids:
                ids[c] |= set(df[c].dropna().unique())
        for c, v in ids.items():
            if len(v) > 1:
                raise UserError(
                    f"refusing to merge rows with different {c} values ({', '.join(sorted(v))}); pass --allow-mixed"
                )
    df = pd.concat([d for _, d, _ in parts], ignore_index=True)
    df = df.drop_duplicates(["measurement_id", "component"], keep="last").reset_index(drop=True)
    first = parts[0][2]
    meta = {k: first.get(k) for k in ("protocol", "protocol_id", "fingerprint", "fingerprint_id", "space")}
    meta["created"] = now_iso()
    meta["command"] = command
    meta["merged_from"] = [
        {
            "path": n,
            "protocol_id": m.get("protocol_id"),
            "fingerprint_id": m.get("fingerprint_id"),
            "counts": m.get("counts"),
            "runs": m.get("runs"),
        }
        for n, _, m in parts
    ]
    meta["mixed"] = bool(allow_mixed)
    meta["reference"] = {"checks": [c for _, _, m in parts for c in (m.get("reference") or {}).get("checks", [])]}
    meta["runs"] = [r for _, _, m in parts for r in (m.get("runs") or [])]
    return write_profiles(o, df, meta)


def split_profiles(
    path: str | Path, holdout: float, seed: int, out_train: str | Path, out_holdout: str | Path, overwrite: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a dataset by arch (every row of an arch goes to the same side, repeats included):
    a random ``holdout`` share of the archs to ``out_holdout``, the rest to ``out_train``.
    Returns both written metadata."""
    if not 0 < holdout < 1:
        raise UserError(f"--holdout must be in (0, 1), got {holdout}")
    outs = [Path(out_train), Path(out_holdout)]
    if outs[0].resolve() == outs[1].resolve() or Path(path).resolve() in [o.resolve() for o in outs]:
        raise UserError("split: the input and the two outputs must be three different files")
    for o in outs:
        if (o.exists() or sidecar_path(o).exists()) and not overwrite:
            raise UserError(f"{o} exists; pass --overwrite to replace it")
        check_sidecar(o)
    df, meta = read_profiles(path)
    ids = np.array(sorted(df["arch_id"].dropna().unique()))
    if len(ids) < 2:
        raise UserError(f"{path}: {len(ids)} arch(s); nothing to split")
    rng = np.random.default_rng(seed)
    n_hold = min(max(1, int(round(holdout * len(ids)))), len(ids) - 1)
    hold = set(rng.permutation(ids)[:n_hold])
    mask = df["arch_id"].isin(hold).to_numpy()
    written = []
    for o, part, side in ((outs[0], df[~mask], "train"), (outs[1], df[mask], "holdout")):
        m = {k: v for k, v in meta.items() if k not in ("counts", "noise_floor")}
        m.update(created=now_iso(), split_from={"path": str(path), "side": side, "holdout": holdout, "seed": seed})
        written.append(write_profiles(o, part.reset_index(drop=True), m))
    return written[0], written[1]


def shipped(name: str) -> Path:
    """Path of a dataset shipped under data/profiles/ (e.g. ``shipped("tiny-cpu-ort")``)."""
    p = SHIPPED_DIR / (name if name.endswith(".parquet") else f"{name}.parquet")
    if not p.is_file():
        have = ", ".join(sorted(q.stem for q in SHIPPED_DIR.glob("*.parquet"))) or "none"
        raise UserError(f"no shipped profile dataset {name!r} (shipped: {have})")
    return p
