"""Training / holdout data for predictors, read through ``moenas.data.profiles``.

One predictor = one device, one backend, one protocol, one component; files that disagree on
any of these are refused with a one-line UserError naming the files and values.

Rows of any model family are read: a row's ``family`` column (empty, or absent in datasets
written before families existed: encoder-decoder) names the family, whose protocol class reads
the row's protocol columns (encoder-decoder: batch, src_len, decoder_steps, beam; decoder-only:
batch, prompt_len, decode_steps; both: routing and seeds) and whose targets ``target`` must be
one of (``family.targets``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from moenas.arch import Arch, UserError
from moenas.arch.arch import AnyArch
from moenas.arch.family import DEFAULT_FAMILY, FAMILIES, ModelFamily
from moenas.arch.protocol import PROTOCOLS, Protocol
from moenas.data.reference import reference_stats

from .names import TARGETS

FAMILY_COLUMN = "family"  # the row's model family; empty (or no such column): encoder-decoder


@dataclass
class Dataset:
    archs: list[AnyArch]  # all of the protocol's family
    y: np.ndarray  # median latency, ms
    arch_ids: list[str]
    target: str
    protocol: Protocol
    protocol_id: str
    space: str | None
    device: str
    backend: str
    fingerprint_id: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    noise_floor: float | None = None  # MAPE % between repeat measurements
    sha256: str = ""
    paths: list[str] = field(default_factory=list)
    synthetic: bool = False
    # the reference model's latency in these rows (data.reference.reference_stats); None = unknown
    reference: dict[str, Any] | None = None
    threads: dict[str, int | None] = field(
        default_factory=dict
    )  # threads_intra / threads_inter of the rows (None: mixed)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: Sequence[int]) -> "Dataset":
        idx = list(idx)
        return Dataset(
            [self.archs[i] for i in idx],
            self.y[idx],
            [self.arch_ids[i] for i in idx],
            self.target,
            self.protocol,
            self.protocol_id,
            self.space,
            self.device,
            self.backend,
            self.fingerprint_id,
            self.fingerprint,
            self.noise_floor,
            self.sha256,
            self.paths,
            self.synthetic,
            self.reference,
            self.threads,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "sha256": self.sha256,
            "n_archs": len(self),
            "target": self.target,
            "protocol": self.protocol.to_dict(),
            "protocol_id": self.protocol_id,
            "space": self.space,
            "device": self.device,
            "backend": self.backend,
            "fingerprint_id": self.fingerprint_id,
            "noise_floor_mape": self.noise_floor,
            "synthetic": self.synthetic,
            **self.threads,
        }

    def fitted_on(self) -> dict[str, Any]:
        """What a predictor meeting this data is compared on (:func:`predictor.api.fitted_on_differences`)."""
        return {"protocol": self.protocol, "backend": self.backend, "space": self.space, **self.threads}


def _one(values: pd.Series, what: str, path: str) -> Any:
    vals = values.dropna().unique()
    if len(vals) == 0:
        raise UserError(f"{path}: column {what} is empty")
    if len(vals) > 1:
        raise UserError(
            f"{path}: rows with {len(vals)} different {what} values ({', '.join(map(str, vals[:4]))}); "
            f"a predictor is fitted per {what}: split the dataset"
        )
    v = vals[0]
    return v.item() if hasattr(v, "item") else v


def _family(df: pd.DataFrame, path: str) -> ModelFamily:
    """The model family of a file's rows (:data:`FAMILY_COLUMN`; empty: encoder-decoder; the
    reader has checked each is known); UserError when the rows name two families."""
    if FAMILY_COLUMN not in df.columns:
        return DEFAULT_FAMILY
    names = sorted(set(df[FAMILY_COLUMN].astype("string").fillna(DEFAULT_FAMILY.name)))
    if len(names) > 1:
        raise UserError(
            f"{path}: rows of {len(names)} model families ({', '.join(names)}); "
            "a predictor is fitted per family: split the dataset"
        )
    return FAMILIES[names[0]]


def _row_protocol(row: pd.Series, path: str) -> Protocol:
    """The protocol a profile row was measured under, of the family its ``family`` column
    names (columns it lacks: the defaults); UserError naming ``path``."""
    from moenas.data.profiles import row_protocol

    try:
        return row_protocol(row)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _check_archs(archs: list[AnyArch], family: ModelFamily, paths: Sequence[str | Path]) -> None:
    """UserError when an arch's JSON names another family than its rows (a mislabelled file)."""
    bad = next((a for a in archs if a.family is not family), None)
    if bad is not None:
        raise UserError(
            f"{', '.join(map(str, paths))}: arch {bad.arch_id} is {bad.family.name}, "
            f"its rows say {family.name} (column {FAMILY_COLUMN!r})"
        )


