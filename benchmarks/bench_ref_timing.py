"""Claim: timing the reference model as one more member of each round-robin
group (``--ref-timing group``) costs less and flags less than a separate reference check after
each group (``alone``), without biasing the latencies; and letting it follow the group
(``follow``, the default since 2026-12-03: its minimum runs, then one run per visit) costs less
again, without biasing them.

The same archs are profiled under two methods (``--methods A B``, default ``alone group``)
with the profiler's full drift control (re-measurement, waits), in the order A, B, B, A (ABBA:
a slow drift of the machine's speed weighs on both methods alike). ``--preset automoe-wmt``
profiles automoe-wmt archs with the settings of the shipped automoe-wmt dataset (groups of 5,
visits of 5 runs, 16 s cap, drift threshold 10%). Per run: wall time, measurements (first,
re-measured, noise-floor repeats), flagged rows, reference checks and the seconds spent on the
reference, overhead fraction (1 - timed / wall), noise floor (repeat MAPE). The summary rows
compare the methods: mean of each figure per method, and the median ratio group / alone of the
archs' latencies (valid in every run; 1.00 = no bias).

    python benchmarks/bench_ref_timing.py              # 12 tiny archs, groups of 6, 3 repeats, 4 runs
    python benchmarks/bench_ref_timing.py --preset automoe-wmt --methods group follow --n-archs 10 \
        --out benchmarks/results/bench_ref_timing_follow.csv     # ~25 min on a 2-vCPU VM
    python benchmarks/bench_ref_timing.py --quick      # micro protocol and sizes (seconds; the test)

Results: benchmarks/results/bench_ref_timing.csv (device and versions in every row). Run it on a
quiet machine: it times things.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from moenas.arch import SearchSpace
from moenas.arch.protocol import LatencyProtocol
from moenas.data.profiles import latency_table, noise_floor, read_profiles
from moenas.profiler.fingerprint import fingerprint
from moenas.profiler.runner import ProfileConfig, Profiler
from moenas.profiler.stats import StopRule

RESULTS = Path(__file__).parent / "results" / "bench_ref_timing.csv"
METHODS = ("alone", "group", "follow")


@dataclass(frozen=True)
class BenchConfig:
    space: str = "tiny"
    n_archs: int = 12
    ref_every: int = 6
    repeat_check: int = 3
    seed: int = 4321
    protocol: LatencyProtocol = LatencyProtocol()
    rule: StopRule = StopRule()
    ref_wait_s: float = 10.0
    drift_threshold: float = 0.05
    visit_runs: int = 5
    visit_warmup: int = 1
    ref_retries: int = 3


# the shipped automoe-wmt dataset's settings (data/profiles/automoe-wmt-cpu-ort.parquet.json's command)
AUTOMOE = BenchConfig(
    space="automoe-wmt",
    n_archs=10,
    ref_every=5,
    repeat_check=2,
    seed=0,
    visit_warmup=0,
    rule=StopRule(warmup=2, min_runs=10, max_runs=200, max_seconds=16.0),
    ref_wait_s=5.0,
    drift_threshold=0.10,
    ref_retries=30,
)

# a smoke run: micro sizes, and no drift verdicts (its speeds mean nothing on a busy test machine)
QUICK = BenchConfig(
    n_archs=2,
    ref_every=2,
    repeat_check=1,
    protocol=LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2),
    rule=StopRule(warmup=1, min_runs=6, max_runs=8, max_seconds=0.2),
    ref_wait_s=0.0,
    drift_threshold=100.0,
)


def profile_once(c: BenchConfig, timing: str, out: Path) -> tuple[dict[str, Any], Any]:
    """One profiling run of the bench's archs; (its figures, its latency table)."""
    space = SearchSpace.load(c.space)
    pc = ProfileConfig(
        archs=space.sample_n(c.n_archs, seed=c.seed),
        out=out,
        space=space,
        protocol=c.protocol,
        rule=c.rule,
        ref_every=c.ref_every,
        repeat_check=c.repeat_check,
        ref_in_group=timing != "alone",
        ref_follow=timing == "follow",
        visit_runs=c.visit_runs,
        visit_warmup=c.visit_warmup,
        ref_retries=c.ref_retries,
        ref_wait_s=c.ref_wait_s,
        drift_threshold=c.drift_threshold,
        progress=False,
        command=["bench_ref_timing"],
    )
    s = Profiler(pc).run()
    df, meta = read_profiles(out)
    tot = df[df["component"] == "total"]
    sec = s["seconds"]
    figures = {
        "ref_timing": timing,
        "wall_s": s["wall_s"],
        "measurements": int(len(tot)),
        "remeasured": int(tot["remeasured"].astype(bool).sum()),
        "rows_flagged": s["rows_flagged"],
        "archs_valid": s["archs_valid"],
        "reference_checks": s["reference_checks"],
        "reference_model_s": sec["reference_model"],
        "export_s": sec["export"],
        "timed_s": sec["timed"],
        "overhead_fraction": s["overhead_fraction"],
        "noise_floor_mape_percent": noise_floor(df),
    }
    return figures, latency_table(df).set_index("arch_id")["median_ms"]


