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
from moenas.arch.protocol import Protocol

from .budgets import QUANTITIES, protocol_of
from .constraints import LatencyConstraint, PredictsLatency
from .evolution import Candidate
from .report import BudgetCheck, Verification


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
    budgets: Sequence[LatencyConstraint] = (),
) -> list[Verification]:
    """(role, candidate) pairs -> Verification rows, timing the archs under the predictor's
    protocol with the profiler, round-robin in one run, when ``measure``.

    One budget of ``budget_ms`` on ``component`` as ``predictor`` predicts it; or ``budgets``,
    a search's latency constraints (each with its predictor, component and unit), which then
    take the place of those three: the first is the primary (the row's ``*_ms`` fields), the
    others go to its ``budgets``. The one round-robin times every component, and each budget is
    checked against its own; ``confidence`` is the level of the intervals shown."""
    checks = list(budgets) or [LatencyConstraint(predictor, budget_ms, component=component)]
    protocol = protocol_of(checks[0].predictor)
    archs = [c.arch for _, c in chosen]
    preds = [b.predictor.predict(archs, confidence=confidence) for b in checks]
    measured: list[dict[str, float] | None] = [None] * len(archs)
    factor = ref = None
    if measure:  # all chosen archs side by side, so their latency ratios are fair
        measured, factor, ref = _measure(archs, checks[0].predictor, protocol, backend, device, threads, rule)
    rows = []
    for i, (role, c) in enumerate(chosen):
        cost = protocol_cost(c.arch, protocol)
        first, *others = [_check(b, p, i, measured[i]) for b, p in zip(checks, preds)]
        rows.append(
            Verification(
                arch_id=c.arch.arch_id,
                role=role,
                loss=c.loss,
                predicted_ms=first.predicted_ms,
                predicted_low_ms=first.predicted_low_ms,
                predicted_high_ms=first.predicted_high_ms,
                measured_ms=first.measured_ms,
                budget_ms=first.budget_ms,
                gflops=cost.total_flops / 1e9,
                params_m=cost.params.total / 1e6,
                params_active_m=cost.params.active / 1e6,
                ffn_share=cost.ffn_share,
                loss_se=None if math.isnan(c.loss_se) else c.loss_se,
                reference_factor=factor,
                reference_noise_rel=(ref or {}).get("noise_rel") if factor else None,
                budget_name=first.name,
                unit=first.unit,
                budgets={o.name: o for o in others},
                timings=_timings(measured[i], protocol),
            )
        )
    return rows


def _measure(
    archs: list[Any], predictor: Any, protocol: Protocol, backend: str, device: str, threads: int, rule
) -> tuple[list[dict[str, float]], float | None, dict[str, Any] | None]:
    """Every component's median ms per arch ({component: ms}, the total too), timed in one
    round-robin with the reference model when the predictor's data has a comparable one; the
    reference's factor (now / then) and the reference."""
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
    timed = [{k: float(v["median_ms"]) for k, v in m.items() if isinstance(v, dict) and "median_ms" in v} for m in ms]
    factor = timed[-1][TOTAL] / ref["median_ms"] if ref else None
    return timed[: len(archs)], factor, ref


def _check(budget: LatencyConstraint, pred: Any, i: int, measured: dict[str, float] | None) -> BudgetCheck:
    """Arch ``i``'s prediction and measurement of ``budget``'s component, in its unit."""
    per = budget.per_step
    return BudgetCheck(
        budget.name,
        budget.unit,
        float(per(pred.mean[i])),
        float(per(pred.lower[i])),
        float(per(pred.upper[i])),
        None if measured is None else float(per(measured[budget.component])),
        budget.max_ms,
    )


def _timings(measured: dict[str, float] | None, protocol: Protocol) -> dict[str, float]:
    """Every latency figure of the protocol's family (budgets.QUANTITIES) from one arch's
    measured components; empty when unmeasured."""
    if measured is None:
        return {}
    return {q.name: q.of(measured[q.component], protocol) for q in QUANTITIES.for_family(protocol.family)}


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
