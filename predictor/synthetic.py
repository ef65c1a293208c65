"""Synthetic profile datasets for tests and benchmarks without hardware (clearly labelled).

Latency here is a *known* function of the arch under the protocol: a per-operator overhead
(as ONNX Runtime on a CPU pays per kernel launch), plus FLOPs at a width-dependent efficiency
(small matmuls run below peak), plus bytes over a bandwidth, times lognormal measurement noise.
Two "devices" use different weights and a different nonlinearity, so that a predictor fitted on
one has something real to adapt to on the other (`moenas fit --base`). The rows are written in
the profile-dataset format of ``moenas.data.profiles`` with backend ``synthetic`` and a device
name starting with ``synthetic-``, so nothing mistakes them for measurements.

Any model family: each timed component runs one of the arch's stacks once or once per step
(:data:`COMPONENT_RUNS`), so a decoder-only language model's prefill is one pass of its stack
and its decode ``decode_steps`` passes, under an :class:`~moenas.arch.protocol.LMProtocol`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from moenas.arch import SearchSpace
from moenas.arch.arch import AnyArch
from moenas.arch.protocol import LatencyProtocol, Protocol, protocol_for

from .features import ARRAYS, STACKS, archs_family, as_protocol, vector_cost


@dataclass(frozen=True)
class SynthDevice:
    name: str
    op_us: float  # overhead per operator, microseconds
    gflops: float  # peak matmul throughput
    gbps: float  # memory bandwidth
    knee: float  # width at which matmuls reach half of peak
    moe_us: float  # extra dispatch cost per expert per MoE layer (gather/scatter)
    noise: float = 0.015  # lognormal sigma of one measurement (docs/ARCHITECTURE.md: ~1.7% between passes)


DEVICES = {
    "a": SynthDevice("synthetic-cpu-a", op_us=6.0, gflops=40.0, gbps=12.0, knee=96.0, moe_us=4.0),
    # another CPU: faster math, slower memory, cheaper operators (a mild, realistic shift)
    "c": SynthDevice("synthetic-cpu-c", op_us=4.0, gflops=70.0, gbps=8.0, knee=64.0, moe_us=6.0),
    # a "GPU-like" second device: big launch overhead, much faster math, sharper MoE penalty
    "b": SynthDevice("synthetic-gpu-b", op_us=18.0, gflops=900.0, gbps=300.0, knee=256.0, moe_us=15.0),
}

PROTOCOL = LatencyProtocol()  # HAT's
# component -> (index of the stack it runs, operators per layer besides the FFN's, the protocol
# field counting its runs; None: once)
COMPONENT_RUNS: dict[str, tuple[int, int, str | None]] = {
    "encoder": (0, 10, None),
    "decoder": (1, 16, "decoder_steps"),
    "prefill": (0, 10, None),
    "decode": (0, 10, "decode_steps"),
}


def true_latency(
    archs: Sequence[AnyArch], device: SynthDevice, protocol: Protocol | None = None
) -> dict[str, np.ndarray]:
    """Noise-free latency (ms) of every arch on ``device``, per component of the archs' family
    and in total (``protocol`` None: the family's default)."""
    family = archs_family(archs)
    protocol = as_protocol(protocol, family)
    arr = ARRAYS.for_family(family)(archs)
    c = vector_cost(arr, protocol)
    out = {}
    for comp in family.components:
        stack, layer_ops, runs = COMPONENT_RUNS[comp]
        st, d, genes = arr.stacks[stack], arr.glob[:, 3 + stack], STACKS.for_family(family)[stack].genes
        mask = st[:, :, 0] > 0
        E = (st[:, :, genes:] > 0).sum(-1)
        ops = np.where(mask, layer_ops + np.where(E > 1, 3 * E + 2, 2), 0).sum(1)
        moe = np.where(mask & (E > 1), E, 0).sum(1)
        eff = d / (d + device.knee)
        steps = 1 if runs is None else getattr(protocol, runs)
        ms = (
            steps * (ops * device.op_us + moe * device.moe_us) * 1e-3
            + c[f"flops_{comp}"] / (device.gflops * 1e9 * eff) * 1e3
            + c[f"bytes_{comp}"] / (device.gbps * 1e9) * 1e3
        )
        out[comp] = ms
    out["total"] = sum(out[comp] for comp in family.components)
    return out


def make_profiles(
    space: str,
    n: int,
    device: str = "a",
    seed: int = 0,
    repeat_share: float = 0.25,
    protocol: Protocol | None = None,
    archs: Sequence[AnyArch] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata) of a synthetic profile dataset: ``n`` archs sampled from ``space``, each
    measured once, and ``repeat_share`` of them measured a second time (the noise floor).
    ``protocol`` None: the default of the space's family; every row carries its fields (and,
    for a decoder-only protocol, its family)."""
    dev = DEVICES[device]
    sp = SearchSpace.load(space)
    protocol = protocol_for(sp.family) if protocol is None else protocol
    archs = list(archs) if archs is not None else sp.sample_n(n, seed=seed)
    truth = true_latency(archs, dev, protocol)
    rng = np.random.default_rng(seed + 1000 * "abc".index(device))
    pid = protocol.protocol_id
    fp = {"cpu_model": dev.name, "cpu_cores": 1, "synthetic": True}
    fid = hashlib.sha256(dev.name.encode()).hexdigest()[:12]
    rows = []
    n_rep = int(round(repeat_share * len(archs)))
    for i, a in enumerate(archs):
        aj, aid = a.to_json(), a.arch_id
        for rep in range(2 if i < n_rep else 1):
            noise = {c: float(np.exp(rng.normal(0, dev.noise))) for c in sp.family.components}
            vals = {c: truth[c][i] * noise[c] for c in sp.family.components}
            vals["total"] = sum(vals.values())
            mid = f"{aid}-{rep}"
            for comp, ms in vals.items():
                rows.append(
                    {
                        "arch_id": aid,
                        "arch_json": aj,
                        "space": sp.name,
                        "component": comp,
                        "backend": "synthetic",
                        "device": dev.name,
                        "median_ms": ms,
                        "p10_ms": ms * 0.98,
                        "p90_ms": ms * 1.03,
                        "mean_ms": ms,
                        "std_ms": ms * 0.02,
                        "ci_lo_ms": ms * 0.99,
                        "ci_hi_ms": ms * 1.01,
                        "ci_rel": 0.01,
                        "n_runs": 60,
                        "n_warmup": 10,
                        "precision_reached": True,
                        "target_rel": 0.02,
                        "threads_intra": 1,
                        "threads_inter": 1,
                        "session_options": "{}",
                        **protocol.to_dict(),
                        "protocol_id": pid,
                        "expert_counts": None,
                        "op_profile": None,
                        "cpu_model": dev.name,
                        "cpu_cores": 1,
                        "versions": "{}",
                        "fingerprint_id": fid,
                        "timestamp": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                        "run_id": f"synthetic-{seed}",
                        "measurement_id": mid,
                        "drift_flag": False,
                        "remeasured": False,
                        "repeat_index": rep,
                        "reference_ratio": 1.0,
                    }
                )
    df = pd.DataFrame(rows)
    from moenas.data.profiles import COLUMNS

    for col, dtype in COLUMNS.items():  # every column of the schema, typed (unknown ones empty)
        if col not in df:
            df[col] = pd.Series([np.nan if dtype == "float64" else (0 if dtype == "int64" else None)] * len(df))
    df = df.astype(COLUMNS)
    meta = {
        "protocol": protocol.to_dict(),
        "protocol_id": pid,
        "fingerprint": {**fp, "fingerprint_id": fid},
        "fingerprint_id": fid,
        "space": sp.name,
        "synthetic": True,
        "note": f"SYNTHETIC latencies (moenas.predictor.synthetic, device {dev.name}), not measurements",
    }
    return df, meta


def write_synthetic(path: str | Path, space: str, n: int, device: str = "a", seed: int = 0, **kw) -> Path:
    """Write a synthetic dataset through ``moenas.data.profiles.write_profiles``."""
    from moenas.data.profiles import write_profiles

    df, meta = make_profiles(space, n, device, seed, **kw)
    write_profiles(path, df, meta)
    return Path(path)
