"""Re-measure chosen archs on the device and set the measurement beside the prediction.

A search result is only reported as meeting the budget when its measured latency does; the
predictor's interval is shown next to it so a reader sees how far the model was off.
"""
from __future__ import annotations

from typing import Any, Sequence

from moenas.arch.cost import param_count, protocol_cost
from moenas.arch.protocol import LatencyProtocol

from .constraints import PredictsLatency
from .evolution import Candidate
from .report import Verification


def protocol_of(predictor: Any) -> LatencyProtocol:
    """The latency protocol a predictor was fitted under (the default when it does not say)."""
    meta = getattr(predictor, "metadata", None) or {}
    return LatencyProtocol.from_dict(meta.get("protocol") or {})


def verify(chosen: Sequence[tuple[str, Candidate]], predictor: PredictsLatency, confidence: float,
           budget_ms: float | None, measure: bool = True, backend: str = "onnxruntime", device: str = "cpu",
           threads: int = 1, component: str = "total", rule=None) -> list[Verification]:
    """(role, candidate) pairs -> Verification rows, timing the archs under the predictor's
    protocol with the profiler, round-robin in one run, when ``measure``."""
    protocol = protocol_of(predictor)
    archs = [c.arch for _, c in chosen]
    pred = predictor.predict(archs, confidence=confidence)
    measured: list[float | None] = [None] * len(archs)
    if measure:  # all chosen archs side by side, so their latency ratios are fair
        from moenas.profiler.runner import measure_archs

        kw = {"rule": rule} if rule is not None else {}  # None: the profiler's default stop rule
        ms = measure_archs(archs, backend=backend, device=device, threads_intra=threads, protocol=protocol, **kw)
        measured = [float(m[component]["median_ms"]) for m in ms]
    rows = []
    for (role, c), mean, lo, hi, meas in zip(chosen, pred.mean, pred.lower, pred.upper, measured):
        rows.append(Verification(
            arch_id=c.arch.arch_id, role=role, loss=c.loss, predicted_ms=float(mean), predicted_low_ms=float(lo),
            predicted_high_ms=float(hi), measured_ms=meas, budget_ms=budget_ms,
            gflops=protocol_cost(c.arch, protocol).total_flops / 1e9, params_m=param_count(c.arch).total / 1e6))
    return rows
