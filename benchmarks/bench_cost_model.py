"""The cost model before and after a change, interleaved in one process: archs/s.

    python benchmarks/bench_cost_model.py                    # this tree against e0ea322 (before the shared helpers)
    python benchmarks/bench_cost_model.py --baseline HEAD    # against another revision

The baseline's ``arch/cost.py`` and ``predictor/features.py`` are read with ``git show REV:PATH``
into a temporary folder and imported beside the tree's own modules. Each round times both
implementations back to back (their order alternating from round to round), so a shared,
noisy machine slows both alike; the figures are medians over the rounds, and ``ratio`` is the
median of the per-round ratios new/old (the number to trust when absolute figures wander;
``cpu_ratio``, the same from process CPU time, is not slowed by jobs that take the cores away).

Measured, per space (``--n`` sampled archs, 20,000 by default):
  features       ``ArchFeatures(space=...).transform`` (all feature groups, as a predictor uses)
  vector_cost    the vectorised cost model alone, on arrays built once
  predict        ``Predictor.predict`` of a fitted flops-linear model (features + model + interval),
                 the baseline's ``vector_cost`` swapped in for the "before" figure
  protocol_cost  the per-arch cost model (``--n-scalar`` archs, the memo bypassed)

Results: benchmarks/results/bench_cost_model.csv, with the machine and package versions.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from moenas.arch import SearchSpace
from moenas.arch import cost as new_cost
from moenas.arch.protocol import LatencyProtocol
from moenas.predictor import features as new_features
from moenas.predictor.persist import versions
from moenas.profiler.fingerprint import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def load_baseline(rev: str, folder: Path):
    """(cost module, features module, resolved commit) of ``rev``, imported from ``folder``."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    mods = []
    for name, path in (("_baseline_cost", "arch/cost.py"), ("_baseline_features", "predictor/features.py")):
        src = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        src = src.replace("from .", "from moenas.arch.")  # arch/cost.py's relative imports
        file = folder / f"{name}.py"
        file.write_text(src)
        spec = importlib.util.spec_from_file_location(name, file)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1], commit


def interleaved(old: Callable[[], object], new: Callable[[], object], rounds: int) -> tuple[float, ...]:
    """(median old s, median new s, median per-round ratio old_s/new_s = speed new/old, the same
    ratio of process CPU seconds: what is left of the comparison when other jobs take the cores)."""
    old(), new()  # warm up
    wall: tuple[list, list] = ([], [])
    cpu: tuple[list, list] = ([], [])
    for r in range(rounds):
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            t, c = time.perf_counter(), time.process_time()
            (old, new)[which]()
            wall[which].append(time.perf_counter() - t)
            cpu[which].append(time.process_time() - c)
    ratio = np.array(wall[0]) / np.array(wall[1])
    cpu_ratio = np.array(cpu[0]) / np.maximum(np.array(cpu[1]), 1e-9)
    return float(np.median(wall[0])), float(np.median(wall[1])), float(np.median(ratio)), float(np.median(cpu_ratio))


def fitted_predictor(space: str, seed: int = 0):
    """A flops-linear Predictor fitted on 300 synthetic archs (cheap; the model is not what is timed)."""
    from moenas.predictor.api import Predictor
    from moenas.predictor.models import make_model
    from moenas.predictor.synthetic import DEVICES, PROTOCOL, true_latency

    archs = SearchSpace.load(space).sample_n(300, seed=seed)
    y = true_latency(archs, DEVICES["a"], PROTOCOL)["total"]
    est = make_model("flops-linear", PROTOCOL, space, 3, seed).fit(archs, y)
    return Predictor(est, {"model": "flops-linear"})


def bench_space(space: str, base_cost, base_features, args) -> list[dict]:
    archs = SearchSpace.load(space).sample_n(args.n, seed=args.seed)
    rows = []

    def row(what: str, n: int, res: tuple[float, ...]) -> None:
        old_s, new_s, ratio, cpu_ratio = res
        rows.append(
            {
                "space": space,
                "what": what,
                "n_archs": n,
                "rounds": args.rounds,
                "before_archs_per_s": n / old_s,
                "after_archs_per_s": n / new_s,
                "ratio_after_over_before": ratio,
                "cpu_ratio_after_over_before": cpu_ratio,
            }
        )
        print(
            f"  {space:12s} {what:14s} before {n / old_s:10.0f}  after {n / new_s:10.0f} archs/s  "
            f"after/before {ratio:.3f} (CPU time {cpu_ratio:.3f})",
            flush=True,
        )

    f_old = base_features.ArchFeatures(space=space).fit(archs)
    f_new = new_features.ArchFeatures(space=space).fit(archs)
    np.testing.assert_allclose(f_new.transform(archs[:500]), f_old.transform(archs[:500]), rtol=1e-9, atol=1e-6)
    row(
        "features", len(archs), interleaved(lambda: f_old.transform(archs), lambda: f_new.transform(archs), args.rounds)
    )

    arr = new_features.arch_arrays(archs[:8192], tuple(f_new.max_layers_), tuple(f_new.max_experts_))
    row(
        "vector_cost",
        arr.n,
        interleaved(lambda: base_features.vector_cost(arr), lambda: new_features.vector_cost(arr), args.rounds),
    )

    pred, patched = fitted_predictor(space, args.seed), new_features.vector_cost

    def predict_old():
        new_features.vector_cost = base_features.vector_cost
        try:
            pred.predict(archs)
        finally:
            new_features.vector_cost = patched

    row("predict", len(archs), interleaved(predict_old, lambda: pred.predict(archs), args.rounds))

    few, proto = archs[: args.n_scalar], LatencyProtocol()
    row(
        "protocol_cost",
        len(few),
        interleaved(
            lambda: [base_cost.protocol_cost.__wrapped__(a, proto) for a in few],
            lambda: [new_cost.protocol_cost.__wrapped__(a, proto) for a in few],
            args.rounds,
        ),
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--baseline",
        default="e0ea322",
        help="git revision to compare against [e0ea322: the last one before the shared cost helpers]",
    )
    ap.add_argument("--spaces", nargs="*", default=["tiny", "automoe-wmt"])
    ap.add_argument("--n", type=int, default=20_000, help="archs per space [20000]")
    ap.add_argument("--n-scalar", type=int, default=500, help="archs for the per-arch cost model [500]")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median) [9]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "bench_cost_model.csv"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_cost, base_features, commit = load_baseline(args.baseline, Path(tmp))
        print(f"baseline {args.baseline} = {commit[:12]}; after = this tree", flush=True)
        rows = []
        for space in args.spaces:
            rows += bench_space(space, base_cost, base_features, args)
    ver = " ".join(f"{k}={v}" for k, v in versions().items())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], "baseline", "machine", "versions"])
        w.writeheader()
        for r in rows:
            w.writerow(
                {**r, "baseline": commit[:12], "machine": f"{cpu_model()} ({platform.machine()})", "versions": ver}
            )
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
