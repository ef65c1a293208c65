"""`moenas calibrate`: rescale a predictor to this machine from one timing of the reference model.

Every profile row carries the timing of the profiler's fixed reference model, and a predictor
keeps its training data's median of it (``predictor.json`` -> ``reference``). Here the same
model is timed with the profiler's method (its backend, device, threads, protocol and the stop
rule of its reference checks: a few seconds), and the new predictor is the old one times
factor = reference here / reference in the data, intervals included.

This module also holds the one-line warning `moenas predict` and `moenas search` print when
the machine is not the one a predictor holds on (:func:`warn_if_elsewhere`): the timing lives
here, in the command floor, because the predictor package may not import the profiler.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from moenas.arch import UserError
from moenas.arch.checks import check_range

from ._common import check_writable, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="rescale a predictor to this machine from the reference model's timing",
                       description="Time the profiler's fixed reference model on this machine (same backend, "
                                   "threads, protocol and stop rule as the predictor's data; a few seconds) and write "
                                   "a copy of the predictor whose predictions and intervals are multiplied by "
                                   "reference here / reference in its data. A pure rescale: for a correction per arch, "
                                   "measure ~20 archs here and use `moenas fit --base P`.")
    p.add_argument("--predictor", required=True, metavar="P", help="predictor directory (from `moenas fit`)")
    p.add_argument("--out", required=True, metavar="P2", help="directory for the calibrated predictor")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads for the timing [the predictor data's; another count changes the factor too]")
    p.add_argument("--space", default=None,
                   help="search space name or YAML that defines the reference model [the predictor's space]")
    p.add_argument("--checks", type=int, default=3, metavar="K",
                   help="reference checks to take (each under the profiler's reference stop rule); their median counts [3]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing predictor at --out")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


# ---- timing (the profiler's method) ------------------------------------------------------------------


def timing_plan(meta: dict[str, Any], where: str, threads: int | None = None, space: str | None = None) -> dict[str, Any]:
    """How to time the reference so it compares with the predictor's data: space, protocol,
    backend, device, threads, export method, stop rule. UserError when that cannot be done here
    (no stored reference, unknown protocol, backend or space, or another reference model).
    ``where`` names the predictor in the messages."""
    from moenas.arch import SearchSpace
    from moenas.predictor.calibrate import stored_reference
    from moenas.profiler.backends import get_backend
    from moenas.arch.protocol import LatencyProtocol
    from moenas.profiler.runner import REFERENCE_RULE, reference_arch

    ref = stored_reference(meta)
    if ref is None:
        raise UserError(f"{where} stores no reference latency (fitted before moenas recorded it, or on data without "
                        f"reference timings); refit it: `moenas fit --data DATA.parquet --out {where}-refit`")
    if not meta.get("protocol"):
        raise UserError(f"{where} records no latency protocol; refit it with `moenas fit`")
    protocol = LatencyProtocol.from_dict(meta["protocol"])  # UserError for a routing this moenas cannot time
    backend, device = ref.get("backend") or meta.get("backend"), ref.get("device") or meta.get("device") or "cpu"
    if backend in (None, "synthetic") or (meta.get("dataset") or {}).get("synthetic"):
        raise UserError(f"{where} was fitted on synthetic latencies (backend {backend!r}): nothing to time here")
    sp = SearchSpace.load(space or meta.get("space") or "tiny")
    arch = reference_arch(sp)
    if ref.get("arch_id") and ref["arch_id"] != arch.arch_id:
        raise UserError(f"the reference model of space {sp.name!r} is {arch.arch_id} here but {ref['arch_id']} in "
                        f"{where}'s data (the space changed?); pass the space YAML it was profiled with as --space")
    threads = int(threads or ref.get("threads_intra") or 1)
    get_backend(str(backend), str(device), threads, int(ref.get("threads_inter") or 1))  # UserError: not on this machine
    rule = ref.get("stop_rule")
    return {"space": sp, "arch": arch, "protocol": protocol, "backend": str(backend), "device": str(device),
            "threads_intra": threads, "threads_inter": int(ref.get("threads_inter") or 1),
            "export_method": ref.get("export_method") or "torchscript",
            "rule": _stop_rule(rule) if isinstance(rule, dict) else REFERENCE_RULE}


def _stop_rule(d: dict[str, Any]) -> Any:
    """The data's reference stop rule (fields this moenas does not know are dropped)."""
    from dataclasses import fields

    from moenas.profiler.stats import StopRule

    return StopRule(**{f.name: d[f.name] for f in fields(StopRule) if f.name in d})


