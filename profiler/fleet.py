"""Fleet profiling campaigns on Ray: every device of a fleet times its share of one arch list.

A device is a Ray custom resource ``device:NAME`` that each of its nodes advertises with one
unit (``ray start --resources '{"device:rpi4": 1}'``). The driver cuts each device's archs into
chunks of ``chunk`` archs; each chunk is one Ray task requesting ``{"device:NAME": 1}``, so a
node times one chunk at a time and never two timed workloads at once. A task runs an ordinary
:class:`~moenas.profiler.runner.Profiler` on its node (fingerprint, reference checks and drift
control taken there) into a node-local temporary dataset and returns the rows. The driver
appends them, as they arrive, to the device's shard ``OUT/shards/DEVICE/FINGERPRINT.parquet``
(one shard per node fingerprint), so a node that drops out loses only the chunk in progress.
At the end each device's shards are merged with the dataset merge rules into
``OUT/DEVICE.parquet``: one dataset per device, never one for the fleet, and shards of
different fingerprints are not mixed unless ``allow_mixed``. A rerun with ``resume`` skips the
archs that already have a valid measurement in the device's shards.

Ray is imported only inside the functions that need it: moenas works without it.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from moenas.arch import Arch, UserError
from moenas.arch.checks import check_fields, check_range, read_text
from moenas.arch.files import atomic_write_text, json_dict, output_lock
from moenas.arch.provenance import now_iso
from moenas.arch.ray_cluster import check_reachable, import_ray
from moenas.data.profiles import latency_table, merge_profiles, read_profiles, write_profiles

from .runner import ProfileConfig, Profiler

FLEET = "fleet profiling (--ray)"

FORMAT = "moenas-fleet"
MANIFEST = "fleet.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SPEC_FIELDS = {"backend": str, "device": str, "threads": int, "inter_threads": int, "n": int}


@dataclass(frozen=True)
class DeviceSpec:
    """One device of the fleet: its name (the ``device:NAME`` resource its nodes advertise),
    how its nodes time (backend, compute device cpu/cuda, thread counts) and its share of the
    campaign's arch list (the first ``n`` archs; None = all)."""

    name: str
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads_intra: int = 1
    threads_inter: int = 1
    n: int | None = None

    @property
    def resource(self) -> str:
        return f"device:{self.name}"


def _checked_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise UserError(f"{where}: device name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return name


def parse_devices(text: str, defaults: DeviceSpec) -> list[DeviceSpec]:
    """``--devices a,b,c`` -> one spec per name with the timing settings of ``defaults``."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError("--devices: give at least one device name, e.g. --devices cpu-xeon,rpi4")
    if len(set(names)) < len(names):
        raise UserError(f"--devices {text!r}: a device is listed twice")
    return [replace(defaults, name=_checked_name(n, "--devices")) for n in names]


def load_fleet(path: str | Path, defaults: DeviceSpec) -> list[DeviceSpec]:
    """A fleet file: ``devices: {NAME: {backend, device, threads, inter_threads, n} or null}``;
    missing settings come from ``defaults`` (the command's flags)."""
    import yaml

    try:
        d = yaml.safe_load(read_text(path))
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    devs = check_fields(d, str(path), {"devices": dict}).get("devices")
    if not devs:
        raise UserError(f"{path}: 'devices' lists no device")
    out = []
    for name, s in devs.items():
        where = f"{path}: device {name}"
        s = check_fields(s if s is not None else {}, where, {}, SPEC_FIELDS)
        unknown = sorted(set(s) - set(SPEC_FIELDS))
        if unknown:
            raise UserError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(SPEC_FIELDS)})")
        for key in ("threads", "inter_threads", "n"):
            check_range(f"{where} {key}", s.get(key), 1)
        out.append(
            DeviceSpec(
                _checked_name(name, str(path)),
                s.get("backend", defaults.backend),
                s.get("device", defaults.device),
                s.get("threads", defaults.threads_intra),
                s.get("inter_threads", defaults.threads_inter),
                s.get("n"),
            )
        )
    return out


@dataclass
class FleetConfig:
    """A campaign: ``profile`` is the template of every chunk's profiling run (its ``archs`` are
    the campaign's list, its protocol, stop rules and drift settings apply on every node)."""

    profile: ProfileConfig
    devices: list[DeviceSpec]
    out: Path
    address: str = "local"  # a Ray address (HOST:6379, ray://HOST:10001, auto) or "local"
    chunk: int = 5  # archs per task: a node that drops out loses at most this many
    resume: bool = False
    allow_mixed: bool = False
    lost_after_s: float = 30.0  # a device with no live node for this long: its waiting chunks are given up
    poll_s: float = 1.0
    progress: bool = True
    command: list[str] | None = None
    on_chunk: Callable[[str, int], None] | None = None  # test hook: (device, chunks of it appended so far)


