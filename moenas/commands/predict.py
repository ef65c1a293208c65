"""`moenas predict`: predicted latency (mean and interval) of archs from a saved predictor."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moenas.arch import UserError

from ._common import check_confidence, print_json, read_archs, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predicted latency of archs (mean and interval)",
        description="Predict the latency (ms) of each arch in ARCH.json or ARCHS.jsonl with a saved "
        "predictor: mean and a confidence interval.",
    )
    p.add_argument("--predictor", required=True, metavar="P", help="predictor directory (from `moenas fit`)")
    p.add_argument("archs", metavar="ARCH.json|ARCHS.jsonl", help="one arch (JSON) or many (JSON lines)")
    p.add_argument("--confidence", type=float, default=0.9, help="interval confidence [0.9]")
    p.add_argument("--json", action="store_true", help="print JSON (one object with a list of predictions)")
    p.add_argument(
        "--check-reference",
        action="store_true",
        help="also time the reference model here (a few seconds) and warn when it differs from the "
        "predictor's beyond its noise",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.arch import SearchSpace
    from moenas.predictor import Predictor

    check_confidence(args.confidence)
    pred = Predictor.load(args.predictor)
    space_name = pred.metadata.get("space")
    space = None
    if space_name:
        try:
            space = SearchSpace.load(space_name)
        except UserError:
            space = None
    archs = read_archs(args.archs, space)
    p = pred.predict(archs, confidence=args.confidence)
    rows = [{"arch_id": a.arch_id, **r} for a, r in zip(archs, p.records())]
    # after the input checks, so that bad input still gets its one line alone
    _warn_if_elsewhere(pred.metadata, str(args.predictor), check_reference=args.check_reference)
    if args.json:
        print_json(
            {
                "predictor": args.predictor,
                "target": pred.metadata.get("target"),
                "device": pred.metadata.get("device"),
                "confidence": args.confidence,
                "predictions": rows,
            }
        )
        return 0
    print(
        table(
            [[r["arch_id"], r["mean_ms"], r["lower_ms"], r["upper_ms"]] for r in rows],
            ["arch_id", "mean ms", f"{args.confidence:.0%} low", f"{args.confidence:.0%} high"],
        )
    )
    print(f"{pred.metadata.get('target')} latency on {pred.metadata.get('device')} ({pred.metadata.get('chosen')})")
    return 0


def _warn_if_elsewhere(meta: dict[str, Any], where: str, check_reference: bool = False) -> str | None:
    """Print the fingerprint warning (and, with ``check_reference``, the reference-timing one) as
    one line on stderr; stdout is left alone so --json output stays parseable. Returns the line."""
    from moenas.predictor.machine import elsewhere_message
    from moenas.profiler.fingerprint import fingerprint

    msg = elsewhere_message(meta, where, fingerprint(meta.get("device") or "cpu"))
    if check_reference:
        from moenas.profiler.reference_timing import reference_message

        msg = reference_message(meta, where, "predict") or msg
    if msg:
        sys.stderr.write(f"moenas predict: {msg}\n")
    return msg
