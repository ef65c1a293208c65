"""Does ``auto`` fit as well as the best single model? Held-out archs, many random splits.

    python benchmarks/bench_auto_choice.py                 # the shipped datasets with >= 100 archs, 10 splits
    python benchmarks/bench_auto_choice.py --splits 3 --data data/profiles/tiny-cpu-ort.parquet

No timing: every figure is a prediction error on archs measured earlier (the datasets' own
machines). For each dataset and split seed s: a random 25% of the archs is held out (at most 300
of the rest train, as in bench_predictors.py, whose split seed 0 is this one's), and on the same
split are fitted: every candidate of ``auto`` alone (flops-linear, gbt, rf, hybrid), ``auto``
itself (the stack), and, read off ``auto``'s own out-of-fold scores, the candidate the old rule
picked (lowest K-fold MAPE; "cv-pick"). One split's held-out set (37 archs on automoe-wmt)
is too small to rank models whose errors differ by tenths of a point, so the claim is made on
the mean over splits: ``auto``'s mean held-out MAPE minus that of the best single model (the one
with the lowest mean; target <= +0.2 points).

Resumable: the per-split rows are appended to ``--out`` as each split finishes; a rerun skips
the (dataset, split) pairs already there. The summary goes to ``<out stem>_summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from bench_calibrate import RESULTS, write_csv
from bench_predictors import SHIPPED, Config, split

from moenas.arch import UserError
from moenas.predictor import metrics as M
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.models import AUTO_CANDIDATES, make_model


def split_rows(name: str, ds: Dataset, seed: int, models: tuple[str, ...], confidence: float = 0.9) -> list[dict]:
    """One row per model (and one for the old cv-pick rule) on split ``seed`` of ``ds``."""
    tr, te = split(len(ds), Config(seed=seed))  # bench_predictors' split for the same seed
    xs = lambda idx: [ds.archs[i] for i in idx]  # noqa: E731
    rows, auto = {}, None
    for model in models:
        t = time.perf_counter()
        est = make_model(model, ds.protocol, ds.space, 5, seed).fit(xs(tr), ds.y[tr])
        fit_s = time.perf_counter() - t
        m, lo, hi = est.predict_interval(xs(te), confidence)
        r = M.report(ds.y[te], m, lo, hi, confidence)
        rows[model] = {
            "dataset": name,
            "device": ds.device,
            "space": ds.space,
            "split": seed,
            "n_train": len(tr),
            "n_test": len(te),
            "model": model,
            "chosen": est.description_,
            **{k: r[k] for k in ("mape", "within_10", "kendall_tau", "coverage")},
            "fit_s": fit_s,
        }
        if model == "auto":
            auto = est
    if auto is not None:
        singles = {c: s for c, s in auto.cv_scores_.items() if c != "stack"}
        pick = min(singles, key=singles.get)
        if pick in rows:
            rows["cv-pick"] = {**rows[pick], "model": "cv-pick", "chosen": pick, "fit_s": rows["auto"]["fit_s"]}
    return list(rows.values())


def summarise(rows: list[dict]) -> list[dict]:
    """Per dataset: mean held-out MAPE per model over the splits, the best single model, gaps."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        by: dict[str, list[float]] = {}
        for r in mine:
            by.setdefault(r["model"], []).append(float(r["mape"]))
        singles = [m for m in by if m not in ("auto", "cv-pick")]
        best = min(singles, key=lambda m: np.mean(by[m]))
        cov = [float(r["coverage"]) for r in mine if r["model"] == "auto"]
        for model, v in by.items():
            out.append(
                {
                    "dataset": name,
                    "model": model,
                    "splits": len(v),
                    "mape_mean": float(np.mean(v)),
                    "mape_sd": float(np.std(v)),
                    "gap_to_best_single": float(np.mean(v) - np.mean(by[best])),
                    "best_single": best,
                    "auto_coverage_mean": float(np.mean(cov)) if cov else None,
                }
            )
    return out


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=None, help="profile datasets [the shipped ones with >= --min-archs]")
    ap.add_argument("--min-archs", type=int, default=100, help="skip datasets with fewer valid archs [100]")
    ap.add_argument("--splits", type=int, default=10, help="random train/held-out splits per dataset [10]")
    ap.add_argument(
        "--models",
        nargs="*",
        default=[*AUTO_CANDIDATES, "auto"],
        help="models to fit on every split [auto's candidates and auto]",
    )
    ap.add_argument("--out", default=str(RESULTS / "bench_auto_choice.csv"))
    args = ap.parse_args(argv)
    try:
        if args.splits < 1:
            raise UserError(f"--splits must be >= 1, got {args.splits}")
        paths = args.data if args.data is not None else sorted(SHIPPED.glob("*.parquet"))
        datasets = [(Path(p).stem, load_dataset([p], "total")) for p in paths]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch()
    done = {(r["dataset"], int(r["split"])) for r in _read(out)}
    for name, ds in datasets:
        if len(ds) < args.min_archs:
            print(f"skip {name}: {len(ds)} archs < --min-archs {args.min_archs}")
            continue
        for seed in range(args.splits):
            if (name, seed) in done:
                continue
            rows = split_rows(name, ds, seed, tuple(args.models))
            write_csv(out, rows, append=True)
            print(f"{name} split {seed}: " + ", ".join(f"{r['model']} {r['mape']:.2f}" for r in rows), flush=True)
    rows = [r for r in _read(out) if int(r["split"]) < args.splits and r["dataset"] in {n for n, _ in datasets}]
    if not rows:
        print("error: no dataset was large enough", file=sys.stderr)
        return 2
    summary = summarise(rows)
    write_csv(out.with_name(out.stem + "_summary.csv"), summary)
    hdr = f"{'dataset':22s} {'model':13s} {'splits':>6s} {'MAPE% mean':>10s} {'sd':>5s} {'vs best single':>14s}"
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for s in summary:
        print(
            f"{s['dataset']:22s} {s['model']:13s} {s['splits']:6d} {s['mape_mean']:10.2f} {s['mape_sd']:5.2f} "
            f"{s['gap_to_best_single']:+14.2f}" + ("  (best single)" if s["model"] == s["best_single"] else "")
        )
    print(f"\nper-split rows: {out}; summary: {out.with_name(out.stem + '_summary.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
