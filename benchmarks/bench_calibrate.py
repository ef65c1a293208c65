"""How much of the cross-machine error the reference rescale alone removes.

    python benchmarks/bench_calibrate.py                       # shipped tiny set -> runs/demo/profiles.parquet
    python benchmarks/bench_calibrate.py --other OTHER.parquet --models hybrid

No new timing: both datasets were measured earlier, and every row carries the fixed reference
model's checks (ref_before_ms / ref_after_ms). A predictor is fitted on the shipped set
(``--shipped``, machine A) and predicts the archs of ``--other`` (machine B), as they are
(``uncorrected``), rescaled by reference median on B / reference median on A (what `moenas
calibrate` does, through the same code: ``predictor.calibration.calibrated``), and rescaled per arch
by the reference checks around that arch's own measurement (``per-row reference``: what a
calibration taken at the same moment would give). On B's valid archs (not drift-flagged) and, for
the per-row variant's sake, on all its archs including the drift-flagged ones (the flag means
"the reference was slower then", which the per-row factor accounts for).

``--components`` also asks where the one factor loses (``bench_calibrate_components.csv``): per
component (total, encoder, decoder) a predictor fitted on A, B's measured / predicted ratios
(median, 10th and 90th percentile), the MAPE of the reference factor against that of the best
constant, and how the ratio moves with the arch's size (Spearman rho of ratio and prediction).

Results: benchmarks/results/bench_calibrate.csv (both machines' fingerprints, this machine and
the package versions in every row). If ``--other`` is absent the script says so and exits 2.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
from pathlib import Path

import numpy as np

from moenas.arch import Arch
from moenas.data.profiles import read_profiles, valid_rows
from moenas.predictor import metrics as M
from moenas.predictor.api import fit_predictor
from moenas.predictor.calibration import calibrated
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.persist import versions
from moenas.profiler.fingerprint import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
SHIPPED = ROOT / "data" / "profiles" / "tiny-cpu-ort.parquet"
OTHER = ROOT / "runs" / "demo" / "profiles.parquet"
CONFIDENCE = 0.9


def device_label(ds: Dataset) -> str:
    """'cpu <fingerprint id> (<cpu>, <os>, onnxruntime <v>, torch <v>)': where a dataset was measured."""
    fp = ds.fingerprint or {}
    return (
        f"{ds.device} {ds.fingerprint_id} ({fp.get('cpu_model', '?')}, {fp.get('os', '?')}, "
        f"onnxruntime {fp.get('onnxruntime_version', '?')}, torch {fp.get('torch_version', '?')})"
    )


def eval_sets(path: Path, target: str = "total") -> dict[str, tuple[list[Arch], np.ndarray, np.ndarray]]:
    """(archs, measured ms, reference ms around each arch's measurement) of machine B: its valid
    first measurements, and the latest first measurement of every arch, drift-flagged or not."""
    df, _ = read_profiles(path)
    sel = df[(df["component"] == target) & (df["repeat_index"] == 0)]
    latest = sel.sort_values("timestamp", kind="stable").drop_duplicates("arch_id", keep="last")
    out = {}
    for name, rows in (("valid", valid_rows(df, target, 0)), ("all incl. drift-flagged", latest)):
        rows = rows.sort_values("arch_id")
        ref = rows[["ref_before_ms", "ref_after_ms"]].astype(float).mean(axis=1, skipna=True).to_numpy(float)
        out[name] = ([Arch.from_json(j) for j in rows["arch_json"]], rows["median_ms"].to_numpy(float), ref)
    return out


def rows_for(model: str, ship: Dataset, other: Dataset, sets: dict, seed: int) -> list[dict]:
    """Fit ``model`` on the shipped set; every correction on every evaluation set."""
    pred, _ = fit_predictor(ship, model, folds=5, seed=seed, with_learning_curve=False)
    ref_a, ref_b = ship.reference["median_ms"], other.reference["median_ms"]
    cal = calibrated(pred, {"median_ms": ref_b}, {"fingerprint_id": other.fingerprint_id}, source=str(ship.paths[0]))
    out = []
    for set_name, (archs, y, ref_rows) in sets.items():
        base = pred.predict(archs, CONFIDENCE)
        glob = cal.predict(archs, CONFIDENCE)
        per_row = ref_rows / ref_a
        variants = {
            "uncorrected": (base.mean, base.lower, base.upper, 1.0),
            "rescaled by reference medians (moenas calibrate)": (glob.mean, glob.lower, glob.upper, ref_b / ref_a),
            "rescaled per row (each arch's own reference checks)": (
                base.mean * per_row,
                base.lower * per_row,
                base.upper * per_row,
                float(np.median(per_row)),
            ),
        }
        for label, (m, lo, hi, f) in variants.items():
            r = M.report(y, m, lo, hi, CONFIDENCE, other.noise_floor)
            out.append(
                {
                    "model": model,
                    "chosen": pred.metadata.get("chosen"),
                    "eval_archs": set_name,
                    "n": len(y),
                    "correction": label,
                    "factor": f,
                    "mape": r["mape"],
                    "within_10": r["within_10"],
                    "kendall_tau": r["kendall_tau"],
                    "coverage_90": r["coverage"],
                    "measured_over_predicted": float(np.median(y / m)),
                    "ref_ms_fit": ref_a,
                    "ref_ms_eval": ref_b,
                    "noise_floor_eval": other.noise_floor,
                    "device_fit": device_label(ship),
                    "device_eval": device_label(other),
                }
            )
    return out


def component_rows(model: str, ship_path: Path, other_path: Path, factor: float, seed: int) -> list[dict]:
    """Per component: how B's measured latencies relate to A's predictions (see the docstring)."""
    from scipy.stats import spearmanr

    out = []
    for target in load_dataset([ship_path]).protocol.family.targets:
        a, b = load_dataset([ship_path], target), load_dataset([other_path], target)
        pred, _ = fit_predictor(a, model, folds=5, seed=seed, with_learning_curve=False)
        m = pred.predict(b.archs, CONFIDENCE).mean
        ratio = b.y / m
        out.append(
            {
                "model": model,
                "component": target,
                "n": len(ratio),
                "ratio_median": float(np.median(ratio)),
                "ratio_p10": float(np.percentile(ratio, 10)),
                "ratio_p90": float(np.percentile(ratio, 90)),
                "reference_factor": factor,
                "mape_reference_factor": M.mape(b.y, m * factor),
                "mape_best_constant": M.mape(b.y, m * float(np.median(ratio))),
                "spearman_size_ratio": float(spearmanr(m, ratio).correlation),
                "device_fit": device_label(a),
                "device_eval": device_label(b),
            }
        )
    return out


def write_csv(path: Path, rows: list[dict], append: bool = False) -> None:
    """``rows`` with the machine and versions in every row; ``append``: after the rows already
    in ``path`` (the header only when the file is new or empty), for benchmarks that resume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "machine": f"{cpu_model()} ({platform.machine()})",
        "versions": " ".join(f"{k}={v}" for k, v in versions().items()),
    }
    fresh = not append or not path.exists() or path.stat().st_size == 0
    with path.open("w" if not append else "a", newline="") as f:
        names = {k: None for r in rows for k in r}  # every row's columns, in first-seen order
        w = csv.DictWriter(f, fieldnames=list({**names, **extra}))
        if fresh:
            w.writeheader()
        for r in rows:
            w.writerow({**r, **extra})


