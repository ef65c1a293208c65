"""`moenas evaluate`: a saved predictor's error on a holdout profile dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from moenas.arch.family import TOTAL

from ._common import check_confidence, check_fitted_on, check_writable, print_json, table
from .fit import metric_headers, metric_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="a predictor's error on a holdout profile dataset",
        description="Predict every arch of a holdout profile dataset (archs never seen in fitting) and print "
        "RMSE, MAPE, RMSPE, share within ±5%/±10%, Kendall tau, Spearman rho, the interval's real "
        "coverage, the dataset's noise floor, and the predictor's learning curve.",
    )
    p.add_argument("--predictor", required=True, metavar="P", help="predictor directory (from `moenas fit`)")
    p.add_argument("--data", nargs="+", required=True, metavar="HOLDOUT.parquet", help="holdout profile dataset(s)")
    p.add_argument("--confidence", type=float, default=0.9, help="interval confidence [0.9]")
    p.add_argument(
        "--plots", default=None, metavar="DIR", help="write predicted-vs-measured and learning-curve PNGs here"
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="score data measured otherwise than the predictor's own (protocol, backend, threads, space): "
        "a warning instead of an error",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.predictor import Predictor, load_dataset
    from moenas.predictor import metrics as M

    check_confidence(args.confidence)
    if args.plots:
        from moenas.predictor.plots import check_plots_replaceable

        check_writable(args.plots, "--plots", kind="dir")
        check_plots_replaceable(args.plots)  # --plots . must not replace someone's learning_curve.png
    pred = Predictor.load(args.predictor)
    meta = pred.metadata
    ds = load_dataset(args.data, meta.get("target", TOTAL))
    check_fitted_on("evaluate", meta, ds, args.predictor, args.allow_mismatch)
    seen = set(meta.get("train_arch_ids") or [])
    p = pred.predict(ds.archs, confidence=args.confidence)
    rep = M.report(ds.y, p.mean, p.lower, p.upper, args.confidence, ds.noise_floor)
    same_device = ds.fingerprint_id == meta.get("fingerprint_id")
    out = {
        "predictor": args.predictor,
        "model": meta.get("chosen"),
        "dataset": ds.describe(),
        "holdout": rep,
        "same_device": same_device,
        "learning_curve": (meta.get("metrics") or {}).get("learning_curve", []),
        "overlap_with_training": len(seen & set(ds.arch_ids)) if seen else None,
    }
    plots = []
    if args.plots:
        from moenas.predictor import plots as P

        d = Path(args.plots)
        d.mkdir(parents=True, exist_ok=True)
        title = f"{meta.get('chosen')} on {ds.device} ({ds.target}), holdout"
        plots.append(
            str(P.predicted_vs_measured(ds.y, p.mean, d / "holdout_predicted_vs_measured.png", title, p.lower, p.upper))
        )
        if out["learning_curve"]:
            plots.append(
                str(P.plot_learning_curve(out["learning_curve"], d / "learning_curve.png", title, ds.noise_floor))
            )
    out["plots"] = plots
    if args.json:
        print_json(out)
        return 0
    tag = " [SYNTHETIC data]" if ds.synthetic else ""
    print(f"predictor {args.predictor}: {meta.get('chosen')} for {meta.get('target')} on {meta.get('device')}")
    print(f"holdout: {len(ds)} archs, device {ds.device} ({ds.backend}){tag}")
    if out["overlap_with_training"]:
        print(f"warning: {out['overlap_with_training']} holdout archs were in the training data")
    if not same_device:
        print("note: the holdout was measured on another device fingerprint than the training data")
    if out["learning_curve"]:
        print("learning curve (from fitting):")
        print(
            table(
                [[r["n_train"], r["mape"], r["within_10"], r["kendall_tau"]] for r in out["learning_curve"]],
                ["train archs", "MAPE %", "±10% %", "tau"],
            )
        )
    for pth in plots:
        print(f"plot: {pth}")
    print(table(metric_rows({"holdout": rep}), metric_headers()))
    return 0
