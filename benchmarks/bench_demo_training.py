"""Which training settings make the demo's supernet translate within its time budget?

Claim measured: with the demo's wall-time budget for training (about 10 minutes on the
project's 2-core CPU), which recipe (tokens per batch, uniform vs sandwich sampling, peak
learning rate, warm-up, schedule) gives the largest arch the best BLEU and the smallest and
largest archs a loss spread >= 0.5 nats. Each recipe trains one supernet on the embedded
corpus with the `tiny` space for the same number of *tokens*, evaluating validation loss and
BLEU (greedy, 200 validation sentences) of the largest and smallest arch along the way.

Resumable: each recipe is a checkpoint under --work; a rerun resumes unfinished ones and skips
finished ones (run it again after an interruption). Nothing is timed against anything else
running: tokens/s is recorded, but compare recipes by loss/BLEU per token, not by time,
unless the machine was quiet (see the README).

    python benchmarks/bench_demo_training.py --recipes u4k-3e3-cos,s4k-3e3-cos
    python benchmarks/bench_demo_training.py --list

Results: benchmarks/results/bench_demo_training.csv (one row per recipe x evaluation x arch).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from moenas.profiler.fingerprint import bench_environment
from moenas.search.checkpoint import read_checkpoint
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

RESULTS = Path(__file__).parent / "results"
TOKENS_PER_STEP = {
    1024: 1850,
    2048: 3700,
    4096: 7400,
    8192: 14800,
}  # approximate mean non-pad tokens per batch (4096 measured, others scaled); labels the CSV's tokens column only


def _recipe(sampling: str, max_tokens: int, lr: float, schedule: str, warmup: int, steps: int, **kw) -> dict:
    return dict(
        sampling=sampling,
        max_tokens=max_tokens,
        lr=lr,
        schedule=schedule,
        warmup=warmup,
        steps=steps,
        sandwich_random=1,
        **kw,
    )


# Steps chosen so that each recipe costs about the same training time on the 2-core CPU (per-step
# costs from benchmarks/bench_training.py on a quiet machine).
RECIPES = {
    "u4k-3e3-cos": _recipe("uniform", 4096, 3e-3, "cosine", 100, 648),
    "s4k-3e3-cos": _recipe("sandwich", 4096, 3e-3, "cosine", 50, 249),
    "u2k-3e3-cos-d0": _recipe("uniform", 2048, 3e-3, "cosine", 100, 1200, dropout=0.0),
    "u1k-3e3-cos-d0": _recipe("uniform", 1024, 3e-3, "cosine", 100, 1800, dropout=0.0),
    "u2k-5e3-cos-d0": _recipe("uniform", 2048, 5e-3, "cosine", 100, 1200, dropout=0.0),
    "s2k-3e3-cos-d0": _recipe("sandwich", 2048, 3e-3, "cosine", 100, 500, dropout=0.0),
}


def run_recipe(name: str, work: Path, evals: int, collect: bool = False) -> list[dict]:
    """Train (or resume) one recipe and return its history rows; ``collect``: only read what
    is on disk (an unfinished run's rows are marked by ``completed`` = False)."""
    r = RECIPES[name]
    out = work / f"{name}.pt"
    cfg = TrainConfig(
        space="tiny",
        corpus="default",
        eval_every=max(r["steps"] // evals, 1),
        valid_sentences=200,
        bleu_sentences=200,
        progress=False,
        **r,
    )
    if collect and not out.exists():
        return []
    done = out.exists() and read_checkpoint(out)["step"] >= cfg.steps
    meta = (
        read_checkpoint(out)["meta"]
        if done or collect
        else train(cfg, out, resume=out.exists(), log=lambda m: print(f"[{name}] {m}", file=sys.stderr, flush=True))
    )
    rows = []
    for h in meta["history"]:
        rows.append(
            {
                "recipe": name,
                **{k: r.get(k) for k in ("sampling", "max_tokens", "lr", "schedule", "warmup", "steps")},
                "dropout": r.get("dropout", 0.1),
                "step": h["step"],
                "tokens": h["step"] * TOKENS_PER_STEP[r["max_tokens"]],
                "arch": h["arch"],
                "val_loss": h["val_loss"],
                "bleu_valid": h.get("bleu"),
                "completed": meta["steps"] >= r["steps"],
                "tokens_per_s": meta.get("tokens_per_s"),
                "wall_s": meta.get("wall_s"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names (default: all)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench_demo_training"), help="checkpoints (resumable)")
    ap.add_argument("--evals", type=int, default=5, help="evaluations along each run (default: 5)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_demo_training.csv")
    ap.add_argument("--list", action="store_true", help="print the recipes and exit")
    ap.add_argument("--collect", action="store_true", help="train nothing: tabulate the checkpoints under --work")
    args = ap.parse_args(argv)
    if args.list:
        for k, v in RECIPES.items():
            print(k, v)
        return 0
    torch.set_num_threads(max(torch.get_num_threads(), 2))
    env = bench_environment()
    rows = []
    for name in args.recipes.split(","):
        if name not in RECIPES:
            print(f"unknown recipe {name!r} (see --list)", file=sys.stderr)
            return 2
        rows += [{**row, **env} for row in run_recipe(name, args.work, args.evals, args.collect)]
        if not rows:
            continue
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    last = {}
    for row in rows:
        last[(row["recipe"], row["arch"])] = row
    print(f"{'recipe':18} {'arch':9} {'step':>5} {'val_loss':>8} {'BLEU':>6}")
    for (rec, arch), row in last.items():
        print(
            f"{rec:18} {arch:9} {row['step']:5d} {row['val_loss']:8.3f} {row['bleu_valid'] or float('nan'):6.2f}"
            + ("" if row["completed"] else "  (stopped early)")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
