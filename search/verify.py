"""Re-measure chosen archs on the device and set the measurement beside the prediction.

A search result is only reported as meeting the budget when its measured latency does; the
predictor's interval is shown next to it so a reader sees how far the model was off. The fixed
reference model is timed in the same round-robin and set against the reference latency stored
with the predictor's data: a machine that runs slower now than when that data was measured (a
noisy shared host) shows as a factor beyond the reference's noise, so a miss is attributed to the
machine's drift rather than to the predictor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from moenas.arch.cost import protocol_cost
from moenas.arch.family import TOTAL
from moenas.arch.protocol import LatencyProtocol

from .constraints import PredictsLatency
from .evolution import Candidate
from .report import Verification


def protocol_of(predictor: Any) -> LatencyProtocol:
    """The latency protocol a predictor was fitted under (the default when it does not say)."""
    meta = getattr(predictor, "metadata", None) or {}
    return LatencyProtocol.from_dict(meta.get("protocol") or {})


def verify(
    chosen: Sequence[tuple[str, Candidate]],
    predictor: PredictsLatency,
    confidence: float,
    budget_ms: float | None,
    measure: bool = True,
    backend: str = "onnxruntime",
    device: str = "cpu",
    threads: int = 1,
    component: str = TOTAL,
    rule=None,
) -> list[Verification]:
    """(role, candidate) pairs -> Verification rows, timing the archs under the predictor's
    protocol with the profiler, round-robin in one run, when ``measure``."""
    protocol = protocol_of(predictor)
    archs = [c.arch for _, c in chosen]
    pred = predictor.predict(archs, confidence=confidence)
    measured: list[float | None] = [None] * len(archs)
    factor = None
    if measure:  # all chosen archs side by side, so their latency ratios are fair
        from moenas.profiler.runner import measure_archs

        ref = comparable_reference(predictor, backend, device, threads)
        kw = {"rule": rule} if rule is not None else {}  # None: the profiler's default stop rule
        ms = measure_archs(
            archs + ([ref["arch"]] if ref else []),
            backend=backend,
            device=device,
            threads_intra=threads,
            protocol=protocol,
            **kw,
        )
        measured = [float(m[component]["median_ms"]) for m in ms[: len(archs)]]
        if ref:
            factor = float(ms[-1][TOTAL]["median_ms"]) / ref["median_ms"]
    rows = []
    for (role, c), mean, lo, hi, meas in zip(chosen, pred.mean, pred.lower, pred.upper, measured):
        cost = protocol_cost(c.arch, protocol)
        rows.append(
            Verification(
                arch_id=c.arch.arch_id,
                role=role,
                loss=c.loss,
                predicted_ms=float(mean),
                predicted_low_ms=float(lo),
                predicted_high_ms=float(hi),
                measured_ms=meas,
                budget_ms=budget_ms,
                gflops=cost.total_flops / 1e9,
                params_m=cost.params.total / 1e6,
                params_active_m=cost.params.active / 1e6,
                ffn_share=cost.ffn_share,
                loss_se=None if math.isnan(c.loss_se) else c.loss_se,
                reference_factor=factor,
                reference_noise_rel=(ref or {}).get("noise_rel") if factor else None,
            )
        )
    return rows


def comparable_reference(predictor: Any, backend: str, device: str, threads: int) -> dict[str, Any] | None:
    """The reference latency stored with the predictor's data ({"arch", "median_ms",
    "noise_rel"}) when it was timed the way this re-measurement times (same backend, device,
    intra-op threads, same reference arch); None otherwise (then no drift is judged)."""
    from moenas.arch import SearchSpace, UserError
    from moenas.data.reference import stored_reference
    from moenas.profiler.runner import reference_arch

    meta = getattr(predictor, "metadata", None) or {}
    stored = stored_reference(meta)
    if not stored or (stored.get("backend"), stored.get("device"), stored.get("threads_intra")) != (
        backend,
        device,
        threads,
    ):
        return None
    try:
        arch = reference_arch(SearchSpace.load(meta["space"]) if meta.get("space") else None)
    except UserError:  # a space this install does not ship: no reference to time
        return None
    if stored.get("arch_id") not in (None, arch.arch_id):
        return None
    return {"arch": arch, "median_ms": float(stored["median_ms"]), "noise_rel": stored.get("noise_rel")}
