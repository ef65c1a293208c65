"""Profile rows: what one measurement becomes in the dataset (:data:`moenas.data.profiles.COLUMNS`).

Pure: :func:`measurement_rows` takes the measurement, the arch, its expert counts, the op
profile and the ids, and returns one row per component of the protocol's model family and one
for the total (encoder, decoder, total; prefill, decode, total); nothing is timed or read here.
What every row of a run shares (backend, device, threads, session options, protocol,
fingerprint, versions) is a :class:`RunColumns`, fixed once when the run starts.
Every row is checked against the schema (:func:`~moenas.data.profiles.check_row`), so a
misspelt or forgotten column fails at once instead of landing as an extra, empty column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from moenas.arch.arch import AnyArch
from moenas.arch.family import TOTAL
from moenas.arch.protocol import Protocol
from moenas.data.profiles import check_row, protocol_columns

from .fingerprint import ID_FIELDS
from .op_profile import sum_ops
from .stats import Measurement

# the fingerprint fields also stored together as the ``versions`` JSON column
VERSION_FIELDS = ("onnxruntime_version", "torch_version", "triton_version", "moenas_version", "python")


@dataclass(frozen=True)
class RunColumns:
    """The columns every row of one profiling run shares.

    ``session_options``: the backend's :meth:`~moenas.profiler.backend_base.Backend.session_options`;
    ``fingerprint``: :func:`~moenas.profiler.fingerprint.fingerprint` of the run's device;
    ``export_method``: None for a backend that times no ONNX export; ``target_rel``: the stop
    rule's precision target (a fraction)."""

    space: str | None
    backend: str
    device: str
    threads_intra: int
    threads_inter: int
    target_rel: float
    protocol: Protocol
    session_options: dict[str, Any]
    fingerprint: dict[str, Any]
    export_method: str | None
    run_id: str

    @cached_property
    def values(self) -> dict[str, Any]:
        """column -> value, computed once per run (the JSON columns included)."""
        fp, p = self.fingerprint, self.protocol
        return {
            "space": self.space,
            "backend": self.backend,
            "device": self.device,
            "target_rel": self.target_rel,
            "threads_intra": self.threads_intra,
            "threads_inter": self.threads_inter,
            "session_options": json.dumps(self.session_options, sort_keys=True),
            **protocol_columns(p),
            "protocol_id": p.protocol_id,
            **{k: fp[k] for k in ID_FIELDS},
            "versions": json.dumps({k: fp[k] for k in VERSION_FIELDS}, sort_keys=True),
            "fingerprint_id": fp["fingerprint_id"],
            "export_method": self.export_method,
            "run_id": self.run_id,
        }


def measurement_rows(
    run: RunColumns,
    arch: AnyArch,
    m: Measurement,
    expert_counts: dict[str, list[int]],
    ops: dict[str, dict[str, float]] | None,
    *,
    measurement_id: str,
    timestamp: str,
    repeat_index: int,
    remeasured: bool,
    ref_before_ms: float | None,
) -> list[dict[str, Any]]:
    """The rows of one measurement: one per component of the protocol's family, then the total
    (``run.protocol.family.row_components`` order).

    ``expert_counts``: routed tokens per expert ('encoder.i' / 'decoder.i' -> list);
    ``ops``: {component: {op_type: ms}} or None (the total's is their sum);
    ``ref_before_ms``: the reference check that opened this row's interval (None before the
    first). The drift columns start unjudged (the check that closes the interval sets them).
    ValueError when a row does not match the schema."""
    base = {
        **run.values,
        "arch_id": arch.arch_id,
        "arch_json": arch.to_json(),
        "n_warmup": m.n_warmup,
        "expert_counts": json.dumps(expert_counts, sort_keys=True),
        "timestamp": timestamp,
        "measurement_id": measurement_id,
        "drift_flag": False,
        "remeasured": remeasured,
        "repeat_index": repeat_index,
        "reference_ratio": None,
        "ref_before_ms": ref_before_ms,
        "ref_after_ms": None,
    }
    rows = []
    family = run.protocol.family
    for comp in family.row_components:
        op = None
        if ops is not None:
            op = ops.get(comp) if comp != TOTAL else sum_ops(*(ops[c] for c in family.components))
        row = {
            **base,
            "component": comp,
            **m.summaries[comp].to_dict(),
            "op_profile": json.dumps(op) if op is not None else None,
        }
        rows.append(check_row(row))
    return rows