def time_reference(plan: dict[str, Any], checks: int = 3) -> dict[str, Any]:
    """Time the reference model as the profiler's reference checks do: one prepared session,
    then ``checks`` times ``measure`` under the reference stop rule (each one check as the
    profiler takes it). Returns the median of the checks' total medians (ms; one check slowed by
    a neighbour does not move it), each check, the median check's relative CI, and how it was
    timed."""
    from dataclasses import asdict

    import numpy as np
    import torch

    from moenas.profiler.backends import get_backend
    from moenas.profiler.workload import Workload
    from moenas.profiler.stats import measure

    be = get_backend(plan["backend"], plan["device"], plan["threads_intra"], plan["threads_inter"])
    before = torch.get_num_threads()
    torch.set_num_threads(plan["threads_intra"])  # the untimed torch work, as the profiler does
    t = time.perf_counter()
    try:
        runner = be.prepare(Workload(plan["arch"], plan["protocol"], plan["export_method"]))
        try:
            ms = [measure(runner.step, plan["rule"]) for _ in range(max(1, checks))]
        finally:
            runner.close()
    finally:
        torch.set_num_threads(before)
    tot = sorted((m.summaries["total"] for m in ms), key=lambda s: s.median_ms)
    mid = tot[(len(tot) - 1) // 2]
    return {"median_ms": float(np.median([s.median_ms for s in tot])), "checks_ms": [s.median_ms for s in tot],
            "ci_rel": mid.ci_rel, "n_runs": sum(s.n_runs for s in tot), "precision_reached": all(s.precision_reached for s in tot),
            "arch_id": plan["arch"].arch_id, "backend": plan["backend"], "device": plan["device"],
            "threads_intra": plan["threads_intra"], "threads_inter": plan["threads_inter"],
            "stop_rule": asdict(plan["rule"]), "timed_s": sum(m.timed_s for m in ms), "wall_s": time.perf_counter() - t}


def progress(command: str, plan: dict[str, Any], checks: int) -> None:
    """The one progress line (stderr) before the timing."""
    r = plan["rule"]
    sys.stderr.write(f"moenas {command}: timing the reference model {plan['arch'].arch_id} (space {plan['space'].name}, "
                     f"{plan['backend']} {plan['device']}, {plan['threads_intra']} thread(s), {checks} check(s) of "
                     f"up to {r.max_runs} runs / {r.max_seconds:g} s) ...\n")
    sys.stderr.flush()


# ---- the command ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from moenas.arch.files import output_lock
    from moenas.predictor import Predictor
    from moenas.predictor.calibrate import calibrated, holds_on
    from moenas.predictor.persist import check_out
    from moenas.profiler.fingerprint import fingerprint

    check_range("--threads", args.threads, 1, integer=True)  # None: the predictor data's
    check_range("--checks", args.checks, 1, integer=True)
    check_writable(args.out, kind="dir")
    pred = Predictor.load(args.predictor)
    plan = timing_plan(pred.metadata, str(args.predictor), args.threads, args.space)  # refusals before any timing
    with output_lock(args.out, "predictor folder"):  # the whole run: a second calibrate into --out is refused
        check_out(args.out, args.overwrite)
        progress("calibrate", plan, args.checks)
        here = time_reference(plan, args.checks)
        fp = fingerprint(plan["device"])
        new = calibrated(pred, here, fp, source=str(args.predictor))
        new.save(args.out, overwrite=args.overwrite)
    cal = new.metadata["calibration"]
    _report(args, pred.metadata, cal, holds_on(pred.metadata), plan)
    return 0


def _report(args: argparse.Namespace, old: dict[str, Any], cal: dict[str, Any], source_fid: str | None,
            plan: dict[str, Any]) -> None:
    """--json: one object; else the summary table and what the factor means."""
    from moenas.predictor.calibrate import stored_reference

    here, src = cal["here"], stored_reference(old) or {}
    if args.json:
        print_json({"predictor": str(args.predictor), "out": str(args.out), "factor": cal["factor"],
                    "reference_ms_here": cal["reference_ms_here"], "reference_ms_source": cal["reference_ms_source"],
                    "noise_rel": cal["noise_rel"], "tolerance_rel": cal["tolerance_rel"],
                    "beyond_noise": cal["beyond_noise"], "fingerprint_id_here": cal["fingerprint_id"],
                    "fingerprint_id_source": source_fid, "reference_arch_id": here["arch_id"],
                    "timing": {k: here[k] for k in ("checks_ms", "ci_rel", "n_runs", "precision_reached",
                                                    "threads_intra", "timed_s", "wall_s")}})
        return
    noise = src.get("noise_rel")
    checks = ", ".join(f"{c:.3g}" for c in here["checks_ms"])
    rows = [[f"{args.predictor} (its data)", f"{cal['reference_ms_source']:.4g}",
             "-" if noise is None else f"±{noise:.1%} per check ({src.get('n_checks', '?')} checks)", source_fid or "?"],
            ["this machine", f"{cal['reference_ms_here']:.4g}", f"checks {checks} ms, ±{here['ci_rel']:.1%} CI",
             cal["fingerprint_id"] or "?"]]
    print(table(rows, ["reference model", "median ms", "noise", "fingerprint"]))
    verdict = ("beyond" if cal["beyond_noise"] else "within") + f" the reference's noise, ±{cal['tolerance_rel']:.0%}"
    print(f"factor {cal['factor']:.4g} ({verdict}): {args.out} = {args.predictor} x {cal['factor']:.4g}, "
          "predictions and intervals")
    for note in _notes(here, src, plan):
        print(f"note: {note}")
    print("a pure rescale: archs that slow down unlike the reference keep their error; "
          f"`moenas fit --base {args.out} --data HERE.parquet` with ~20 archs measured here corrects them")
    print(f"wrote {args.out}")


def _notes(here: dict[str, Any], src: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """What makes this factor less trustworthy than usual."""
    out = []
    if src.get("threads_intra") and src["threads_intra"] != plan["threads_intra"]:
        out.append(f"timed with {plan['threads_intra']} thread(s), the data with {src['threads_intra']}: "
                   "the factor includes the change of thread count")
    spread = max(here["checks_ms"]) / min(here["checks_ms"]) - 1.0
    if not here["precision_reached"] or spread > 0.05:
        out.append(f"the checks spread {spread:.0%} and {'' if here['precision_reached'] else 'not '}all reached "
                   f"±{plan['rule'].target_rel:.0%}: the machine is busy; calibrate again when it is quiet")
    return out


# ---- the warning of predict / search --------------------------------------------------------------------


def elsewhere_message(meta: dict[str, Any], where: str, here_fp: dict[str, Any]) -> str | None:
    """One line when the predictor holds on another machine than ``here_fp``; None when it is
    this one, or nothing is known (a predictor without fingerprint, or of synthetic data)."""
    from moenas.predictor.calibrate import holds_on, holds_on_fingerprint

    fid = holds_on(meta)
    if fid is None or meta.get("backend") == "synthetic" or (meta.get("dataset") or {}).get("synthetic"):
        return None
    if fid == here_fp.get("fingerprint_id"):
        return None
    there = holds_on_fingerprint(meta)
    diff = [k for k in ("cpu_model", "cpu_cores", "gpu_name", "os", "onnxruntime_version", "torch_version")
            if there and there.get(k) != here_fp.get(k)]
    what = f" (differs in {', '.join(diff)})" if diff else ""
    return (f"warning: {where} holds on machine {fid}, this is {here_fp.get('fingerprint_id')}{what}; latencies may "
            f"be off by a constant factor: `moenas calibrate --predictor {where} --out {where}-here` rescales it "
            f"(or `moenas fit --base {where}` from ~20 archs measured here)")


def reference_message(meta: dict[str, Any], where: str) -> str | None:
    """Time the reference here (seconds) and one line when it differs from the predictor's
    stored reference by more than its noise; None when it agrees."""
    from moenas.predictor.calibrate import beyond_noise, calibration_factor, stored_reference, tolerance

    plan = timing_plan(meta, where)
    progress("predict", plan, 3)
    here = time_reference(plan, 3)
    ref = stored_reference(meta) or {}
    f = calibration_factor(here["median_ms"], ref["median_ms"])
    if not beyond_noise(f, ref.get("noise_rel")):
        return None
    return (f"warning: the reference model times {here['median_ms']:.4g} ms here, {ref['median_ms']:.4g} ms where "
            f"{where} holds (x{f:.3g}, beyond its ±{tolerance(ref.get('noise_rel')):.0%} noise): "
            f"`moenas calibrate --predictor {where} --out {where}-here` rescales it")


def here_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """This machine's fingerprint (cheap: ``moenas.profiler`` imports its backends lazily)."""
    from moenas.profiler.fingerprint import fingerprint

    return fingerprint(device)


def warn_if_elsewhere(command: str, meta: dict[str, Any], where: str, check_reference: bool = False) -> str | None:
    """Print the fingerprint warning (and, with ``check_reference``, the reference-timing one) as
    one line on stderr; stdout is left alone so --json output stays parseable. Returns the line."""
    msg = elsewhere_message(meta, where, here_fingerprint(meta.get("device") or "cpu"))
    if check_reference:
        msg = reference_message(meta, where) or msg
    if msg:
        sys.stderr.write(f"moenas {command}: {msg}\n")
    return msg