@dataclass
class ChunkResult:
    """What a task sends back: the rows of its chunk (as the profiler wrote them, with the
    node's fingerprint) and the dataset metadata, plus where it ran."""

    rows: pd.DataFrame
    meta: dict[str, Any]
    node_id: str
    hostname: str


@dataclass
class DeviceReport:
    device: str
    wanted: int  # archs of this device's share
    todo: int  # of them not yet measured when this run started
    chunks: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    nodes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rows: int = 0
    archs: int = 0  # archs with a valid measurement in the merged dataset
    dataset: str | None = None
    merge_error: str | None = None


# ---- on the node ----------------------------------------------------------------------------------


def profile_chunk(template: ProfileConfig, archs: list[Arch], spec: DeviceSpec) -> ChunkResult:
    """The task body, run on a node of ``spec``'s device: profile ``archs`` with the template's
    settings into a temporary dataset on that node and return its rows and metadata."""
    import ray

    with tempfile.TemporaryDirectory(prefix="moenas-fleet-") as tmp:
        cfg = replace(
            template,
            archs=list(archs),
            out=Path(tmp) / "chunk.parquet",
            backend=spec.backend,
            device=spec.device,
            threads_intra=spec.threads_intra,
            threads_inter=spec.threads_inter,
            resume=False,
            overwrite=False,
            shard=None,
            repeat_check=0,
            progress=False,
            on_measured=None,
        )
        Profiler(cfg).run()
        df, meta = read_profiles(cfg.out)
    return ChunkResult(df, meta, ray.get_runtime_context().get_node_id(), socket.gethostname())


# ---- the cluster ----------------------------------------------------------------------------------


def connect(address: str, devices: list[DeviceSpec]) -> None:
    """Join the cluster at ``address``; "local" starts Ray on this machine advertising every
    device with one CPU for tasks, so the devices' chunks take turns (a trial campaign: every
    row then carries this machine's fingerprint)."""
    ray = import_ray(FLEET)
    if address == "local":
        # "local": a new instance even where another cluster runs on this machine (ray.init's rule)
        ray.init(
            address="local",
            num_cpus=1,
            resources={d.resource: 1 for d in devices},
            include_dashboard=False,
            log_to_driver=False,
        )
    else:
        check_reachable(address, "--ray")
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"--ray {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None


def advertised() -> dict[str, list[float]]:
    """device resource -> units each live node advertises."""
    ray = import_ray(FLEET)
    out: dict[str, list[float]] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for k, v in (node.get("Resources") or {}).items():
                if k.startswith("device:"):
                    out.setdefault(k, []).append(v)
    return out


def check_advertised(address: str, devices: list[DeviceSpec]) -> None:
    """UserError before dispatch when a device has no node (its tasks would wait forever), or
    a node advertises a device more than once (it would time two chunks at once)."""
    ray = import_ray(FLEET)
    have = {k for k in ray.cluster_resources() if k.startswith("device:")}
    for d in devices:
        if d.resource not in have:
            listed = ", ".join(sorted(have)) or "none"
            raise UserError(
                f"no node of the Ray cluster ({address}) advertises {d.resource} (advertised: {listed}); "
                f"start one with: ray start --address HEAD:6379 --resources '{{\"{d.resource}\": 1}}'"
            )
    for res, units in advertised().items():
        if any(u != 1 for u in units):
            raise UserError(
                f"a node advertises {res}: {max(units):g}; a device node must advertise 1 unit, "
                "so that it times one chunk at a time"
            )


def _failure(e: BaseException) -> str:
    """One line on why a task did not finish: the error raised in the task, or the node lost."""
    ray = import_ray(FLEET)
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None) or e
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''}"
    return f"node lost ({type(e).__name__})"


# ---- the campaign folder ----------------------------------------------------------------------------