def print_table(rows: list[dict]) -> None:
    hdr = (
        f"{'model':8s} {'eval archs':24s} {'n':>3s} {'correction':52s} {'factor':>6s} {'MAPE%':>6s} "
        f"{'±10%':>5s} {'tau':>5s} {'cov90':>5s} {'meas/pred':>9s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['model']:8s} {r['eval_archs']:24s} {r['n']:3d} {r['correction']:52s} {r['factor']:6.3f} "
            f"{r['mape']:6.2f} {r['within_10']:5.1f} {r['kendall_tau']:5.3f} {r['coverage_90']:5.1f} "
            f"{r['measured_over_predicted']:9.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shipped", default=str(SHIPPED), help="dataset the predictor is fitted on (machine A)")
    ap.add_argument("--other", default=str(OTHER), help="dataset of machine B whose archs are predicted")
    ap.add_argument("--models", nargs="*", default=["hybrid", "gbt"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "bench_calibrate.csv"))
    ap.add_argument("--components", action="store_true", help="also: where the one factor loses, per component")
    args = ap.parse_args(argv)
    if not Path(args.other).is_file():
        sys.stderr.write(
            f"bench_calibrate: {args.other} is absent: it is the dataset `moenas demo` measures on this "
            "machine (runs/demo/profiles.parquet); run the demo or pass --other DATA.parquet\n"
        )
        return 2
    ship, other = load_dataset([args.shipped]), load_dataset([args.other])
    for ds in (ship, other):
        if ds.reference is None:
            sys.stderr.write(f"bench_calibrate: {ds.paths[0]} has no reference timings in its rows\n")
            return 2
        print(
            f"{ds.paths[0]}: {len(ds)} valid archs, {device_label(ds)}, reference {ds.reference['median_ms']:.3f} ms "
            f"(±{ds.reference['noise_rel']:.1%} per check), noise floor {ds.noise_floor}"
        )
    sets = eval_sets(Path(args.other))
    rows = [r for model in args.models for r in rows_for(model, ship, other, sets, args.seed)]
    write_csv(Path(args.out), rows)
    print()
    print_table(rows)
    print(f"\nmachine: {cpu_model()}; results in {args.out}")
    if args.components:
        factor = other.reference["median_ms"] / ship.reference["median_ms"]
        comp = [
            r for m in args.models for r in component_rows(m, Path(args.shipped), Path(args.other), factor, args.seed)
        ]
        path = Path(args.out).with_name(Path(args.out).stem + "_components.csv")
        write_csv(path, comp)
        for r in comp:
            print(
                f"{r['model']:8s} {r['component']:8s} B/A {r['ratio_median']:.3f} ({r['ratio_p10']:.3f}-{r['ratio_p90']:.3f})  "
                f"MAPE at the reference factor {r['mape_reference_factor']:5.2f}%, at the best constant "
                f"{r['mape_best_constant']:5.2f}%, rho(size, ratio) {r['spearman_size_ratio']:+.2f}"
            )
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
