"""Fleet campaigns on a local Ray cluster with two simulated device nodes (device:a, device:b):
dispatch by resource label, one merged dataset per device, a node killed mid-campaign losing no
finished row and a rerun finishing it, bad input as one line with exit 2 (never a hang)."""

import json
import socket
import sys
from pathlib import Path

import pytest
from fast_profile import ENC_DEC_SHAPES, NO_DRIFT, fast_rule

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from moenas.arch import SearchSpace  # noqa: E402
from moenas.arch.protocol import LatencyProtocol  # noqa: E402
from moenas.cli import main  # noqa: E402
from moenas.commands.profile import fleet_exit  # noqa: E402
from moenas.data.profiles import latency_table, read_profiles  # noqa: E402
from moenas.profiler.fleet import DeviceSpec, FleetConfig, run_fleet, shard_paths  # noqa: E402
from moenas.profiler.runner import ProfileConfig  # noqa: E402
from moenas.profiler.stats import StopRule  # noqa: E402

SPACE = SearchSpace.load("tiny")
# the micro protocol and stop rule of test_profiler_run, timed with the torch backend (no export)
PROTOCOL = LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2)
RULE = StopRule(warmup=1, min_runs=6, max_runs=8, max_seconds=0.3)
FLAGS = [
    "--space",
    "tiny",
    "--seed",
    "0",
    "--backend",
    "torch",
    *ENC_DEC_SHAPES,
    *fast_rule("0.3"),
    *NO_DRIFT,
    "--ref-wait",
    "0",
    "--ref-retries",
    "0",
    "--no-progress",
]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = {d: c.add_node(num_cpus=1, resources={f"device:{d}": 1}) for d in ("a", "b")}
    c.wait_for_nodes()
    yield c, nodes
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def fleet(out: Path, address: str, n: int, chunk: int, shares: dict[str, int | None], **kw) -> FleetConfig:
    profile = ProfileConfig(
        archs=SPACE.sample_n(n, seed=0),
        out=out,
        space=SPACE,
        backend="torch",
        protocol=PROTOCOL,
        rule=RULE,
        ref_rule=RULE,
        drift_threshold=100.0,
        ref_wait_s=0.0,
        ref_retries=0,
        progress=False,
    )
    devices = [DeviceSpec(d, backend="torch", n=k) for d, k in shares.items()]
    return FleetConfig(
        profile=profile,
        devices=devices,
        out=out,
        address=address,
        chunk=chunk,
        progress=False,
        poll_s=0.2,
        command=["test"],
        **kw,
    )


def shard_rows(out: Path, device: str):
    (path,) = shard_paths(out, device)  # one machine: one fingerprint, one shard
    return read_profiles(path)


