"""The demo's claim, measured: `moenas demo` answers with an arch that meets its budget when
measured, and says whether the searched MoE arch or the best dense arch wins at that budget.

For each seed, runs ``moenas demo --seed S --out WORK/sS`` (a fresh folder per seed; a seed
whose demo.json exists is not run again, so the benchmark resumes seed by seed across sessions),
then writes one CSV row per run, read from its demo.json: the answer and whether it met the
budget measured, each family's pick (measured latency, fitness ± error, BLEU), the verdict, the
stage times. Rows of other machines already in the CSV are kept.

Nothing else may run meanwhile: the demo times archs (and trains on both cores).

    python benchmarks/bench_demo.py --seeds 0 1 2 --work runs/bench_demo
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_ref_timing import write_stamped  # noqa: E402  one CSV stamp for the timing benchmarks

OUT = Path(__file__).parent / "results" / "bench_demo.csv"
STAGES = {"latency": "latency predictor", "train": "train the supernet", "search": "search under"}


def run_seed(seed: int, work: Path, extra: list[str]) -> dict[str, Any]:
    """The demo's summary for ``seed`` (run now unless its demo.json exists)."""
    out = work / f"s{seed}"
    summary = out / "demo.json"
    if not summary.exists():
        cmd = [sys.executable, "-m", "moenas", "demo", "--seed", str(seed), "--out", str(out), *extra]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=False)
    if not summary.exists():
        raise SystemExit(f"bench_demo: the demo of seed {seed} wrote no {summary}")
    return json.loads(summary.read_text())


def row(seed: int, s: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a demo run (every figure read from the field it names)."""
    fin, picks, f = s["final"], s["picks"], s["facts"]
    r: dict[str, Any] = {
        "seed": seed,
        "budget_ms": f["budget_ms"],
        "answer": fin["winner"],
        "answer_role": fin["winner_role"],
        "answer_meets_budget": bool(fin["winner"]) and picks["winner"]["meets_budget"],
        "loss_diff_searched_minus_dense": fin["loss_diff"],
        "loss_diff_se": fin["loss_diff_se"],
        "finalists": sum(fin["pool"].values()),
        "verdict": fin["verdict"],
    }
    for key in ("winner", "searched", "dense", "largest_dense", "random"):
        v = picks.get(key) or {}
        r.update(
            {
                f"{key}_arch": v.get("arch_id"),
                f"{key}_measured_ms": v.get("measured_ms"),
                f"{key}_loss": v.get("loss"),
                f"{key}_loss_se": v.get("loss_se"),
                f"{key}_bleu": v.get("bleu"),
                f"{key}_ffn_share": v.get("ffn_share"),
            }
        )
    sup = f.get("supernet", {})
    r.update(
        {
            "largest_bleu": sup.get("largest", {}).get("bleu"),
            "smallest_bleu": sup.get("smallest", {}).get("bleu"),
            "spread_nats": sup["smallest"]["val_loss"] - sup["largest"]["val_loss"] if len(sup) == 2 else None,
        }
    )
    for col, prefix in STAGES.items():
        r[f"{col}_s"] = next((v for k, v in s["timings_s"].items() if k.startswith(prefix)), None)
    r["total_s"] = s["timings_s"].get("total")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--work", type=Path, default=Path("runs/bench_demo"), help="one demo folder per seed [runs/bench_demo]"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("demo_args", nargs="*", help="more `moenas demo` flags, after --")
    args = ap.parse_args(argv)
    from moenas.profiler.fingerprint import fingerprint

    rows = [row(seed, run_seed(seed, args.work, args.demo_args)) for seed in args.seeds]
    write_stamped(rows, args.out, fingerprint("cpu"), {"runs": len(rows)})
    for r in rows:
        print(
            f"seed {r['seed']}: {r['answer_role']} {r['answer']} meets {r['answer_meets_budget']}, "
            f"{r['total_s']:.0f} s total, search {r['search_s']:.0f} s; {r['verdict']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
