"""Latency predictors side by side: holdout accuracy, interval coverage, fit time, throughput.

    python benchmarks/bench_predictors.py                   # shipped datasets if big enough, else synthetic
    python benchmarks/bench_predictors.py --synthetic       # force the synthetic datasets
    python benchmarks/bench_predictors.py --data data/profiles/tiny-cpu-ort.parquet
    python benchmarks/bench_predictors.py --throughput-only  # prediction archs/s only (median of --repeats)

For every dataset: a random holdout (archs never seen in fitting) and at most ``n_train`` (300)
training archs; every model in the registry fitted on the same split, HAT's MLP and the
FLOPs-linear baseline included. Then prediction throughput on 100,000 archs (features + model,
one vectorised call) and transfer to a second device from 20 archs. Synthetic datasets are
labelled ``synthetic`` in every row (they are a known function of the cost model plus 1.5%
lognormal noise, see moenas.predictor.synthetic), never presented as measurements.
Results: benchmarks/results/bench_predictors.csv (+ _transfer.csv, _throughput.csv), with the
machine and package versions in every row.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from moenas.arch import SearchSpace
from moenas.predictor import metrics as M
from moenas.predictor.api import Predictor
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.models import MODELS, make_model
from moenas.predictor.persist import versions
from moenas.predictor.synthetic import DEVICES, PROTOCOL, true_latency
from moenas.predictor.transfer import TransferModel
from moenas.profiler.fingerprint import cpu_model

RESULTS = Path(__file__).parent / "results"
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "profiles"


@dataclass(frozen=True)
class Config:
    n_train: int = 300
    holdout_share: float = 0.25
    folds: int = 5
    seed: int = 0
    confidence: float = 0.9
    throughput_archs: int = 100_000
    throughput_repeats: int = 5
    transfer_n: int = 20
    models: tuple[str, ...] = MODELS


@dataclass(frozen=True)
class Result:
    dataset: str
    data_kind: str  # measured | synthetic
    device: str
    space: str
    model: str
    chosen: str
    n_train: int
    n_test: int
    fit_s: float
    rmse_ms: float
    mape: float
    rmspe: float
    within_5: float
    within_10: float
    kendall_tau: float
    spearman_rho: float
    coverage: float
    interval_rel_width: float
    noise_floor_mape: float | None
    mape_over_noise: float | None
    machine: str = field(default_factory=lambda: f"{platform.processor() or platform.machine()} {cpu_model()}")
    versions: str = field(default_factory=lambda: " ".join(f"{k}={v}" for k, v in versions().items()))


def synthetic_dataset(space: str, n: int, device: str, seed: int) -> Dataset:
    archs = SearchSpace.load(space).sample_n(n, seed=seed)
    rng = np.random.default_rng(seed + 17)
    y = true_latency(archs, DEVICES[device], PROTOCOL)["total"] * np.exp(rng.normal(0, DEVICES[device].noise, n))
    # the noise floor of a repeated measurement with this noise: E|e^(s*z1) / e^(s*z2) - 1|
    z = rng.normal(0, DEVICES[device].noise, (2, 20000))
    floor = float(np.mean(np.abs(np.exp(z[0] - z[1]) - 1)) * 100)
    return Dataset(
        archs,
        y,
        [a.arch_id for a in archs],
        "total",
        PROTOCOL,
        "synthetic",
        space,
        DEVICES[device].name,
        "synthetic",
        DEVICES[device].name,
        noise_floor=floor,
        paths=[f"synthetic:{space}:{device}"],
        synthetic=True,
    )


def split(n: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(cfg.seed).permutation(n)
    n_test = max(10, int(round(n * cfg.holdout_share)))
    return perm[n_test : n_test + cfg.n_train], perm[:n_test]


def bench_dataset(name: str, ds: Dataset, cfg: Config) -> list[Result]:
    tr, te = split(len(ds), cfg)
    xs = lambda idx: [ds.archs[i] for i in idx]  # noqa: E731
    out = []
    for model in cfg.models:
        t = time.perf_counter()
        est = make_model(model, ds.protocol, ds.space, cfg.folds, cfg.seed).fit(xs(tr), ds.y[tr])
        fit_s = time.perf_counter() - t
        m, lo, hi = est.predict_interval(xs(te), cfg.confidence)
        r = M.report(ds.y[te], m, lo, hi, cfg.confidence, ds.noise_floor)
        out.append(
            Result(
                name,
                "synthetic" if ds.synthetic else "measured",
                ds.device,
                ds.space,
                model,
                est.chosen_,
                len(tr),
                len(te),
                fit_s,
                r["rmse_ms"],
                r["mape"],
                r["rmspe"],
                r["within_5"],
                r["within_10"],
                r["kendall_tau"],
                r["spearman_rho"],
                r["coverage"],
                r["interval_rel_width"],
                ds.noise_floor,
                r.get("mape_over_noise"),
            )
        )
        print(
            f"  {model:13s} -> {est.chosen_:13s} MAPE {r['mape']:6.2f}%  ±10% {r['within_10']:5.1f}%  "
            f"tau {r['kendall_tau']:.3f}  coverage {r['coverage']:5.1f}%  fit {fit_s:6.1f}s",
            flush=True,
        )
    return out


def _median_s(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls: robust to other jobs on a shared machine."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_throughput(ds: Dataset, cfg: Config) -> list[dict]:
    """archs/s of Predictor.predict on cfg.throughput_archs archs (features + model + interval),
    median of cfg.throughput_repeats calls; 5,000 distinct archs repeated (nothing is cached by arch)."""
    tr, _ = split(len(ds), cfg)
    archs = SearchSpace.load(ds.space).sample_n(min(5000, cfg.throughput_archs), seed=cfg.seed + 1)
    many = (archs * (cfg.throughput_archs // len(archs) + 1))[: cfg.throughput_archs]
    rows = []
    for model in [m for m in cfg.models if m != "auto"]:
        est = make_model(model, ds.protocol, ds.space, 3, cfg.seed).fit([ds.archs[i] for i in tr], ds.y[tr])
        p = Predictor(est, {"model": model})
        n_features = p.features(many[:1]).shape[1]
        t_feat = _median_s(lambda p=p: p.features(many), cfg.throughput_repeats)
        t_all = _median_s(lambda p=p: p.predict(many), cfg.throughput_repeats)
        rows.append(
            {
                "space": ds.space,
                "model": model,
                "n_archs": len(many),
                "repeats": cfg.throughput_repeats,
                "features_archs_per_s": len(many) / t_feat,
                "predict_archs_per_s": len(many) / t_all,
                "n_features": n_features,
            }
        )
        print(
            f"  {model:13s} features {len(many) / t_feat:9.0f} archs/s, predict (features+model+interval) "
            f"{len(many) / t_all:9.0f} archs/s",
            flush=True,
        )
    return rows


def bench_transfer(space: str, cfg: Config) -> list[dict]:
    """Base on synthetic device a; adapt to devices c (mild) and b (GPU-like) from 20 archs."""
    base_ds = synthetic_dataset(space, 400, "a", cfg.seed)
    tr, _ = split(len(base_ds), cfg)
    base = make_model("hybrid", PROTOCOL, space, cfg.folds, cfg.seed).fit([base_ds.archs[i] for i in tr], base_ds.y[tr])
    rows = []
    for dev in ("c", "b"):
        ds = synthetic_dataset(space, 400, dev, cfg.seed + 1)
        tr2, te = split(len(ds), cfg)
        few = tr2[: cfg.transfer_n]
        xs = lambda idx, ds=ds: [ds.archs[i] for i in idx]
        cands = {
            "base uncorrected": (base, None),
            f"transfer from {len(few)}": (TransferModel(base=base).fit(xs(few), ds.y[few]), None),
        }
        for label, idx in ((f"scratch hybrid on {len(few)}", few), (f"scratch hybrid on all {len(tr2)}", tr2)):
            cands[label] = (make_model("hybrid", PROTOCOL, space, cfg.folds, cfg.seed).fit(xs(idx), ds.y[idx]), None)
        for label, (est, _) in cands.items():
            m, lo, hi = est.predict_interval(xs(te), cfg.confidence)
            r = M.report(ds.y[te], m, lo, hi, cfg.confidence, ds.noise_floor)
            rows.append(
                {
                    "space": space,
                    "from": DEVICES["a"].name,
                    "to": DEVICES[dev].name,
                    "method": label,
                    "n_test": len(te),
                    **{k: r[k] for k in ("mape", "within_10", "kendall_tau", "coverage")},
                }
            )
            print(
                f"  a -> {dev}: {label:28s} MAPE {r['mape']:6.2f}%  ±10% {r['within_10']:5.1f}%  "
                f"tau {r['kendall_tau']:.3f}  coverage {r['coverage']:5.1f}%",
                flush=True,
            )
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    mach = f"{cpu_model()} ({platform.machine()})"
    ver = " ".join(f"{k}={v}" for k, v in versions().items())
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list({**rows[0], "machine": 0, "versions": 0}))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "machine": r.get("machine", mach), "versions": r.get("versions", ver)})


def dataset_targets(path: str | Path, wanted: list[str]) -> list[str]:
    """The targets to fit on one dataset: ``wanted``, or every target of its family for 'all'."""
    if wanted != ["all"]:
        return wanted
    return list(load_dataset([path]).protocol.family.targets)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=None, help="profile datasets (one predictor each)")
    ap.add_argument(
        "--targets",
        nargs="*",
        default=["total"],
        help="components to predict, one predictor each ('all': the dataset family's targets) [total]",
    )
    ap.add_argument("--synthetic", action="store_true", help="use synthetic datasets (tiny and automoe-wmt)")
    ap.add_argument("--min-archs", type=int, default=100, help="skip shipped datasets with fewer archs [100]")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument(
        "--throughput-only", action="store_true", help="only prediction throughput (no accuracy table, no transfer)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per throughput figure (median) [5]")
    ap.add_argument("--no-transfer", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "bench_predictors.csv"))
    args = ap.parse_args(argv)
    cfg = Config(models=tuple(args.models), throughput_repeats=args.repeats)
    datasets: list[tuple[str, Dataset]] = []
    paths = args.data if args.data is not None else ([] if args.synthetic else sorted(SHIPPED.glob("*.parquet")))
    for p in paths:
        for target in dataset_targets(p, args.targets):
            ds = load_dataset([p], target)
            if len(ds) >= args.min_archs:
                datasets.append((Path(p).stem + ("" if target == "total" else f":{target}"), ds))
            else:
                print(f"skip {p}: {len(ds)} archs < --min-archs {args.min_archs}")
    if not datasets:
        print("no measured dataset big enough: using SYNTHETIC datasets (labelled 'synthetic' in every row)")
        datasets = [
            ("synthetic-tiny-a", synthetic_dataset("tiny", 400, "a", 0)),
            ("synthetic-automoe-a", synthetic_dataset("automoe-wmt", 400, "a", 0)),
        ]
    results: list[Result] = []
    thr: list[dict] = []
    for name, ds in datasets:
        print(
            f"{name}: {len(ds)} archs, {ds.device}, space {ds.space}, noise floor "
            f"{ds.noise_floor if ds.noise_floor is None else round(ds.noise_floor, 2)}%",
            flush=True,
        )
        if not args.throughput_only:
            results += bench_dataset(name, ds, cfg)
        if not args.no_throughput:
            thr += bench_throughput(ds, cfg)
    out = Path(args.out)
    if args.throughput_only:
        _write(out.with_name(out.stem + "_throughput.csv"), thr)
        print(f"\nmachine: {cpu_model()}; results in {out.with_name(out.stem + '_throughput.csv')}")
        return 0
    trans = [] if args.no_transfer else bench_transfer("tiny", cfg)
    _write(out, [asdict(r) for r in results])
    _write(out.with_name(out.stem + "_throughput.csv"), thr)
    _write(out.with_name(out.stem + "_transfer.csv"), trans)
    print()
    hdr = (
        f"{'dataset':22s} {'kind':9s} {'model':13s} {'chosen':13s} {'n_tr':>4s} {'MAPE%':>6s} {'RMSPE%':>6s} "
        f"{'±5%':>5s} {'±10%':>5s} {'tau':>5s} {'rho':>5s} {'cov%':>5s} {'MAPE/nf':>7s} {'fit s':>6s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        mon = f"{r.mape_over_noise:.2f}" if r.mape_over_noise else "-"
        print(
            f"{r.dataset:22s} {r.data_kind:9s} {r.model:13s} {r.chosen:13s} {r.n_train:4d} {r.mape:6.2f} {r.rmspe:6.2f} "
            f"{r.within_5:5.1f} {r.within_10:5.1f} {r.kendall_tau:5.3f} {r.spearman_rho:5.3f} {r.coverage:5.1f} "
            f"{mon:>7s} {r.fit_s:6.1f}"
        )
    print(f"\nmachine: {cpu_model()}; results in {out.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
