"""Profiling throughput (archs/min) and overhead fraction per space.

overhead fraction = 1 - (seconds inside timed repetitions) / (wall seconds of the run): export,
model build, session creation, warm-up, the expert-count reference run, reference-model checks
and dataset writes. per_arch_overhead leaves out the reference-model checks (a per-run cost
that a long run amortises: one check per --ref-every archs). Target: <= 30% for automoe-wmt under the default protocol and stop rule.
Also times one export per exporter (torchscript vs dynamo) for the record.

    .venv/bin/python benchmarks/bench_profiler.py            # tiny: 8 archs, automoe-wmt: 3 archs
    .venv/bin/python benchmarks/bench_profiler.py --quick    # 3 + 1, no dynamo comparison
    .venv/bin/python benchmarks/bench_profiler.py --dataset data/profiles/automoe-wmt-cpu-ort.parquet
        # the same figures read back from a real (long) profiling run's sidecar: its recorded
        # seconds per activity and wall time; a long run is the honest measure of throughput.
        # There n_archs counts measurements (first, drift re-measurements and noise-floor
        # repeats), so archs_per_min is measurements per minute.

Results: benchmarks/results/bench_profiler.csv (appended; device and versions in every row).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from moenas.arch import SearchSpace
from moenas.profiler.fingerprint import fingerprint
from moenas.profiler.runner import ProfileConfig, Profiler
from moenas.profiler.stats import StopRule

RESULTS = Path(__file__).parent / "results" / "bench_profiler.csv"


@dataclass(frozen=True)
class Config:
    space: str
    n_archs: int
    threads: int = 1
    max_seconds: float = 30.0
    warmup: int = 5
    export_method: str = "torchscript"
    ref_every: int = 10
    visit_runs: int = 5
    visit_warmup: int = 1


@dataclass(frozen=True)
class Result:
    space: str
    n_archs: int
    export_method: str
    wall_s: float
    archs_per_min: float
    overhead_fraction: float
    per_arch_overhead: float
    timed_s: float
    export_s: float
    build_s: float
    session_s: float
    warmup_s: float
    reference_run_s: float
    reference_model_s: float
    write_s: float
    median_total_ms: float
    precision_reached_share: float


def run(cfg: Config) -> Result:
    space = SearchSpace.load(cfg.space)
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as tmp:
        pc = ProfileConfig(
            archs=space.sample_n(cfg.n_archs, seed=1234),
            out=Path(tmp) / "b.parquet",
            space=space,
            threads_intra=cfg.threads,
            rule=StopRule(warmup=cfg.warmup, max_seconds=cfg.max_seconds),
            ref_every=cfg.ref_every,
            visit_runs=cfg.visit_runs,
            visit_warmup=cfg.visit_warmup,
            ref_retries=0,
            max_remeasure=0,
            drift_threshold=1e9,
            progress=False,
            export_method=cfg.export_method,
        )
        t = time.perf_counter()
        s = Profiler(pc).run()
        wall = time.perf_counter() - t
    return _result(
        cfg.space,
        cfg.n_archs,
        cfg.export_method,
        wall,
        s["seconds"],
        (s["median_ms_min"] + s["median_ms_max"]) / 2,
        s["precision_reached_share"],
    )


def _result(
    space: str, n: int, export_method: str, wall: float, sec: dict[str, float], median_ms: float, precision_share: float
) -> Result:
    """Throughput and overhead from seconds per activity (the Profiler's ``seconds``)."""
    # the same without the reference-model checks (a fixed cost per run, amortised on long runs)
    per_arch = sum(sec[k] for k in ("export", "build", "session", "warmup", "reference_run", "write"))
    return Result(
        space=space,
        n_archs=n,
        export_method=export_method,
        wall_s=round(wall, 2),
        archs_per_min=round(n / wall * 60, 2),
        overhead_fraction=round(1 - sec["timed"] / wall, 3),
        per_arch_overhead=round(per_arch / (per_arch + sec["timed"]), 3),
        timed_s=sec["timed"],
        export_s=sec["export"],
        build_s=sec["build"],
        session_s=sec["session"],
        warmup_s=sec["warmup"],
        reference_run_s=sec["reference_run"],
        reference_model_s=sec["reference_model"],
        write_s=sec["write"],
        median_total_ms=round(median_ms, 3),
        precision_reached_share=precision_share,
    )


def from_dataset(path: Path) -> Result:
    """Figures of the runs recorded in a dataset's sidecar (all runs summed: measurements,
    seconds per activity, wall time)."""
    from moenas.data.profiles import latency_table, read_profiles

    df, meta = read_profiles(path)
    runs = [r for r in meta["runs"] if r.get("wall_s") and r.get("seconds")]
    sec = {k: sum(r["seconds"].get(k, 0.0) for r in runs) for k in runs[-1]["seconds"]}
    ids = {r["run_id"] for r in runs}
    tot = df[(df["component"] == "total") & df["run_id"].isin(ids)]
    return _result(
        meta.get("space") or path.stem,
        len(tot),
        str(tot["export_method"].mode().iloc[0]),
        sum(r["wall_s"] for r in runs),
        sec,
        float(latency_table(df)["median_ms"].median()),
        float(tot["precision_reached"].astype(bool).mean()),
    )


def export_seconds(method: str) -> float:
    from moenas.profiler.onnx_export import export_arch

    arch = SearchSpace.load("tiny").sample(0)
    t = time.perf_counter()
    export_arch(arch, method=method)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--dataset", nargs="+", type=Path, help="read the figures back from these datasets' sidecars instead"
    )
    args = ap.parse_args()
    configs = [Config("tiny", 3 if args.quick else 8), Config("automoe-wmt", 1 if args.quick else 3)]
    fp = fingerprint("cpu")
    import os

    load = os.getloadavg()[0]
    rows = []
    jobs = (
        [lambda p=p: from_dataset(p) for p in args.dataset] if args.dataset else [lambda c=c: run(c) for c in configs]
    )
    for job in jobs:
        r = job()
        rows.append(
            {
                **asdict(r),
                "cpu_model": fp["cpu_model"],
                "cpu_cores": fp["cpu_cores"],
                "load_avg_1m": round(load, 2),
                "onnxruntime": fp["onnxruntime_version"],
                "torch": fp["torch_version"],
                "moenas": fp["moenas_version"],
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
        )
        load = os.getloadavg()[0]
    if not args.quick and not args.dataset:
        for m in ("torchscript", "dynamo"):
            print(f"export tiny arch, {m}: {export_seconds(m):.2f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    cols = [
        "space",
        "n_archs",
        "archs_per_min",
        "overhead_fraction",
        "per_arch_overhead",
        "timed_s",
        "export_s",
        "build_s",
        "session_s",
        "warmup_s",
        "reference_run_s",
        "reference_model_s",
        "median_total_ms",
        "load_avg_1m",
    ]
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>14}" for c in cols))
    print(
        f"device: {fp['cpu_model']} ({fp['cpu_cores']} logical cores), onnxruntime {fp['onnxruntime_version']}, torch {fp['torch_version']}"
    )


if __name__ == "__main__":
    main()