class Shard:
    """The rows one fingerprint of one device sent so far, rewritten (atomically, as the
    profiler writes a dataset) after every chunk. Its metadata is the first chunk's, with every
    chunk's reference checks and runs (each run annotated with the node it ran on)."""

    def __init__(self, path: Path):
        self.path = path
        self.df, self.meta = read_profiles(path) if path.exists() else (None, None)

    def append(self, res: ChunkResult, device: str, command: list[str] | None) -> None:
        runs = [
            {**r, "fleet_device": device, "ray_node_id": res.node_id, "hostname": res.hostname}
            for r in res.meta.get("runs") or []
        ]
        checks = (res.meta.get("reference") or {}).get("checks") or []
        if self.meta is None:
            self.meta = {**res.meta, "command": command, "runs": runs, "fleet_device": device}
            ref = dict(self.meta.get("reference") or {})
            ref.pop("baseline_ms", None)  # every chunk judged drift by its own checks' baseline
            self.meta["reference"] = {**ref, "checks": list(checks)}
            self.df = res.rows
        else:
            self.meta["runs"] = [*(self.meta.get("runs") or []), *runs]
            self.meta["reference"]["checks"] = [*self.meta["reference"].get("checks", []), *checks]
            self.df = pd.concat([self.df, res.rows], ignore_index=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.meta = write_profiles(self.path, self.df, self.meta)


def shard_paths(out: Path, device: str) -> list[Path]:
    return sorted((out / "shards" / device).glob("*.parquet"))


def measured(out: Path, device: str) -> set[str]:
    """Arch ids with a valid (not drift-flagged) first measurement in the device's shards."""
    done: set[str] = set()
    for p in shard_paths(out, device):
        df, _ = read_profiles(p)
        if len(df):
            done |= set(latency_table(df)["arch_id"])
    return done


def open_campaign(cfg: FleetConfig) -> dict[str, Any]:
    """The manifest of the campaign folder (new, or the existing one on resume); UserError
    before anything is written when the folder is another campaign, foreign, or needs --resume."""
    out, proto = cfg.out, cfg.profile.protocol
    man_path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder (a fleet campaign writes a folder)")
    man = json_dict(man_path) if man_path.exists() else None
    if out.exists() and man is None and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not a moenas fleet campaign folder (choose another --out)")
    if man is not None:
        check_fields(man, str(man_path), {}, {"runs": list, "protocol_id": str})
        if man.get("format") != FORMAT:
            raise UserError(
                f"{man_path}: not a moenas fleet campaign manifest; moenas does not replace files it did not write"
            )
        if not cfg.resume:
            raise UserError(
                f"--out {out}: holds a fleet campaign; pass --resume to continue it (measured archs are skipped)"
            )
        if man.get("protocol_id") != proto.protocol_id:
            raise UserError(
                f"{out}: measured under protocol {man.get('protocol_id')}, this run uses {proto.protocol_id}; "
                "use the same protocol flags or another --out"
            )
        return man
    space = cfg.profile.space
    return {
        "format": FORMAT,
        "created": now_iso(),
        "protocol": proto.to_dict(),
        "protocol_id": proto.protocol_id,
        "space": space.name if space else None,
        "runs": [],
    }


def write_manifest(out: Path, man: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MANIFEST, json.dumps(man, indent=2, sort_keys=True, default=str) + "\n")


# ---- dispatch ---------------------------------------------------------------------------------------


class Campaign:
    """Submits every device's chunks, appends the rows of each finished chunk to its shard as it
    arrives, gives up the waiting chunks of a device none of whose nodes is alive any more, and
    merges per device at the end."""

    def __init__(self, cfg: FleetConfig):
        self.cfg = cfg
        self.reports: dict[str, DeviceReport] = {}
        self.shards: dict[Path, Shard] = {}
        self.pending: dict[Any, tuple[str, list[Arch]]] = {}  # task ref -> (device, its archs)
        self.lost_since: dict[str, float] = {}
        self.bars: dict[str, Any] = {}

    def submit(self) -> None:
        from tqdm import tqdm

        ray = import_ray(FLEET)
        cfg = self.cfg
        template = ray.put(replace(cfg.profile, archs=[], command=cfg.command, progress=False, on_measured=None))
        task = ray.remote(profile_chunk)
        for i, spec in enumerate(cfg.devices):
            share = cfg.profile.archs[: spec.n]
            done = measured(cfg.out, spec.name)  # none on a new campaign
            todo = [a for a in share if a.arch_id not in done]
            rep = self.reports[spec.name] = DeviceReport(spec.name, wanted=len(share), todo=len(todo))
            self.bars[spec.name] = tqdm(
                total=len(todo),
                desc=spec.name,
                position=i,
                unit="arch",
                file=sys.stderr,
                disable=not cfg.progress,
                dynamic_ncols=True,
            )
            for j in range(0, len(todo), cfg.chunk):
                chunk = todo[j : j + cfg.chunk]
                ref = task.options(
                    resources={spec.resource: 1}, num_cpus=1, max_retries=0, name=f"moenas-profile:{spec.name}"
                ).remote(template, chunk, spec)
                self.pending[ref] = (spec.name, chunk)
                rep.chunks += 1

    def wait(self) -> None:
        ray = import_ray(FLEET)
        try:
            while self.pending:
                ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.cfg.poll_s)
                for ref in ready:
                    self._finished(ref)
                self._give_up_lost()
        finally:
            for bar in self.bars.values():
                bar.close()

    def _finished(self, ref: Any) -> None:
        ray = import_ray(FLEET)
        device, chunk = self.pending.pop(ref)
        rep = self.reports[device]
        try:
            res: ChunkResult = ray.get(ref)
        except ray.exceptions.RayError as e:
            self._failed(device, _failure(e))
            return
        fp = res.meta.get("fingerprint_id") or "unknown"
        path = self.cfg.out / "shards" / device / f"{fp}.parquet"
        shard = self.shards.get(path) or self.shards.setdefault(path, Shard(path))
        shard.append(res, device, self.cfg.command)
        rep.chunks_done += 1
        if res.hostname not in rep.nodes:
            rep.nodes.append(res.hostname)
        self.bars[device].update(len(chunk))
        if self.cfg.on_chunk:
            self.cfg.on_chunk(device, rep.chunks_done)

    def _failed(self, device: str, reason: str) -> None:
        rep = self.reports[device]
        rep.chunks_failed += 1
        if reason not in rep.errors:
            rep.errors.append(reason)
        self.bars[device].set_postfix_str(f"{rep.chunks_failed} failed")

    def _give_up_lost(self) -> None:
        """Chunks of a device with no live node for ``lost_after_s`` would wait forever: cancel
        them and report them as not done (a rerun with resume measures them)."""
        ray = import_ray(FLEET)
        waiting = {d for d, _ in self.pending.values()}
        live = advertised()
        now = time.monotonic()
        for device in waiting:
            if f"device:{device}" in live:
                self.lost_since.pop(device, None)
                continue
            if now - self.lost_since.setdefault(device, now) < self.cfg.lost_after_s:
                continue
            for ref in [r for r, (d, _) in self.pending.items() if d == device]:
                ray.cancel(ref, force=False)
                del self.pending[ref]
                self._failed(device, f"no live node advertises device:{device} (for {self.cfg.lost_after_s:g} s)")

    def merge(self) -> None:
        """One dataset per device (OUT/DEVICE.parquet) from its shards, by the merge rules."""
        for device, rep in self.reports.items():
            paths = shard_paths(self.cfg.out, device)
            if not paths:
                continue
            target = self.cfg.out / f"{device}.parquet"
            try:
                meta = merge_profiles(
                    paths, target, allow_mixed=self.cfg.allow_mixed, overwrite=True, command=self.cfg.command
                )
            except UserError as e:
                rep.merge_error = str(e).splitlines()[0]
                continue
            rep.dataset, rep.rows, rep.archs = str(target), meta["counts"]["rows"], meta["counts"].get("archs_valid", 0)

    def summary(self, wall_s: float) -> dict[str, Any]:
        reps = [asdict(r) for r in self.reports.values()]
        failed = sum(r["chunks_failed"] for r in reps)
        unmerged = [r["device"] for r in reps if r["merge_error"]]
        return {
            "out": str(self.cfg.out),
            "devices": reps,
            "chunks_failed": failed,
            "unmerged": unmerged,
            "complete": not failed and not unmerged,
            "wall_s": round(wall_s, 2),
        }


def run_fleet(cfg: FleetConfig) -> dict[str, Any]:
    """Run (or resume) a campaign; returns the summary (per device: chunks done and failed,
    rows and valid archs of its merged dataset, the nodes it ran on, errors)."""
    ray = import_ray(FLEET)
    with output_lock(cfg.out, "fleet campaign"):
        man = open_campaign(cfg)
        joined = not ray.is_initialized()
        if joined:
            connect(cfg.address, cfg.devices)
        t0 = time.perf_counter()
        camp = Campaign(cfg)
        try:
            check_advertised(cfg.address, cfg.devices)
            run = {
                "started": now_iso(),
                "command": cfg.command,
                "address": cfg.address,
                "chunk": cfg.chunk,
                "devices": [asdict(d) for d in cfg.devices],
            }
            man.setdefault("runs", []).append(run)
            write_manifest(cfg.out, man)
            camp.submit()
            camp.wait()
        finally:
            if joined:
                ray.shutdown()
        camp.merge()
        summary = camp.summary(time.perf_counter() - t0)
        run.update(finished=now_iso(), chunks_failed=summary["chunks_failed"], complete=summary["complete"])
        write_manifest(cfg.out, man)
    return summary
