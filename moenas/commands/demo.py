"""`moenas demo`: the whole pipeline on embedded defaults (tiny scale, this CPU, ~15 minutes)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline: profile, fit, train, search, re-measure, compare",
                       description="Profile archs on this CPU, fit and evaluate a latency predictor, train a supernet "
                                   "on the embedded corpus, search under a latency budget, re-measure the winner and "
                                   "compare it with a dense arch of similar validation loss. Stages whose output "
                                   "exists in --out are reused, so an interrupted demo continues.")
    p.add_argument("--scale", default="tiny", choices=["tiny", "wmt"],
                   help="tiny: minutes on a CPU [default]; wmt: paper scale (automoe-wmt space, needs --corpus DIR, hours)")
    p.add_argument("--out", default="runs/demo", help="output folder [runs/demo]")
    p.add_argument("--corpus", default=None, help="'default' (gettext catalogs on this machine) or a folder of parallel text")
    p.add_argument("--reuse-profiles", action="store_true", help="fit on the shipped dataset instead of profiling this CPU")
    p.add_argument("--profile-n", type=int, default=None, help="archs to profile [tiny: 60]")
    p.add_argument("--train-steps", type=int, default=None, help="supernet training steps [tiny: 300]")
    p.add_argument("--iterations", type=int, default=None, help="evolution iterations [tiny: 8]")
    p.add_argument("--max-latency-ms", type=float, default=None, help="latency budget [the median profiled latency]")
    p.add_argument("--supernet", default=None, choices=["slice", "mos"], help="supernet kind [slice]")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.search.pipeline import Demo, DemoConfig

    cfg = DemoConfig.for_scale(args.scale, out=Path(args.out), corpus=args.corpus, reuse_profiles=args.reuse_profiles or None,
                               profile_n=args.profile_n, train_steps=args.train_steps, iterations=args.iterations,
                               max_latency_ms=args.max_latency_ms, supernet=args.supernet, seed=args.seed)
    s = Demo(cfg).run()
    if args.json:
        print_json(s)
        return 0
    b, d = s["searched"], s["dense"]
    rows = [[name, v["arch_id"], v["loss"], v["predicted_ms"], v["measured_ms"], v["gflops"], v["params_m"]]
            for name, v in (("searched MoE", b), ("dense, similar loss", d))]
    print()
    print(table(rows, ["arch", "id", "valid loss", "predicted ms", "measured ms", "GFLOPs", "params M"]))
    ratio = s["dense_over_searched_latency"]
    budget = s["facts"]["budget_ms"]
    verdict = "meets" if b["meets_budget"] else "DOES NOT meet"
    print(f"\nbudget {budget:.3g} ms: the searched arch {verdict} it when measured"
          + (f"; the dense arch is {ratio:.2f}x its latency." if ratio else "."))
    print(f"report: {Path(args.out) / 'README.md'}  (stage times: {s['timings_s']})")
    return 0 if b["meets_budget"] else 1
