"""Per-operator-type time from onnxruntime's profiler (``--op-profile``).

A separate pair of sessions with ``enable_profiling`` runs the protocol's encoder and decoder
``runs`` times after one warm-up; the Chrome-trace JSON's node events (``cat == "Node"``,
names ending in ``_kernel_time``) are summed per ``args.op_name`` and divided by ``runs``.
Result: {"encoder": {op_type: ms per run}, "decoder": {...}}. These sessions are never the
ones whose latency is recorded (profiling adds overhead).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from typing import Any


def trace_node_events(trace_path: str) -> list[dict[str, Any]]:
    """Kernel events of one onnxruntime profile: each has name, op_name, dur (us), args."""
    with open(trace_path) as f:
        events = json.load(f)
    out = []
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            args = e.get("args", {})
            out.append({"name": e["name"][: -len("_kernel_time")], "op_name": args.get("op_name", "?"),
                        "dur": float(e.get("dur", 0)), "args": args})
    return out


def ops_ms(events: list[dict[str, Any]], runs: int) -> dict[str, float]:
    acc: dict[str, float] = defaultdict(float)
    for e in events:
        acc[e["op_name"]] += e["dur"] / 1e3
    return {k: round(v / runs, 6) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}


def ort_op_profile(backend, workload, runs: int = 3) -> dict[str, dict[str, float]]:
    from .backends import OrtRunner

    exp = workload.onnx()
    with tempfile.TemporaryDirectory(prefix="moenas-opprof-") as tmp:
        enc = backend.session(exp, "encoder", os.path.join(tmp, "enc"))
        dec = backend.session(exp, "decoder", os.path.join(tmp, "dec"))
        runner = OrtRunner(backend, workload, enc, dec)  # its set-up encoder run is profiled too
        runner.run_decoder()  # warm-up
        for _ in range(runs):
            runner.run_encoder()
            runner.run_decoder()
        enc_events = trace_node_events(enc.end_profiling())
        dec_events = trace_node_events(dec.end_profiling())
        runner.close()
    # encoder: 1 set-up run + `runs`; decoder: 1 warm-up + `runs`, each of decoder_steps steps
    return {"encoder": ops_ms(enc_events, runs + 1), "decoder": ops_ms(dec_events, runs + 1)}
