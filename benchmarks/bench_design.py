"""Does choosing the archs to measure beat measuring random ones? Learning curves per design.

    python benchmarks/bench_design.py                                  # tiny-cpu-ort, 5 seeds
    python benchmarks/bench_design.py --data data/profiles/automoe-wmt-cpu-ort.parquet --holdout 40 --n 25 50 100
    python benchmarks/bench_design.py --resume                          # skip (dataset, seed, design, n) done

No new timing: a shipped dataset stands in for the machine. Per seed, ``--holdout`` archs are
held out at random (the archs a search would ask about); the rest is the candidate pool, whose
latencies stay hidden until a design picks an arch. Each design of ``moenas profile --design``
(moenas.predictor.design) picks ``n`` archs from the pool:

- ``random``: a seeded random subset;
- ``space-filling``: greedy maximin over the cost model's features;
- ``uncertainty``: ``--start`` space-filling archs, then batches of ``--batch`` where a forest
  fitted on the archs picked so far disagrees most (its latencies revealed batch by batch, as a
  profiling campaign would measure them).

The ``auto`` predictor is fitted on the picked archs and scored on the held-out ones: MAPE,
share within +-10%, Kendall tau and 90% interval coverage. Target (tiny CPU set): >= 99% within
+-10% from <= 100 chosen archs.

Results: benchmarks/results/bench_design.csv (one row per dataset, seed, design and n; the
machine the dataset was measured on, and this run's versions, in every row).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from bench_calibrate import RESULTS, SHIPPED, device_label, write_csv

from moenas.predictor import metrics as M
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.design import DESIGNS, choose
from moenas.predictor.models import make_model


def picks(design: str, pool: Dataset, n: int, seed: int, start: int, batch: int) -> list[int]:
    """Pool indices a design measures to reach ``n`` archs. Uncertainty is sequential: each
    batch is chosen after the latencies of the previous ones are known."""
    if design != "uncertainty":
        return choose(design, pool.archs, n, seed=seed, protocol=pool.protocol)
    got = choose("space-filling", pool.archs, min(start, n), protocol=pool.protocol)
    while len(got) < n:
        more = choose(
            "uncertainty",
            pool.archs,
            min(batch, n - len(got)),
            [pool.archs[i] for i in got],
            pool.y[got],
            seed=seed,
            protocol=pool.protocol,
        )
        got += more
    return got


def score(train: Dataset, test: Dataset, seed: int, model: str) -> dict[str, float]:
    """Held-out metrics of ``model`` fitted on ``train``."""
    m = make_model(model, protocol=train.protocol, space=train.space, random_state=seed).fit(train.archs, train.y)
    mean, lo, hi = m.predict_interval(test.archs, 0.9)
    return {
        "mape": M.mape(test.y, mean),
        "within_10": M.within(test.y, mean, 10.0),
        "kendall_tau": M.kendall_tau(test.y, mean),
        "coverage_90": M.coverage(test.y, lo, hi),
    }


def done_keys(path: Path) -> set[tuple[str, str, str, str]]:
    if not path.exists() or path.stat().st_size == 0:
        return set()
    with path.open() as f:
        return {(r["dataset"], r["seed"], r["design"], r["n"]) for r in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHIPPED, help="a profile dataset (the stand-in machine)")
    ap.add_argument("--holdout", type=int, default=120, help="archs held out for scoring")
    ap.add_argument("--n", type=int, nargs="+", default=[25, 50, 100, 200], help="archs picked")
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--start", type=int, default=10, help="uncertainty: space-filling archs before the first fit")
    ap.add_argument("--batch", type=int, default=10, help="uncertainty: archs per batch")
    ap.add_argument("--model", default="auto", help="predictor fitted on the picks")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_design.csv")
    ap.add_argument("--resume", action="store_true", help="append to --out, skipping rows it has")
    a = ap.parse_args(argv)
    ds = load_dataset([a.data])
    if not 5 <= a.holdout <= len(ds) - 10 or max(a.n) > len(ds) - a.holdout or min(a.n) < 5:
        print(
            f"--holdout in [5, {len(ds) - 10}] and --n in [5, {len(ds)} - holdout] for {len(ds)} archs", file=sys.stderr
        )
        return 2
    if a.out.exists() and not a.resume:
        print(f"{a.out} exists: --resume to continue it, or another --out", file=sys.stderr)
        return 2
    done, name = done_keys(a.out), a.data.name.removesuffix(".parquet")
    for seed in a.seeds:
        perm = np.random.default_rng(seed).permutation(len(ds))
        test, pool = ds.subset(perm[: a.holdout]), ds.subset(perm[a.holdout :])
        for design in a.designs:
            for n in sorted(a.n):
                if (name, str(seed), design, str(n)) in done:
                    continue
                t0 = time.perf_counter()
                got = picks(design, pool, n, seed, a.start, a.batch)
                row = {
                    "dataset": name,
                    "seed": seed,
                    "design": design,
                    "n": n,
                    "holdout": a.holdout,
                    "model": a.model,
                    **score(pool.subset(got), test, seed, a.model),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "measured_on": device_label(ds),
                }
                write_csv(a.out, [row], append=True)
                print(
                    f"seed {seed} {design:13s} n={n:3d}  MAPE {row['mape']:5.2f}%  within10 {row['within_10']:5.1f}%  "
                    f"cov90 {row['coverage_90']:5.1f}%  ({row['seconds']} s)",
                    flush=True,
                )
    print(summary_table(a.out, name))
    return 0


def summary_table(path: Path, name: str) -> str:
    """Mean over seeds per (design, n): the learning curves side by side."""
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df["dataset"] == name]
    g = df.groupby(["design", "n"])[["mape", "within_10", "kendall_tau", "coverage_90"]].mean().round(2)
    g["seeds"] = df.groupby(["design", "n"]).size()
    return g.to_string()


if __name__ == "__main__":
    sys.exit(main())
