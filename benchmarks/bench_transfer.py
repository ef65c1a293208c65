"""Claim: a predictor fitted on one device transfers to another from a few archs
measured there, better than fitting from scratch on the same archs.

No new timing. Base: the shipped ``tiny-cpu-ort`` dataset (onnxruntime, 1 thread, the machine
that recorded it). Targets: the datasets given with ``--target NAME=PATH`` (default: the shipped
``tiny-cpu-torch``, torch eager on 1 thread, and ``tiny-cpu-ort-2t``, onnxruntime on 2 intra-op
threads, both measured on another machine: a second runtime and a second thread count, each a
real second latency function). For each target and each number of shots (5, 10, 20 archs drawn
at random from its valid archs), over ``--repeats`` draws, scored on every other arch of the
target:

* ``transfer``: the base predictor adapted from the shots (``moenas fit --base``:
  ``TransferModel``, the blend of a scale and a feature correction, jackknife+ intervals);
* ``transfer-full``: the feature correction alone (moenas' transfer before 2026-12-03);
* ``scratch-<model>``: the base's model kind fitted on the shots alone (moenas' models need >= 8
  archs: their intervals come from cross-validation);
* ``scratch-flops-power``: log latency = a + b log FLOPs fitted on the shots alone (any number of
  shots, no interval: the simplest from-scratch model there is);
* ``base-uncorrected``: the base predictor as is;
* ``transfer-all-cv`` (one row per target, ``shots`` = the fold's size): the transfer fitted on
  4/5 of the target's archs, scored on the other fifth (5-fold): what the correction reaches
  when shots are plentiful, i.e. the ceiling the data allows (its measurement noise included);
  ``target_noise_floor``: the target's own repeat-measurement MAPE.

``--all-pairs``: every ordered pair among the base and the targets (each dataset the base of
each other one), transfers only (``transfer``, ``transfer-full``, ``base-uncorrected``), the
mean over pairs last: the check behind the blend (predictor/transfer.py).

Columns: MAPE, share within ±10%, Kendall tau, 90% interval coverage (means over draws).
Targets (HELP's 0.93 rank correlation from 10 samples): from 10 archs, MAPE <= 5% and
tau >= 0.9.

    python benchmarks/bench_transfer.py
    python benchmarks/bench_transfer.py --target mine=runs/x.parquet --shots 5 10 --repeats 50
    python benchmarks/bench_transfer.py --all-pairs --model hybrid --repeats 60 --out benchmarks/results/bench_transfer_pairs.csv

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
from moenas.predictor.models import MIN_TRAIN, make_model
from moenas.predictor.transfer import TransferModel

TARGETS = ("tiny-cpu-torch", "tiny-cpu-ort-2t")
CONFIDENCE = 0.9


def _score(y: np.ndarray, m: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None) -> dict[str, float]:
    r = {"mape": M.mape(y, m), "within_10": float(np.mean(np.abs(m / y - 1) <= 0.10) * 100), "tau": M.kendall_tau(y, m)}
    r["coverage"] = M.coverage(y, lo, hi) if lo is not None else float("nan")
    return r


def one_draw(
    base_pred,
    target: Dataset,
    log_flops: np.ndarray,
    fit: np.ndarray,
    test: np.ndarray,
    seed: int,
    scratch: bool = True,
) -> dict[str, dict[str, float]]:
    """Every method's scores for one draw (``fit`` archs known, ``test`` archs scored);
    ``log_flops``: log protocol FLOPs of every target arch (the power law's input);
    ``scratch`` False: the transfers and the uncorrected base only."""
    xs = lambda idx: [target.archs[i] for i in idx]  # noqa: E731
    y, out = target.y[test], {}
    for method, blend in (("transfer", True), ("transfer-full", False)):
        tm = TransferModel(base=base_pred.model, random_state=seed, blend=blend).fit(xs(fit), target.y[fit])
        out[method] = _score(y, *tm.predict_interval(xs(test), CONFIDENCE))
    out["base-uncorrected"] = _score(y, base_pred.model.predict(xs(test)), None, None)
    if not scratch:
        return out
    kind = base_pred.metadata.get("chosen") or "gbt"
    if len(fit) >= MIN_TRAIN:
        est = make_model(kind, target.protocol, target.space, 5, seed).fit(xs(fit), target.y[fit])
        out[f"scratch-{kind}"] = _score(y, *est.predict_interval(xs(test), CONFIDENCE))
    b, a0 = np.polyfit(log_flops[fit], np.log(target.y[fit]), 1)
    out["scratch-flops-power"] = _score(y, np.exp(a0 + b * log_flops[test]), None, None)
    return out


def ceiling_row(base_pred, target: Dataset, seed: int, folds: int = 5) -> dict[str, Any]:
    """``transfer-all-cv``: the transfer fitted on (folds-1)/folds of the target, scored on the
    rest, every fold once; one set of scores over all archs."""
    from sklearn.model_selection import KFold

    xs = lambda idx: [target.archs[i] for i in idx]  # noqa: E731
    m, lo, hi = (np.empty(len(target)) for _ in range(3))
    for tr, te in KFold(folds, shuffle=True, random_state=seed).split(target.y):
        tm = TransferModel(base=base_pred.model, random_state=seed).fit(xs(tr), target.y[tr])
        m[te], lo[te], hi[te] = tm.predict_interval(xs(te), CONFIDENCE)
    r = _score(target.y, m, lo, hi)
    return {
        "shots": len(target) - len(target) // folds,
        "method": "transfer-all-cv",
        "n_eval": len(target),
        "repeats": 1,
        **{f"{k}_mean": round(float(v), 4) for k, v in r.items()},
        "mape_p90": float("nan"),
    }


def _mean(values: list[float]) -> float:
    """Mean over the finite values (nan when none: a method without intervals has no coverage)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return round(float(v.mean()), 4) if v.size else float("nan")


def bench_target(
    base_pred, target: Dataset, shots: list[int], repeats: int, seed: int, scratch: bool = True
) -> list[dict[str, Any]]:
    """Mean scores per (shots, method) over ``repeats`` random draws, then the ceiling row."""
    rng = np.random.default_rng(seed)
    log_flops = np.log([protocol_cost(a, target.protocol).total_flops for a in target.archs])
    rows = []
    for n in shots:
        acc: dict[str, list[dict[str, float]]] = {}
        for _ in range(repeats):
            perm = rng.permutation(len(target))
            for method, r in one_draw(base_pred, target, log_flops, perm[:n], perm[n:], seed, scratch).items():
                acc.setdefault(method, []).append(r)
        for method, rs in acc.items():
            rows.append(
                {
                    "shots": n,
                    "method": method,
                    "n_eval": len(target) - n,
                    "repeats": repeats,
                    **{f"{k}_mean": _mean([r[k] for r in rs]) for k in rs[0]},
                    "mape_p90": round(float(np.percentile([r["mape"] for r in rs], 90)), 4),
                }
            )
    return rows + [ceiling_row(base_pred, target, seed)]


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


def pair_rows(
    base_name: str, base: Dataset, base_pred, name: str, ds: Dataset, path: Path, a: argparse.Namespace, scratch: bool
) -> list[dict[str, Any]]:
    """The rows of one (base, target) pair (``ds``: the target, read from ``path``)."""
    if min(a.shots) < 3 or max(a.shots) > len(ds) - 10:
        raise UserError(f"--shots must be in [3, {len(ds) - 10}] for {name}'s {len(ds)} valid archs")
    about = {
        "base": base_name,
        "base_model": base_pred.metadata.get("chosen"),
        "base_device": device_label(base),
        "target_device": device_label(ds),
        "target_backend": ds.backend,
        "target_threads": _threads(path),
        "target_noise_floor": round(ds.noise_floor, 3) if ds.noise_floor is not None else float("nan"),
    }
    return [{"target": name, **r, **about} for r in bench_target(base_pred, ds, a.shots, a.repeats, a.seed, scratch)]


def mean_over_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shots, method): the mean of each score over the pairs (base 'mean', target 'all pairs')."""
    keys = sorted({(r["shots"], r["method"]) for r in rows if r["method"] != "transfer-all-cv"})
    out = []
    for shots, method in keys:
        sel = [r for r in rows if (r["shots"], r["method"]) == (shots, method)]
        out.append(
            {
                "target": "all pairs",
                "shots": shots,
                "method": method,
                "repeats": sel[0]["repeats"],
                **{k: _mean([r[k] for r in sel]) for k in ("mape_mean", "within_10_mean", "tau_mean", "coverage_mean")},
                "base": "mean",
                "pairs": len(sel),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, default=SHIPPED, help="the base device's dataset")
    ap.add_argument(
        "--target", nargs="+", default=None, help="NAME=PATH datasets of other devices (default: the shipped ones)"
    )
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--model", default="auto", help="the base predictor's model")
    ap.add_argument(
        "--all-pairs", action="store_true", help="every dataset the base of every other one (transfers only)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_transfer.csv")
    a = ap.parse_args(argv)
    try:
        targets = _targets(a.target)
        # (path, dataset) per name, each file read once
        others = {name: (path, load_dataset([path], "total")) for name, path in targets.items()}
        base_entry = {a.base.stem: (a.base, load_dataset([a.base], "total"))}
        named = {**base_entry, **others}
        bases = named if a.all_pairs else base_entry
        rows = []
        for base_name, (_, base) in bases.items():
            base_pred, _ = fit_predictor(base, a.model, folds=5, seed=a.seed, with_learning_curve=False)
            for name, (path, ds) in (named if a.all_pairs else others).items():
                if not (a.all_pairs and name == base_name):
                    rows += pair_rows(base_name, base, base_pred, name, ds, path, a, scratch=not a.all_pairs)
    except UserError as e:
        print(f"bench_transfer: error: {e}", file=sys.stderr)
        return 2
    if a.all_pairs:
        rows += mean_over_pairs(rows)
    write_csv(a.out, rows)
    print(
        f"{'base':16s} {'target':16s} {'shots':>5s} {'method':24s} {'MAPE%':>6s} {'±10%':>5s} {'tau':>5s} {'cov90':>5s}"
    )
    for r in rows:
        print(
            f"{r['base']:16s} {r['target']:16s} {r['shots']:5d} {r['method']:24s} {r['mape_mean']:6.2f} "
            f"{r['within_10_mean']:5.1f} {r['tau_mean']:5.3f} {r['coverage_mean']:5.1f}"
        )
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
