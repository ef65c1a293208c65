"""Timing the reference model here the way a predictor's data timed it.

Every profile row carries the timing of the profiler's fixed reference model, and a predictor
keeps its training data's statistics of it (``predictor.json`` -> ``reference``, read by
:func:`moenas.data.reference.stored_reference`). :func:`timing_plan` says how to time the same
model so the two compare (backend, device, threads, protocol and the data's reference stop rule),
:func:`time_reference` times it as the profiler's reference checks do, and
:func:`reference_message` says when the timing here differs beyond the data's noise.

`moenas calibrate` rescales a predictor by the ratio; `moenas predict --check-reference` warns.
The predictor's metadata comes in as a plain dict: the profiler never imports the predictor.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import torch

from moenas.arch import SearchSpace, UserError
from moenas.arch.protocol import protocol_from_dict
from moenas.data.reference import beyond_noise, calibration_factor, stored_reference, tolerance

from .backends import get_backend
from .runner import REFERENCE_RULE, REFERENCE_SPACES, check_families, reference_arch
from .stats import StopRule, measure
from .workload import make_workload


def timing_plan(
    meta: dict[str, Any], where: str, threads: int | None = None, space: str | None = None
) -> dict[str, Any]:
    """How to time the reference so it compares with the predictor's data: space, protocol,
    backend, device, threads, export method, stop rule. UserError when that cannot be done here
    (no stored reference, unknown protocol, backend or space, or another reference model).
    ``meta``: the predictor's metadata; ``where`` names the predictor in the messages."""
    ref = stored_reference(meta)
    if ref is None:
        raise UserError(
            f"{where} stores no reference latency (fitted before moenas recorded it, or on data without "
            f"reference timings); refit it: `moenas fit --data DATA.parquet --out {where}-refit`"
        )
    if not meta.get("protocol"):
        raise UserError(f"{where} records no latency protocol; refit it with `moenas fit`")
    protocol = protocol_from_dict(meta["protocol"])  # UserError for a routing or family this moenas cannot time
    backend, device = ref.get("backend") or meta.get("backend"), ref.get("device") or meta.get("device") or "cpu"
    if backend in (None, "synthetic") or (meta.get("dataset") or {}).get("synthetic"):
        raise UserError(f"{where} was fitted on synthetic latencies (backend {backend!r}): nothing to time here")
    sp = SearchSpace.load(space or meta.get("space") or REFERENCE_SPACES.for_family(protocol.family))
    check_families([], protocol, sp)  # a --space of another family: no reference model of the predictor's
    arch = reference_arch(sp, protocol.family)
    if ref.get("arch_id") and ref["arch_id"] != arch.arch_id:
        raise UserError(
            f"the reference model of space {sp.name!r} is {arch.arch_id} here but {ref['arch_id']} in "
            f"{where}'s data (the space changed?); pass the space YAML it was profiled with as --space"
        )
    threads = int(threads or ref.get("threads_intra") or 1)
    get_backend(
        str(backend), str(device), threads, int(ref.get("threads_inter") or 1)
    )  # UserError: not on this machine
    rule = ref.get("stop_rule")
    return {
        "space": sp,
        "arch": arch,
        "protocol": protocol,
        "backend": str(backend),
        "device": str(device),
        "threads_intra": threads,
        "threads_inter": int(ref.get("threads_inter") or 1),
        "export_method": ref.get("export_method") or "torchscript",
        "rule": stop_rule(rule) if isinstance(rule, dict) else REFERENCE_RULE,
    }


def stop_rule(d: dict[str, Any]) -> StopRule:
    """The data's reference stop rule (fields this moenas does not know are dropped)."""
    return StopRule(**{f.name: d[f.name] for f in fields(StopRule) if f.name in d})


def time_reference(plan: dict[str, Any], checks: int = 3) -> dict[str, Any]:
    """Time the reference model as the profiler's reference checks do: one prepared session,
    then ``checks`` times ``measure`` under the reference stop rule (each one check as the
    profiler takes it). Returns the median of the checks' total medians (ms; one check slowed by
    a neighbour does not move it), each check, the median check's relative CI, and how it was
    timed."""
    be = get_backend(plan["backend"], plan["device"], plan["threads_intra"], plan["threads_inter"])
    before = torch.get_num_threads()
    torch.set_num_threads(plan["threads_intra"])  # the untimed torch work, as the profiler does
    t = time.perf_counter()
    try:
        runner = be.prepare(make_workload(plan["arch"], plan["protocol"], plan["export_method"]))
        try:
            ms = [measure(runner.step, plan["rule"]) for _ in range(max(1, checks))]
        finally:
            runner.close()
    finally:
        torch.set_num_threads(before)
    tot = sorted((m.summaries["total"] for m in ms), key=lambda s: s.median_ms)
    mid = tot[(len(tot) - 1) // 2]
    return {
        "median_ms": float(np.median([s.median_ms for s in tot])),
        "checks_ms": [s.median_ms for s in tot],
        "ci_rel": mid.ci_rel,
        "n_runs": sum(s.n_runs for s in tot),
        "precision_reached": all(s.precision_reached for s in tot),
        "arch_id": plan["arch"].arch_id,
        "backend": plan["backend"],
        "device": plan["device"],
        "threads_intra": plan["threads_intra"],
        "threads_inter": plan["threads_inter"],
        "stop_rule": asdict(plan["rule"]),
        "timed_s": sum(m.timed_s for m in ms),
        "wall_s": time.perf_counter() - t,
    }


def progress(command: str, plan: dict[str, Any], checks: int) -> None:
    """The one progress line (stderr) before the timing: it takes seconds."""
    r = plan["rule"]
    sys.stderr.write(
        f"moenas {command}: timing the reference model {plan['arch'].arch_id} (space {plan['space'].name}, "
        f"{plan['backend']} {plan['device']}, {plan['threads_intra']} thread(s), {checks} check(s) of "
        f"up to {r.max_runs} runs / {r.max_seconds:g} s) ...\n"
    )
    sys.stderr.flush()


def reference_message(meta: dict[str, Any], where: str, command: str) -> str | None:
    """Time the reference here (seconds; ``command`` names the progress line) and one line when
    it differs from the predictor's stored reference by more than its noise; None when it agrees."""
    plan = timing_plan(meta, where)
    progress(command, plan, 3)
    here = time_reference(plan, 3)
    ref = stored_reference(meta) or {}
    f = calibration_factor(here["median_ms"], ref["median_ms"])
    if not beyond_noise(f, ref.get("noise_rel")):
        return None
    return (
        f"warning: the reference model times {here['median_ms']:.4g} ms here, {ref['median_ms']:.4g} ms where "
        f"{where} holds (x{f:.3g}, beyond its ±{tolerance(ref.get('noise_rel')):.0%} noise): "
        f"`moenas calibrate --predictor {where} --out {where}-here` rescales it"
    )