def test_dispatch_by_resource_label_and_one_dataset_per_device(cluster, tmp_path, capsys):
    c, nodes = cluster
    out = tmp_path / "campaign"
    summary = run_fleet(fleet(out, c.address, n=3, chunk=2, shares={"a": None, "b": 2}))
    assert summary["complete"] and summary["chunks_failed"] == 0
    for d, wanted in (("a", 3), ("b", 2)):
        df, meta = shard_rows(out, d)
        runs = {r["run_id"]: r for r in meta["runs"]}
        # every row of device d was measured by a task on d's node, with the node's fingerprint
        assert {runs[rid]["ray_node_id"] for rid in df["run_id"]} == {nodes[d].node_id}
        assert set(df["fingerprint_id"]) == {meta["fingerprint_id"]}
        merged, mmeta = read_profiles(out / f"{d}.parquet")
        assert len(latency_table(merged)) == wanted and len(merged) == 3 * wanted
        assert [Path(m["path"]).parent.name for m in mmeta["merged_from"]] == [d]  # its own shards only
        assert {r["fleet_device"] for r in mmeta["runs"]} == {d}
    rep = {r["device"]: r for r in summary["devices"]}
    assert rep["a"]["chunks_done"] == 2 and rep["b"]["chunks_done"] == 1 and rep["b"]["archs"] == 2
    # a second run without --resume is refused; with it, nothing is left to do
    assert main(["profile", *FLAGS, "--n", "3", "--ray", c.address, "--devices", "a,b", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "profile",
                *FLAGS,
                "--n",
                "3",
                "--ray",
                c.address,
                "--devices",
                "a,b",
                "--out",
                str(out),
                "--resume",
                "--json",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["complete"] and {r["device"]: r["chunks"] for r in again["devices"]} == {"a": 0, "b": 1}
    assert {r["device"]: r["archs"] for r in again["devices"]} == {"a": 3, "b": 3}


def test_unknown_device_is_one_line_and_exit_2(cluster, tmp_path, capsys):
    c, _ = cluster
    out = tmp_path / "campaign"
    assert main(["profile", *FLAGS, "--n", "2", "--ray", c.address, "--devices", "a,rpi4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device:rpi4" in err and "device:a" in err
    assert not out.exists()  # refused before any work
    with socket.socket() as s:  # a port nothing listens on: one line, not minutes of ray.init retries
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["profile", *FLAGS, "--ray", f"127.0.0.1:{port}", "--devices", "a", "--out", str(out)]) == 2
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert main(["profile", *FLAGS, "--devices", "a", "--out", str(out)]) == 2  # no --ray
    assert "--ray" in capsys.readouterr().err
    bad = tmp_path / "fleet.yaml"
    bad.write_text("devices:\n  a: {threads: 0}\n")
    assert main(["profile", *FLAGS, "--ray", c.address, "--fleet", str(bad), "--out", str(out)]) == 2
    assert "threads" in capsys.readouterr().err


def test_killed_node_loses_no_finished_row_and_a_rerun_finishes(cluster, tmp_path, capsys):
    c, nodes = cluster
    out = tmp_path / "campaign"
    seen = {}

    def kill_b_after_first_chunk(device, done):
        if device == "b" and done == 1:
            seen["rows"] = set(shard_rows(out, "b")[0]["measurement_id"])
            c.remove_node(nodes.pop("b"))

    cfg = fleet(
        out, c.address, n=4, chunk=1, shares={"a": None, "b": None}, lost_after_s=0.0, on_chunk=kill_b_after_first_chunk
    )
    summary = run_fleet(cfg)
    rep = {r["device"]: r for r in summary["devices"]}
    assert rep["a"]["chunks_done"] == 4 and rep["a"]["chunks_failed"] == 0
    assert rep["b"]["chunks_done"] == 1 and rep["b"]["chunks_failed"] == 3 and rep["b"]["errors"]
    assert fleet_exit(summary) == 1 and "--resume" in capsys.readouterr().err
    df, _ = shard_rows(out, "b")
    assert set(df["measurement_id"]) == seen["rows"] and rep["b"]["archs"] == 1  # the finished chunk is kept
    nodes["b"] = c.add_node(num_cpus=1, resources={"device:b": 1})  # the node comes back
    c.wait_for_nodes()
    cfg.resume, cfg.on_chunk = True, None
    again = run_fleet(cfg)
    assert again["complete"] and fleet_exit(again) == 0
    rep = {r["device"]: r for r in again["devices"]}
    assert rep["a"]["chunks"] == 0 and rep["b"]["chunks"] == 3 and rep["b"]["archs"] == 4
    df, _ = shard_rows(out, "b")
    assert seen["rows"] <= set(df["measurement_id"]) and df["arch_id"].nunique() == 4


def test_without_ray_the_flag_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    assert main(["profile", *FLAGS, "--ray", "local", "--devices", "a", "--out", str(tmp_path / "c")]) == 2
    assert "pip install 'moenas[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_shards_of_two_fingerprints_are_not_merged_unless_allowed(tmp_path):
    from moenas.data.profiles import to_frame, write_profiles
    from moenas.profiler.fleet import Campaign, DeviceReport

    out = tmp_path / "campaign"
    arch = SPACE.sample_n(1, seed=0)[0]
    for fp in ("f00000000001", "f00000000002"):  # one arch measured by two nodes of unlike software
        rows = [
            {
                "arch_id": arch.arch_id,
                "arch_json": arch.to_json(),
                "component": comp,
                "backend": "torch",
                "device": "cpu",
                "median_ms": 1.0,
                "repeat_index": 0,
                "drift_flag": False,
                "protocol_id": PROTOCOL.protocol_id,
                "fingerprint_id": fp,
                "measurement_id": fp,
                "timestamp": "2026-01-01T00:00:00+00:00",
            }
            for comp in ("encoder", "decoder", "total")
        ]
        write_profiles(
            out / "shards" / "a" / f"{fp}.parquet",
            to_frame(rows),
            {"protocol_id": PROTOCOL.protocol_id, "fingerprint_id": fp},
        )
    for allow in (False, True):
        camp = Campaign(fleet(out, "local", n=1, chunk=1, shares={"a": None}, allow_mixed=allow))
        rep = camp.reports["a"] = DeviceReport("a", wanted=1, todo=0)
        camp.merge()
        if allow:
            assert rep.dataset == str(out / "a.parquet") and rep.rows == 6 and rep.merge_error is None
        else:
            assert rep.dataset is None and "fingerprints" in rep.merge_error and not (out / "a.parquet").exists()
            summary = camp.summary(0.0)
            assert summary["unmerged"] == ["a"] and not summary["complete"] and fleet_exit(summary) == 1
