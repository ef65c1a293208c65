"""Claim checked (why the 2-thread transfer target is so noisy): on this machine, is onnxruntime at 2
intra-op threads faster or slower than at 1 thread for the tiny space's reference model?

The shipped `tiny-cpu-ort-2t` dataset's reference checks (35-46 ms) were slower than the 1-thread
demo's (19-28 ms) twenty minutes apart, which is not a side-by-side comparison. Here the reference
model is timed the way `moenas calibrate` and the profiler's reference checks time it (one
prepared session, ``checks`` checks under the reference stop rule, the median of their medians)
at 1 and 2 threads in ABBA order, ``rounds`` times, in one run. Rows: each timing; then per
thread count the median over its timings and the spread, and the 2-thread / 1-thread ratio.

    python benchmarks/bench_ort_threads.py            # 2 rounds of ABBA, 3 checks each (3 rounds: ~1 min here)
    python benchmarks/bench_ort_threads.py --quick    # micro protocol (seconds; the test)

Results: benchmarks/results/bench_ort_threads.csv (device and versions in every row). Run it on a
quiet machine: it times things.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from bench_ref_timing import write_stamped  # one CSV stamp for the timing benchmarks

from moenas.arch import SearchSpace
from moenas.arch.protocol import LatencyProtocol
from moenas.profiler.fingerprint import fingerprint
from moenas.profiler.reference_timing import time_reference
from moenas.profiler.runner import REFERENCE_RULE, reference_arch
from moenas.profiler.stats import StopRule

RESULTS = Path(__file__).parent / "results" / "bench_ort_threads.csv"
ABBA = (1, 2, 2, 1)


@dataclass(frozen=True)
class BenchConfig:
    space: str = "tiny"
    rounds: int = 2
    checks: int = 3
    protocol: LatencyProtocol = LatencyProtocol()
    rule: StopRule = REFERENCE_RULE


QUICK = BenchConfig(
    rounds=1,
    checks=1,
    protocol=LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2),
    rule=StopRule(warmup=1, min_runs=6, max_runs=8, max_seconds=0.5),
)


def plan(c: BenchConfig, threads: int) -> dict[str, Any]:
    """The reference timing plan `moenas calibrate` builds, at ``threads`` intra-op threads."""
    space = SearchSpace.load(c.space)
    return {
        "space": space,
        "arch": reference_arch(space),
        "protocol": c.protocol,
        "backend": "onnxruntime",
        "device": "cpu",
        "threads_intra": threads,
        "threads_inter": 1,
        "export_method": "torchscript",
        "rule": c.rule,
    }


def summary_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per thread count: median, min and max of the timings' reference medians (ms); then the
    ratio of the 2-thread median to the 1-thread median (> 1: 2 threads are slower)."""
    out, med = [], {}
    for t in sorted({r["threads"] for r in runs}):
        ms = [r["reference_ms"] for r in runs if r["threads"] == t]
        med[t] = float(np.median(ms))
        out.append(
            {
                "run": f"median {t} thread(s)",
                "threads": t,
                "reference_ms": round(med[t], 4),
                "min_ms": round(min(ms), 4),
                "max_ms": round(max(ms), 4),
                "timings": len(ms),
            }
        )
    if 1 in med and 2 in med:
        out.append({"run": "ratio 2 / 1 threads", "threads": "2/1", "ratio": round(med[2] / med[1], 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="micro protocol and one check (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None, help="ABBA rounds [2]")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    c = QUICK if args.quick else BenchConfig()
    if args.rounds is not None:
        if args.rounds < 1:
            print("bench_ort_threads: error: --rounds must be >= 1", file=sys.stderr)
            return 2
        c = replace(c, rounds=args.rounds)
    fp = fingerprint("cpu")
    runs, plans = [], {t: plan(c, t) for t in set(ABBA)}
    for i, threads in enumerate(ABBA * c.rounds):
        r = time_reference(plans[threads], checks=c.checks)
        runs.append(
            {
                "run": str(i + 1),
                "threads": threads,
                "reference_ms": round(r["median_ms"], 4),
                "ci_rel": round(r["ci_rel"], 4),
                "n_runs": r["n_runs"],
            }
        )
        print(f"timing {i + 1}: {threads} thread(s) {r['median_ms']:.2f} ms", file=sys.stderr, flush=True)
    rows = runs + summary_rows(runs)
    write_stamped(rows, args.out, fp, {"checks": c.checks})
    for r in rows[len(runs) :]:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    print(f"device: {fp['cpu_model']} ({fp['cpu_cores']} logical cores); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