def load_dataset(paths: Sequence[str | Path], target: str = "total") -> Dataset:
    """Read, check and join profile datasets into one (arch, median latency) table."""
    from moenas.data.profiles import latency_table, noise_floor, read_profiles, valid_rows

    if target not in TARGETS:
        raise UserError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if not paths:
        raise UserError("no dataset given (--data FILE.parquet)")
    frames, infos, digest = [], [], hashlib.sha256()
    for p in paths:
        df, meta = read_profiles(p)
        if len(df) == 0:
            raise UserError(f"{p}: the dataset is empty (no measurements)")
        family = _family(df, str(p))
        if target not in family.targets:
            raise UserError(
                f"{p}: target {target!r} is not one of the {family.name} family's ({', '.join(family.targets)})"
            )
        shape = PROTOCOLS.for_family(family).shape_fields
        missing = [c for c in shape if c not in df.columns or df[c].isna().all()]
        if missing:
            raise UserError(f"{p}: missing protocol columns {', '.join(missing)}")
        info = {"path": str(p), "meta": meta, "family": family.name}
        for col in ("protocol_id", "fingerprint_id", "device", "backend"):
            info[col] = str(_one(df[col], col, str(p)))
        info["space"] = str(_one(df["space"], "space", str(p))) if df["space"].notna().any() else meta.get("space")
        info["protocol"] = _row_protocol(df.iloc[0], str(p))
        frames.append(df)
        infos.append(info)
        digest.update(Path(p).read_bytes())
    for col, what in (
        ("family", "model families"),
        ("protocol_id", "latency protocols"),
        ("fingerprint_id", "devices"),
        ("backend", "backends"),
        ("space", "search spaces"),
    ):
        vals = {i["path"]: i[col] for i in infos}
        if len(set(vals.values())) > 1:
            raise UserError(
                f"the datasets were measured under different {what} "
                f"({'; '.join(f'{k}: {v}' for k, v in vals.items())}); fit one predictor per {col.replace('_id', '')}"
            )
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table = latency_table(df, target)
    table = table.drop_duplicates("arch_id", keep="last")
    table = table[np.isfinite(table["median_ms"].to_numpy(float)) & (table["median_ms"].to_numpy(float) > 0)]
    if len(table) == 0:
        raise UserError(f"{', '.join(map(str, paths))}: no valid {target} measurements")
    archs = [Arch.from_json(j) for j in table["arch_json"]]
    i0 = infos[0]
    _check_archs(archs, FAMILIES[i0["family"]], paths)
    return Dataset(
        archs=archs,
        y=table["median_ms"].to_numpy(float),
        arch_ids=list(table["arch_id"]),
        target=target,
        protocol=i0["protocol"],
        protocol_id=i0["protocol_id"],
        space=i0["space"],
        device=i0["device"],
        backend=i0["backend"],
        fingerprint_id=i0["fingerprint_id"],
        fingerprint=dict(i0["meta"].get("fingerprint") or {}),
        noise_floor=noise_floor(df, target),
        sha256=digest.hexdigest(),
        paths=[str(p) for p in paths],
        synthetic=any(bool(i["meta"].get("synthetic")) for i in infos) or i0["backend"] == "synthetic",
        reference=reference_stats(valid_rows(df, target, 0), [i["meta"] for i in infos]),
        threads={c: _single_int(df[c]) if c in df else None for c in ("threads_intra", "threads_inter")},
    )


def _single_int(values: pd.Series) -> int | None:
    """The one value of an integer column, or None when it is empty or mixed."""
    vals = values.dropna().unique()
    return int(vals[0]) if len(vals) == 1 else None