def summary_rows(runs: list[dict[str, Any]], tables: list[Any], methods: tuple[str, str]) -> list[dict[str, Any]]:
    """Per method: the mean of each figure over its runs; and the bias row (B / A median
    latency ratio over the archs valid in every run)."""
    a_name, b_name = methods
    out = []
    for timing in methods:
        mine = [r for r in runs if r["ref_timing"] == timing]
        row: dict[str, Any] = {"run": f"mean {timing}", "ref_timing": timing}
        for k, v in mine[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals = [r[k] for r in mine if r[k] is not None]
                row[k] = round(float(np.mean(vals)), 4) if vals else None
        out.append(row)
    common = set.intersection(*(set(t.index) for t in tables))
    if common:
        ids = sorted(common)
        alone = np.mean([t.loc[ids].to_numpy() for t, r in zip(tables, runs) if r["ref_timing"] == a_name], axis=0)
        group = np.mean([t.loc[ids].to_numpy() for t, r in zip(tables, runs) if r["ref_timing"] == b_name], axis=0)
        out.append(
            {
                "run": "bias",
                "ref_timing": f"{b_name} / {a_name}",
                "archs_valid": len(ids),
                "latency_ratio_median": round(float(np.median(group / alone)), 4),
                "latency_ratio_p10": round(float(np.percentile(group / alone, 10)), 4),
                "latency_ratio_p90": round(float(np.percentile(group / alone, 90)), 4),
            }
        )
    return out


def write_stamped(rows: list[dict[str, Any]], path: Path, fp: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write ``rows`` as CSV, every row stamped with the machine (``fp``, a profiler fingerprint),
    the versions, ``extra`` settings and the date. Rows already in ``path`` from other machines
    (another fingerprint) are kept, first: a timing is only worth its machine, and a rerun on a
    second one must not erase the first one's record."""
    stamp = {
        "device": fp["cpu_model"],
        "cores": fp["cpu_cores"],
        "fingerprint_id": fp["fingerprint_id"],
        "onnxruntime": fp["onnxruntime_version"],
        "torch": fp["torch_version"],
        "moenas": fp["moenas_version"],
        **extra,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    kept = []
    if path.is_file():
        with path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("fingerprint_id") != fp["fingerprint_id"]]
    new = [{**r, **stamp} for r in rows]
    fields = list(dict.fromkeys(k for r in kept + new for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(kept + new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="micro protocol and sizes (a smoke run)")
    ap.add_argument("--preset", choices=["tiny", "automoe-wmt"], default="tiny", help="space and profiler settings")
    ap.add_argument(
        "--methods",
        nargs=2,
        choices=METHODS,
        default=["alone", "group"],
        metavar="M",
        help=f"the two reference timings compared, A B (of {', '.join(METHODS)}; order A B B A)",
    )
    ap.add_argument("--n-archs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.methods[0] == args.methods[1]:
        print("bench_ref_timing: error: --methods needs two different timings", file=sys.stderr)
        return 2
    c = QUICK if args.quick else AUTOMOE if args.preset == "automoe-wmt" else BenchConfig()
    if args.n_archs:
        c = replace(c, n_archs=args.n_archs)
    methods = tuple(args.methods)
    order = (methods[0], methods[1], methods[1], methods[0])
    fp = fingerprint("cpu")
    runs, tables = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ref-timing-") as tmp:
        for i, timing in enumerate(order):
            figures, table = profile_once(c, timing, Path(tmp) / f"{i}-{timing}.parquet")
            runs.append({"run": str(i + 1), **figures})
            tables.append(table)
            print(
                f"run {i + 1} ({timing}): {figures['measurements']} measurements, {figures['rows_flagged']} rows flagged, "
                f"{figures['wall_s']:.1f} s, overhead {figures['overhead_fraction']:.1%}",
                file=sys.stderr,
                flush=True,
            )
    rows = runs + summary_rows(runs, tables, methods)
    write_stamped(rows, args.out, fp, {"space": c.space, "n_archs": c.n_archs, "ref_every": c.ref_every})
    cols = [
        "run",
        "ref_timing",
        "wall_s",
        "measurements",
        "rows_flagged",
        "reference_model_s",
        "overhead_fraction",
        "noise_floor_mape_percent",
        "latency_ratio_median",
    ]
    print("  ".join(f"{k:>18}" for k in cols))
    for r in rows:
        print("  ".join(f"{_fmt(r.get(k)):>18}" for k in cols))
    print(f"device: {fp['cpu_model']} ({fp['cpu_cores']} logical cores); wrote {args.out}")
    return 0


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
