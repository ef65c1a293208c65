"""Do a transferred predictor's 90% intervals cover 90% on the new machine?

    python benchmarks/bench_transfer_coverage.py                     # runs/demo + runs/coverage datasets
    python benchmarks/bench_transfer_coverage.py --other A.parquet B.parquet --repeats 200

No new timing: a predictor is fitted on the shipped tiny dataset (machine A) and transferred
(``moenas fit --base``: ``predictor.models.TransferModel``) to this machine from ``n`` archs
drawn at random from the datasets given with ``--other`` (all measured here, valid first
measurements); its intervals, the jackknife (leave-one-out residuals of the transfer fit, a
split-conformal quantile over them), are scored on every other arch of those datasets. Repeated
over ``--repeats`` random draws, because one draw of 20 archs is one coin: the table gives the
mean coverage over draws, its 10th percentile (how bad an unlucky user's draw is), MAPE and
Kendall tau. Target: 90% intervals cover >= 88% on held-out archs of the new machine.

``--demo DIR ...``: instead, each demo folder's own transferred predictor (``DIR/predictor``,
as `moenas demo` fitted it from its first ``transfer_n`` archs) on the archs the demo held out
(the last ``n_holdout`` of ``DIR/profiles.parquet``, its predictor's target), predicted through
``Predictor.predict``, the path search and the demo use (bench_transfer_coverage_demo.csv).

Results: benchmarks/results/bench_transfer_coverage.csv (both machines and the versions in every row).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_calibrate import RESULTS, ROOT, SHIPPED, device_label, write_csv

from moenas.predictor import metrics as M
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.transfer import TransferModel

OTHER = (ROOT / "runs" / "demo" / "profiles.parquet", ROOT / "runs" / "coverage" / "profiles.parquet")


def draws(base_model, other: Dataset, n: int, confidences: tuple[float, ...], repeats: int, seed: int) -> dict:
    """Per confidence: coverage of each of ``repeats`` random transfers from ``n`` archs (scored
    on the other archs), plus MAPE, tau and the interval's relative width per draw."""
    rng = np.random.default_rng(seed)
    out: dict[float, dict[str, list[float]]] = {
        c: {"coverage": [], "mape": [], "tau": [], "width": []} for c in confidences
    }
    for _ in range(repeats):
        perm = rng.permutation(len(other))
        fit, test = perm[:n], perm[n:]
        tm = TransferModel(base=base_model, random_state=seed).fit([other.archs[i] for i in fit], other.y[fit])
        test_archs, y = [other.archs[i] for i in test], other.y[test]
        for c in confidences:
            m, lo, hi = tm.predict_interval(test_archs, c)
            d = out[c]
            d["coverage"].append(M.coverage(y, lo, hi))
            d["mape"].append(M.mape(y, m))
            d["tau"].append(M.kendall_tau(y, m))
            d["width"].append(float(np.median((hi - lo) / m)) * 100)
    return out


