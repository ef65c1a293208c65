"""`moenas fit`: fit a latency predictor on profile datasets (or adapt one to a new device)."""

from __future__ import annotations

import argparse
from pathlib import Path

from moenas.arch import UserError

from ._common import check_at_least, check_confidence, check_fitted_on, check_writable, print_json, table

METRIC_COLS = [
    ("rmse_ms", "RMSE ms"),
    ("mape", "MAPE %"),
    ("rmspe", "RMSPE %"),
    ("within_5", "±5% %"),
    ("within_10", "±10% %"),
    ("kendall_tau", "tau"),
    ("spearman_rho", "rho"),
]


def register(sub: argparse._SubParsersAction) -> None:
    from moenas.predictor.names import MODELS, TARGETS

    p = sub.add_parser(
        "fit",
        help="fit a latency predictor on profile datasets",
        description="Fit a latency predictor on profile datasets and print k-fold cross-validated metrics "
        "and a learning curve. With --base, adapt an existing predictor to the device of --data "
        "from a few (default 20) measured archs instead.",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="FILE.parquet", help="profile dataset(s), one device")
    p.add_argument("--target", default=TARGETS[0], choices=TARGETS, help=f"component [{TARGETS[0]}]")
    p.add_argument(
        "--model",
        default="auto",
        help=f"one of {', '.join(MODELS)} [auto: a stack of the candidates, weighted by their out-of-fold predictions]",
    )
    p.add_argument("--out", default=None, help="predictor directory to write [predictors/MODEL-TARGET]")
    p.add_argument("--folds", type=int, default=5, help="K for cross-validation and interval calibration [5]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--confidence", type=float, default=0.9, help="interval confidence for reported coverage [0.9]")
    p.add_argument("--no-learning-curve", action="store_true", help="skip the learning curve (faster)")
    p.add_argument("--plots", action="store_true", help="write PNG plots into the predictor directory")
    p.add_argument("--base", default=None, metavar="P", help="adapt this predictor to the device of --data")
    p.add_argument("--transfer-n", type=int, default=20, help="with --base: measured archs to adapt from [20]")
    p.add_argument("--transfer-residual", action="store_true", help="with --base: also fit a small residual model")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="with --base: adapt from data measured otherwise than the base's (backend, threads, protocol, "
        "space; another machine is what --base is for): a warning instead of an error",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=locked_run)


def metric_rows(named: dict[str, dict]) -> list[list]:
    rows = []
    for name, r in named.items():
        rows.append(
            [name, r.get("n", "")]
            + [r.get(k, float("nan")) for k, _ in METRIC_COLS]
            + [r.get("coverage", ""), r.get("noise_floor_mape") if r.get("noise_floor_mape") is not None else "-"]
        )
    return rows


def metric_headers() -> list[str]:
    return ["", "n"] + [h for _, h in METRIC_COLS] + ["coverage %", "noise floor %"]


def default_out(args: argparse.Namespace) -> Path:
    return Path(args.out or f"predictors/{'transfer' if args.base else args.model}-{args.target}")


def locked_run(args: argparse.Namespace) -> int:
    """:func:`run` holding the predictor directory's lock from the existence check to the last
    plot: two fits into one --out would each pass the check and the later save would win."""
    from moenas.arch.files import output_lock

    check_writable(default_out(args), kind="dir")  # before the lock file goes beside it
    with output_lock(default_out(args), "predictor"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    from moenas.predictor import Predictor, fit_predictor, load_dataset, transfer_predictor
    from moenas.predictor.models import check_model_name
    from moenas.predictor.persist import check_out

    check_model_name(args.model)
    check_at_least("--folds", args.folds, 2)
    check_at_least("--seed", args.seed, 0)
    check_at_least("--transfer-n", args.transfer_n, 3)
    check_confidence(args.confidence)
    out = default_out(args)
    check_out(out, args.overwrite)  # before any work: an --out that may not be replaced
    ds = load_dataset(args.data, args.target)
    if not args.base and args.folds > len(ds):
        raise UserError(f"--folds {args.folds}: more folds than the {len(ds)} valid archs of the data")
    if args.base:
        base = Predictor.load(args.base)
        check_fitted_on("fit", base.metadata, ds, args.base, args.allow_mismatch)
        pred, rep = transfer_predictor(
            base, ds, args.transfer_n, args.seed, args.transfer_residual, confidence=args.confidence
        )
    else:
        pred, rep = fit_predictor(
            ds,
            args.model,
            args.folds,
            args.seed,
            with_learning_curve=not args.no_learning_curve,
            confidence=args.confidence,
        )
    pred.save(out, overwrite=args.overwrite)
    plots = []
    if args.plots and not args.base:
        from moenas.predictor import plots as P

        title = f"{pred.metadata['chosen']} on {ds.device} ({ds.target}), {args.folds}-fold CV"
        plots.append(
            str(P.predicted_vs_measured(ds.y, pred.model.oof_pred_, out / "cv_predicted_vs_measured.png", title))
        )
        if rep.get("learning_curve"):
            plots.append(
                str(P.plot_learning_curve(rep["learning_curve"], out / "learning_curve.png", title, ds.noise_floor))
            )
    if args.json:
        print_json(
            {
                "predictor": str(out),
                "model": pred.metadata["model"],
                "chosen": pred.metadata["chosen"],
                "dataset": ds.describe(),
                "report": rep,
                "plots": plots,
            }
        )
        return 0
    tag = " [SYNTHETIC data]" if ds.synthetic else ""
    print(f"data: {len(ds)} archs, device {ds.device} ({ds.backend}), space {ds.space}, target {ds.target}{tag}")
    if args.base:
        print(
            f"adapted {args.base} ({base.metadata.get('device')}) from {rep['n_samples']} archs: "
            f"exponent {rep['scale']:.3f}, ridge {rep['ridge_alpha']:g}, leave-one-out MAPE {rep['loo_mape']:.2f}%"
        )
        print(
            "  corrections blended: "
            + ", ".join(  # the scale alone; scale + FLOPs, bytes, layer and expert counts
                f"{'scale' if b['features'] == ['scale'] else 'features'} {b['weight']:.2f}" for b in rep["blend"]
            )
        )
        if "holdout" in rep:
            h = rep["holdout"]
            print(f"holdout of {h['n_test']} archs of the new device (scratch models: {h['compare_model']}):")
            print(table(metric_rows(h["rows"]), metric_headers()))
    else:
        if len(rep.get("cv_by_model_mape", {})) > 1:
            print(
                f"{args.model}: out-of-fold MAPE % by model: "
                + ", ".join(f"{k} {v:.2f}" for k, v in rep["cv_by_model_mape"].items())
                + f" -> {pred.metadata.get('description') or pred.metadata['chosen']}"
            )
        print(f"{args.folds}-fold cross-validation:")
        print(table(metric_rows({pred.metadata["chosen"]: rep["cv"]}), metric_headers()))
        if rep.get("learning_curve"):
            hold = rep.get("holdout_interval") or {}
            print(f"learning curve (fixed holdout of {rep['learning_curve'][0]['n_test']} archs):")
            print(
                table(
                    [[r["n_train"], r["mape"], r["within_10"], r["kendall_tau"]] for r in rep["learning_curve"]],
                    ["train archs", "MAPE %", "±10% %", "tau"],
                )
            )
            if hold:
                print(
                    f"interval: {hold['confidence']:.0%} nominal, {hold['coverage']:.1f}% real coverage on the holdout"
                )
    for pth in plots:
        print(f"plot: {pth}")
    print(f"wrote {out}")
    return 0
