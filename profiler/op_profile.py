"""Per-operator-type time from onnxruntime's profile traces (``--op-profile``): pure functions
over the trace JSON; the profiling sessions themselves run in
:meth:`moenas.profiler.backend_onnxruntime.OnnxRuntimeBackend.op_profile`.

The Chrome-trace JSON's node events (``cat == "Node"``, names ending in ``_kernel_time``) are
summed per ``args.op_name`` (durations in microseconds) and divided by the number of runs.
Result per component: {op_type: ms per run}, largest first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

GEMM_OPS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def trace_node_events(trace_path: str) -> list[dict[str, Any]]:
    """Kernel events of one onnxruntime profile: each has name, op_name, dur (us), args."""
    with open(trace_path) as f:
        events = json.load(f)
    out = []
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            args = e.get("args", {})
            out.append(
                {
                    "name": e["name"][: -len("_kernel_time")],
                    "op_name": args.get("op_name", "?"),
                    "dur": float(e.get("dur", 0)),
                    "args": args,
                }
            )
    return out


def ops_ms(events: list[dict[str, Any]], runs: int) -> dict[str, float]:
    """{op_type: ms per run} of kernel ``events`` that cover ``runs`` runs, largest first."""
    acc: dict[str, float] = defaultdict(float)
    for e in events:
        acc[e["op_name"]] += e["dur"] / 1e3
    return {k: round(v / runs, 6) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}


def sum_ops(first: dict[str, float], *rest: dict[str, float]) -> dict[str, float]:
    """Per-op sum of {op_type: ms} tables (the ``total`` component = the sum of its family's
    components), largest first."""
    out = dict(first)
    for table in rest:
        for k, v in table.items():
            out[k] = round(out.get(k, 0.0) + v, 6)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def expert_rows(events: list[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """Rows each MoE expert's first linear layer (``fc1``) processed in kernel ``events`` of
    any exported graph, keyed by (layer path, expert index), e.g. ``("enc_layers.0", 2)`` or
    ``("layers.1", 0)``: what shows that only routed rows run through an expert."""
    rows: dict[tuple[str, int], int] = {}
    for e in events:
        name = e["name"]
        if "/ffn/experts." in name and "/fc1/" in name and e["op_name"] in GEMM_OPS:
            layer = name.split("/ffn/")[0].split("/")[-1]
            expert = int(name.split("/ffn/experts.")[1].split("/")[0])
            shape = next(iter(e["args"]["input_type_shape"][0].values()))
            rows[(layer, expert)] = rows.get((layer, expert), 0) + int(np.prod(shape[:-1]))
    return rows