def demo_rows(dirs: list[Path], confidence: float = 0.9) -> list[dict]:
    """One row per demo folder: its held-out archs' coverage, MAPE and count (see the docstring)."""
    import json

    from moenas.predictor import Predictor

    rows = []
    for d in dirs:
        facts = json.loads((d / "demo.json").read_text())["facts"]["predictor"]
        pred = Predictor.load(d / "predictor")
        ds = load_dataset([d / "profiles.parquet"], pred.metadata.get("target") or "total")
        n_hold = int(facts["n_holdout"])
        hold = ds.subset(list(range(len(ds) - n_hold, len(ds))))
        p = pred.predict(hold.archs, confidence)
        inside = (hold.y >= p.lower) & (hold.y <= p.upper)
        rows.append(
            {
                "demo": str(d),
                "space": pred.metadata.get("space"),
                "target": pred.metadata.get("target"),
                "model": pred.metadata.get("chosen"),
                "n_transfer": int(facts["n_train"]),
                "n_holdout": n_hold,
                "confidence": confidence,
                "covered": int(inside.sum()),
                "coverage": float(100 * inside.mean()),
                "mape": float(100 * np.mean(np.abs(p.mean / hold.y - 1))),
                "device_eval": device_label(ds),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shipped", type=Path, default=SHIPPED, help="machine A's dataset (the predictor's base)")
    ap.add_argument(
        "--other",
        type=Path,
        nargs="+",
        default=None,
        help="datasets measured on this machine (default: runs/demo and runs/coverage profiles)",
    )
    ap.add_argument("--n", type=int, nargs="+", default=[10, 20], help="archs measured here that fit the transfer")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--model", default="auto", help="base predictor's model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_transfer_coverage.csv")
    ap.add_argument("--demo", type=Path, nargs="+", default=None, help="demo folders: their held-out archs instead")
    a = ap.parse_args(argv)
    if a.demo:
        missing = [d for d in a.demo if not (d / "demo.json").is_file()]
        if missing:
            print(f"{missing[0]}: no demo.json (not a moenas demo folder)", file=sys.stderr)
            return 2
        rows = demo_rows(a.demo)
        out = a.out.with_name(a.out.stem + "_demo.csv")
        write_csv(out, rows)
        for r in rows:
            print(f"{r['demo']}: {r['target']} {r['covered']}/{r['n_holdout']} covered, MAPE {r['mape']:.2f}%")
        n, k = sum(r["n_holdout"] for r in rows), sum(r["covered"] for r in rows)
        print(f"pooled: {k}/{n} = {100 * k / n:.1f}% at 90% -> {out}")
        return 0
    paths = [p for p in (a.other or OTHER) if p.exists()]
    if not paths:
        print(
            f"no dataset of this machine found (looked for {', '.join(map(str, a.other or OTHER))}); "
            "profile some with `moenas profile --space tiny --n 60 --out runs/coverage/profiles.parquet`",
            file=sys.stderr,
        )
        return 2
    ship, other = load_dataset([a.shipped], "total"), load_dataset(paths, "total")
    if min(a.n) < 3 or max(a.n) > len(other) - 5:
        print(f"--n must be in [3, {len(other) - 5}] for {len(other)} archs measured here", file=sys.stderr)
        return 2
    pred, _ = fit_predictor(ship, a.model, folds=5, seed=a.seed, with_learning_curve=False)
    rows = []
    for n in a.n:
        for c, d in draws(pred.model, other, n, (0.8, 0.9, 0.95), a.repeats, a.seed).items():
            cov = np.asarray(d["coverage"])
            rows.append(
                {
                    "n_transfer": n,
                    "n_eval": len(other) - n,
                    "repeats": a.repeats,
                    "confidence": c,
                    "coverage_mean": float(cov.mean()),
                    "coverage_p10": float(np.percentile(cov, 10)),
                    "mape_mean": float(np.mean(d["mape"])),
                    "kendall_tau_mean": float(np.nanmean(d["tau"])),
                    "width_median_pct": float(np.median(d["width"])),
                    "base_model": pred.metadata.get("chosen"),
                    "device_fit": device_label(ship),
                    "device_eval": device_label(other),
                    "datasets_eval": " ".join(str(p) for p in paths),
                }
            )
    write_csv(a.out, rows)
    print(f"{'n':>3s} {'eval':>4s} {'conf':>5s} {'cover':>6s} {'p10':>6s} {'MAPE%':>6s} {'tau':>5s} {'width%':>6s}")
    for r in rows:
        print(
            f"{r['n_transfer']:3d} {r['n_eval']:4d} {r['confidence']:5.2f} {r['coverage_mean']:6.1f} "
            f"{r['coverage_p10']:6.1f} {r['mape_mean']:6.2f} {r['kendall_tau_mean']:5.3f} {r['width_median_pct']:6.1f}"
        )
    print(f"base: {device_label(ship)}\nhere: {device_label(other)}\n-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
