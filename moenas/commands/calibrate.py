"""`moenas calibrate`: rescale a predictor to this machine from one timing of the reference model.

Every profile row carries the timing of the profiler's fixed reference model, and a predictor
keeps its training data's median of it (``predictor.json`` -> ``reference``). Here the same
model is timed with the profiler's method (its backend, device, threads, protocol and the stop
rule of its reference checks: a few seconds; :mod:`moenas.profiler.reference_timing`), and the
new predictor is the old one times factor = reference here / reference in the data, intervals
included (:func:`moenas.predictor.calibration.calibrated`). This module parses, runs and reports.
"""

from __future__ import annotations

import argparse
from typing import Any

from moenas.arch.checks import check_range

from ._common import check_writable, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="rescale a predictor to this machine from the reference model's timing",
        description="Time the profiler's fixed reference model on this machine (same backend, "
        "threads, protocol and stop rule as the predictor's data; a few seconds) and write "
        "a copy of the predictor whose predictions and intervals are multiplied by "
        "reference here / reference in its data. A pure rescale: for a correction per arch, "
        "measure ~20 archs here and use `moenas fit --base P`.",
    )
    p.add_argument("--predictor", required=True, metavar="P", help="predictor directory (from `moenas fit`)")
    p.add_argument("--out", required=True, metavar="P2", help="directory for the calibrated predictor")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="intra-op threads for the timing [the predictor data's; another count changes the factor too]",
    )
    p.add_argument(
        "--space",
        default=None,
        help="search space name or YAML that defines the reference model [the predictor's space]",
    )
    p.add_argument(
        "--checks",
        type=int,
        default=3,
        metavar="K",
        help="reference checks to take (each under the profiler's reference stop rule); their median counts [3]",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing predictor at --out")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.arch.files import output_lock
    from moenas.predictor import Predictor
    from moenas.predictor.calibration import calibrated
    from moenas.predictor.machine import holds_on
    from moenas.predictor.persist import check_out
    from moenas.profiler.fingerprint import fingerprint
    from moenas.profiler.reference_timing import progress, time_reference, timing_plan

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


def _report(
    args: argparse.Namespace, old: dict[str, Any], cal: dict[str, Any], source_fid: str | None, plan: dict[str, Any]
) -> None:
    """--json: one object; else the summary table and what the factor means."""
    from moenas.data.reference import stored_reference

    here, src = cal["here"], stored_reference(old) or {}
    if args.json:
        print_json(
            {
                "predictor": str(args.predictor),
                "out": str(args.out),
                "factor": cal["factor"],
                "reference_ms_here": cal["reference_ms_here"],
                "reference_ms_source": cal["reference_ms_source"],
                "noise_rel": cal["noise_rel"],
                "tolerance_rel": cal["tolerance_rel"],
                "beyond_noise": cal["beyond_noise"],
                "fingerprint_id_here": cal["fingerprint_id"],
                "fingerprint_id_source": source_fid,
                "reference_arch_id": here["arch_id"],
                "timing": {
                    k: here[k]
                    for k in (
                        "checks_ms",
                        "ci_rel",
                        "n_runs",
                        "precision_reached",
                        "threads_intra",
                        "timed_s",
                        "wall_s",
                    )
                },
            }
        )
        return
    noise = src.get("noise_rel")
    checks = ", ".join(f"{c:.3g}" for c in here["checks_ms"])
    rows = [
        [
            f"{args.predictor} (its data)",
            f"{cal['reference_ms_source']:.4g}",
            "-" if noise is None else f"±{noise:.1%} per check ({src.get('n_checks', '?')} checks)",
            source_fid or "?",
        ],
        [
            "this machine",
            f"{cal['reference_ms_here']:.4g}",
            f"checks {checks} ms, ±{here['ci_rel']:.1%} CI",
            cal["fingerprint_id"] or "?",
        ],
    ]
    print(table(rows, ["reference model", "median ms", "noise", "fingerprint"]))
    verdict = ("beyond" if cal["beyond_noise"] else "within") + f" the reference's noise, ±{cal['tolerance_rel']:.0%}"
    print(
        f"factor {cal['factor']:.4g} ({verdict}): {args.out} = {args.predictor} x {cal['factor']:.4g}, "
        "predictions and intervals"
    )
    for note in _notes(here, src, plan):
        print(f"note: {note}")
    print(
        "a pure rescale: archs that slow down unlike the reference keep their error; "
        f"`moenas fit --base {args.out} --data HERE.parquet` with ~20 archs measured here corrects them"
    )
    print(f"wrote {args.out}")


def _notes(here: dict[str, Any], src: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    """What makes this factor less trustworthy than usual."""
    out = []
    if src.get("threads_intra") and src["threads_intra"] != plan["threads_intra"]:
        out.append(
            f"timed with {plan['threads_intra']} thread(s), the data with {src['threads_intra']}: "
            "the factor includes the change of thread count"
        )
    spread = max(here["checks_ms"]) / min(here["checks_ms"]) - 1.0
    if not here["precision_reached"] or spread > 0.05:
        out.append(
            f"the checks spread {spread:.0%} and {'' if here['precision_reached'] else 'not '}all reached "
            f"±{plan['rule'].target_rel:.0%}: the machine is busy; calibrate again when it is quiet"
        )
    return out
