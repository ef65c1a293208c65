"""A fleet campaign on a local Ray cluster with two simulated device nodes.

    python benchmarks/bench_fleet.py            # 20 tiny archs per device, chunks of 5, default protocol
    python benchmarks/bench_fleet.py --quick    # 2 archs, chunks of 1, micro protocol (seconds; for the test)

Two worker nodes on this machine advertise ``device:a`` and ``device:b`` (one unit each, so each
times one chunk at a time; the two nodes do time at the same moment, which a real fleet of
separate machines would not). Run 1 profiles both devices and kills node b right after its
first chunk has been appended; run 2 brings a node b back and resumes. Per run and device the
CSV gives chunks done / failed, rows and valid archs of the merged dataset, its fingerprints
(one per device, never mixed), and for device b the finished rows before the kill against the
rows kept after it (``lost_finished_rows`` must be 0). The campaign folder is a temporary one.

Results: benchmarks/results/bench_fleet.csv (machine, fingerprint, python, torch, ray,
onnxruntime and moenas versions in every row).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from moenas.arch import SearchSpace
from moenas.arch.protocol import LatencyProtocol
from moenas.data.profiles import read_profiles
from moenas.profiler.fingerprint import bench_environment
from moenas.profiler.fleet import DeviceSpec, FleetConfig, run_fleet, shard_paths
from moenas.profiler.runner import ProfileConfig
from moenas.profiler.stats import StopRule

RESULTS = Path(__file__).parent / "results"
DEVICES = ("a", "b")
KILLED = "b"


@dataclass
class BenchConfig:
    n: int = 20
    chunk: int = 5
    backend: str = "onnxruntime"
    quick: bool = False


def profile_template(cfg: BenchConfig, out: Path) -> ProfileConfig:
    space = SearchSpace.load("tiny")
    kw = {}
    if cfg.quick:  # the micro settings of tests/profiler/test_profiler_run.py
        rule = StopRule(warmup=1, min_runs=6, max_runs=8, max_seconds=0.3)
        kw = dict(
            protocol=LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2),
            rule=rule,
            ref_rule=rule,
            drift_threshold=100.0,
            ref_wait_s=0.0,
            ref_retries=0,
        )
    return ProfileConfig(
        archs=space.sample_n(cfg.n, seed=0), out=out, space=space, backend=cfg.backend, progress=False, **kw
    )


@contextmanager
def simulated_fleet() -> Iterator[tuple[object, dict]]:
    """A head node (1 CPU, no device) and one 1-CPU worker node per simulated device."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        nodes = {d: c.add_node(num_cpus=1, resources={f"device:{d}": 1}) for d in DEVICES}
        c.wait_for_nodes()
        yield c, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def measurement_ids(out: Path, device: str) -> set[str]:
    return {m for p in shard_paths(out, device) for m in read_profiles(p)[0]["measurement_id"]}


def rows_of(run: str, summary: dict, out: Path, kill: dict) -> list[dict]:
    rows = []
    for d in summary["devices"]:
        fps = set()
        if d["dataset"]:
            fps = set(read_profiles(d["dataset"])[0]["fingerprint_id"])
        killed = d["device"] == KILLED and run == "1: node b killed after its first chunk"
        rows.append(
            {
                "run": run,
                "fleet_device": d["device"],
                "archs_wanted": d["wanted"],
                "chunks": d["chunks"],
                "chunks_done": d["chunks_done"],
                "chunks_failed": d["chunks_failed"],
                "rows": d["rows"],
                "archs_valid": d["archs"],
                "merged_fingerprints": len(fps),
                "nodes": ",".join(d["nodes"]),
                "finished_rows_before_kill": kill.get("rows") if killed else None,
                "kept_rows_after_kill": kill.get("kept") if killed else None,
                "lost_finished_rows": kill.get("lost") if killed else None,
                "complete": summary["complete"],
                "wall_s": summary["wall_s"],
                "errors": "; ".join(d["errors"]),
            }
        )
    return rows


def run(cfg: BenchConfig) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, simulated_fleet() as (cluster, nodes):
        out = Path(tmp) / "campaign"
        kill: dict = {}

        def kill_after_first_chunk(device: str, done: int) -> None:
            if device == KILLED and done == 1 and KILLED in nodes:
                kill["ids"] = measurement_ids(out, KILLED)
                cluster.remove_node(nodes.pop(KILLED))

        fc = FleetConfig(
            profile=profile_template(cfg, out),
            devices=[DeviceSpec(d, backend=cfg.backend) for d in DEVICES],
            out=out,
            address=cluster.address,
            chunk=cfg.chunk,
            lost_after_s=0.0,
            progress=False,
            command=["bench_fleet"],
            on_chunk=kill_after_first_chunk,
        )
        first = run_fleet(fc)
        kept = measurement_ids(out, KILLED)
        ids = kill.get("ids", set())
        kill.update(rows=len(ids), kept=len(kept & ids), lost=len(ids - kept))
        rows = rows_of("1: node b killed after its first chunk", first, out, kill)
        nodes[KILLED] = cluster.add_node(num_cpus=1, resources={f"device:{KILLED}": 1})
        cluster.wait_for_nodes()
        fc.resume, fc.on_chunk = True, None
        rows += rows_of("2: node b back, --resume", run_fleet(fc), out, kill)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    env = bench_environment(packages=("ray", "onnxruntime", "moenas"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], *env])
        w.writeheader()
        for r in rows:
            w.writerow({**r, **env})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="archs per device")
    ap.add_argument("--chunk", type=int, default=5, help="archs per task")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--quick", action="store_true", help="2 archs, chunks of 1, micro protocol, torch backend")
    ap.add_argument("--out", default=str(RESULTS / "bench_fleet.csv"))
    a = ap.parse_args(argv)
    if a.n < 2 or a.chunk < 1 or a.chunk >= a.n:
        sys.stderr.write("bench_fleet: need --n >= 2 and 1 <= --chunk < --n (node b is killed after its first chunk)\n")
        return 2
    cfg = BenchConfig(2, 1, "torch", True) if a.quick else BenchConfig(a.n, a.chunk, a.backend)
    rows = run(cfg)
    write_csv(Path(a.out), rows)
    cols = [
        "run",
        "fleet_device",
        "chunks_done",
        "chunks_failed",
        "rows",
        "archs_valid",
        "merged_fingerprints",
        "lost_finished_rows",
    ]
    print("  ".join(cols))
    for r in rows:
        print("  ".join(str(r[c]) for c in cols))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
