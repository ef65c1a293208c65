"""Claim (issue 12 item 3): a predictor fitted on one device transfers to another from a few archs
measured there, better than fitting from scratch on the same archs.

No new timing. Base: the shipped ``tiny-cpu-ort`` dataset (onnxruntime, 1 thread, the machine
that recorded it). Targets: the datasets given with ``--target NAME=PATH`` (default: the shipped
``tiny-cpu-torch``, torch eager on 1 thread, and ``tiny-cpu-ort-2t``, onnxruntime on 2 intra-op
threads, both measured on another machine: a second runtime and a second thread count, each a
real second latency function). For each target and each number of shots (5, 10, 20 archs drawn
at random from its valid archs), over ``--repeats`` draws, scored on every other arch of the
target:

* ``transfer``: the base predictor adapted from the shots (``moenas fit --base``:
  ``TransferModel``, jackknife+ intervals);
* ``scratch-<model>``: the base's model kind fitted on the shots alone (moenas' models need >= 8
  archs: their intervals come from cross-validation);
* ``scratch-flops-power``: log latency = a + b log FLOPs fitted on the shots alone (any number of
  shots, no interval: the simplest from-scratch model there is);
* ``base-uncorrected``: the base predictor as is.

Columns: MAPE, share within ±10%, Kendall tau, 90% interval coverage (means over draws).
Targets (issue 12, HELP's 0.93 rank correlation from 10 samples): from 10 archs, MAPE <= 5% and
tau >= 0.9.

    python benchmarks/bench_transfer.py
    python benchmarks/bench_transfer.py --target mine=runs/x.parquet --shots 5 10 --repeats 50

Results: benchmarks/results/bench_transfer.csv (base and target devices, versions in every row).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench_calibrate import RESULTS, SHIPPED, device_label, write_csv
from moenas.arch import UserError
from moenas.arch.cost import protocol_cost
from moenas.data.profiles import shipped
from moenas.predictor import metrics as M
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import Dataset, load_dataset
from moenas.predictor.models import MIN_TRAIN, TransferModel, make_model

TARGETS = ("tiny-cpu-torch", "tiny-cpu-ort-2t")
CONFIDENCE = 0.9


def _score(y: np.ndarray, m: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None) -> dict[str, float]:
    r = {"mape": M.mape(y, m), "within_10": float(np.mean(np.abs(m / y - 1) <= 0.10) * 100), "tau": M.kendall_tau(y, m)}
    r["coverage"] = M.coverage(y, lo, hi) if lo is not None else float("nan")
    return r


def one_draw(base_pred, target: Dataset, log_flops: np.ndarray, fit: np.ndarray, test: np.ndarray,
             seed: int) -> dict[str, dict[str, float]]:
    """Every method's scores for one draw (``fit`` archs known, ``test`` archs scored);
    ``log_flops``: log protocol FLOPs of every target arch (the power law's input)."""
    xs = lambda idx: [target.archs[i] for i in idx]  # noqa: E731
    y, out = target.y[test], {}
    tm = TransferModel(base=base_pred.model, random_state=seed).fit(xs(fit), target.y[fit])
    out["transfer"] = _score(y, *tm.predict_interval(xs(test), CONFIDENCE))
    kind = base_pred.metadata.get("chosen") or "gbt"
    if len(fit) >= MIN_TRAIN:
        est = make_model(kind, target.protocol, target.space, 5, seed).fit(xs(fit), target.y[fit])
        out[f"scratch-{kind}"] = _score(y, *est.predict_interval(xs(test), CONFIDENCE))
    b, a0 = np.polyfit(log_flops[fit], np.log(target.y[fit]), 1)
    out["scratch-flops-power"] = _score(y, np.exp(a0 + b * log_flops[test]), None, None)
    out["base-uncorrected"] = _score(y, base_pred.model.predict(xs(test)), None, None)
    return out


def _mean(values: list[float]) -> float:
    """Mean over the finite values (nan when none: a method without intervals has no coverage)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return round(float(v.mean()), 4) if v.size else float("nan")


def bench_target(base_pred, target: Dataset, shots: list[int], repeats: int, seed: int) -> list[dict[str, Any]]:
    """Mean scores per (shots, method) over ``repeats`` random draws."""
    rng = np.random.default_rng(seed)
    log_flops = np.log([protocol_cost(a, target.protocol).total_flops for a in target.archs])
    rows = []
    for n in shots:
        acc: dict[str, list[dict[str, float]]] = {}
        for _ in range(repeats):
            perm = rng.permutation(len(target))
            for method, r in one_draw(base_pred, target, log_flops, perm[:n], perm[n:], seed).items():
                acc.setdefault(method, []).append(r)
        for method, rs in acc.items():
            rows.append({"shots": n, "method": method, "n_eval": len(target) - n, "repeats": repeats,
                         **{f"{k}_mean": _mean([r[k] for r in rs]) for k in rs[0]},
                         "mape_p90": round(float(np.percentile([r["mape"] for r in rs], 90)), 4)})
    return rows


def _threads(path: Path) -> int:
    from moenas.data.profiles import read_profiles

    return int(read_profiles(path)[0]["threads_intra"].iloc[0])


def _targets(specs: list[str] | None) -> dict[str, Path]:
    if not specs:
        return {name: shipped(name) for name in TARGETS}
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not Path(path).is_file():
            raise UserError(f"--target {s!r}: expected NAME=PATH of an existing dataset")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=SHIPPED, help="the base device's dataset")
    ap.add_argument("--target", nargs="+", default=None, help="NAME=PATH datasets of other devices (default: the shipped ones)")
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--model", default="auto", help="the base predictor's model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_transfer.csv")
    a = ap.parse_args(argv)
    try:
        targets = _targets(a.target)
        base = load_dataset([a.base], "total")
        base_pred, _ = fit_predictor(base, a.model, folds=5, seed=a.seed, with_learning_curve=False)
        rows = []
        for name, path in targets.items():
            ds = load_dataset([path], "total")
            if min(a.shots) < 3 or max(a.shots) > len(ds) - 10:
                raise UserError(f"--shots must be in [3, {len(ds) - 10}] for {name}'s {len(ds)} valid archs")
            about = {"base_model": base_pred.metadata.get("chosen"), "base_device": device_label(base),
                     "target_device": device_label(ds), "target_backend": ds.backend, "target_threads": _threads(path)}
            rows += [{"target": name, **r, **about} for r in bench_target(base_pred, ds, a.shots, a.repeats, a.seed)]
    except UserError as e:
        print(f"bench_transfer: error: {e}", file=sys.stderr)
        return 2
    write_csv(a.out, rows)
    print(f"{'target':16s} {'shots':>5s} {'method':24s} {'MAPE%':>6s} {'±10%':>5s} {'tau':>5s} {'cov90':>5s}")
    for r in rows:
        print(f"{r['target']:16s} {r['shots']:5d} {r['method']:24s} {r['mape_mean']:6.2f} {r['within_10_mean']:5.1f} "
              f"{r['tau_mean']:5.3f} {r['coverage_mean']:5.1f}")
    print(f"base: {device_label(base)}\n-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
