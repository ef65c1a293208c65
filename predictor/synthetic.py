"""Synthetic profile datasets for tests and benchmarks without hardware (clearly labelled).

Latency here is a *known* function of the arch under the protocol: a per-operator overhead
(as ONNX Runtime on a CPU pays per kernel launch), plus FLOPs at a width-dependent efficiency
(small matmuls run below peak), plus bytes over a bandwidth, times lognormal measurement noise.
Two "devices" use different weights and a different nonlinearity, so that a predictor fitted on
one has something real to adapt to on the other (`moenas fit --base`). The rows are written in
the profile-dataset format of ``moenas.data.profiles`` with backend ``synthetic`` and a device
name starting with ``synthetic-``, so nothing mistakes them for measurements.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from moenas.arch.protocol import LatencyProtocol
from moenas.arch import Arch, SearchSpace

from .features import arch_arrays, vector_cost


@dataclass(frozen=True)
class SynthDevice:
    name: str
    op_us: float          # overhead per operator, microseconds
    gflops: float         # peak matmul throughput
    gbps: float           # memory bandwidth
    knee: float           # width at which matmuls reach half of peak
    moe_us: float         # extra dispatch cost per expert per MoE layer (gather/scatter)
    noise: float = 0.015  # lognormal sigma of one measurement (docs/ARCHITECTURE.md: ~1.7% between passes)


DEVICES = {
    "a": SynthDevice("synthetic-cpu-a", op_us=6.0, gflops=40.0, gbps=12.0, knee=96.0, moe_us=4.0),
    # another CPU: faster math, slower memory, cheaper operators (a mild, realistic shift)
    "c": SynthDevice("synthetic-cpu-c", op_us=4.0, gflops=70.0, gbps=8.0, knee=64.0, moe_us=6.0),
    # a "GPU-like" second device: big launch overhead, much faster math, sharper MoE penalty
    "b": SynthDevice("synthetic-gpu-b", op_us=18.0, gflops=900.0, gbps=300.0, knee=256.0, moe_us=15.0),
}

PROTOCOL = LatencyProtocol()  # HAT's


def true_latency(archs: Sequence[Arch], device: SynthDevice, protocol: LatencyProtocol = PROTOCOL) -> dict[str, np.ndarray]:
    """Noise-free encoder / decoder / total latency (ms) of every arch on ``device``."""
    arr = arch_arrays(archs)
    c = vector_cost(arr, protocol)
    T = protocol.decoder_steps
    out = {}
    for comp, st, base, d in (("encoder", arr.enc, 1, arr.glob[:, 3]), ("decoder", arr.dec, 3, arr.glob[:, 4])):
        mask = st[:, :, 0] > 0
        E = (st[:, :, base:] > 0).sum(-1)
        ops = np.where(mask, (10 if comp == "encoder" else 16) + np.where(E > 1, 3 * E + 2, 2), 0).sum(1)
        moe = np.where(mask & (E > 1), E, 0).sum(1)
        eff = d / (d + device.knee)
        steps = 1 if comp == "encoder" else T
        ms = (steps * (ops * device.op_us + moe * device.moe_us) * 1e-3
              + c[f"flops_{comp}"] / (device.gflops * 1e9 * eff) * 1e3
              + c[f"bytes_{comp}"] / (device.gbps * 1e9) * 1e3)
        out[comp] = ms
    out["total"] = out["encoder"] + out["decoder"]
    return out


def make_profiles(space: str, n: int, device: str = "a", seed: int = 0, repeat_share: float = 0.25,
                  protocol: LatencyProtocol = PROTOCOL, archs: Sequence[Arch] | None = None) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata) of a synthetic profile dataset: ``n`` archs sampled from ``space``, each
    measured once, and ``repeat_share`` of them measured a second time (the noise floor)."""
    dev = DEVICES[device]
    sp = SearchSpace.load(space)
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
            noise = {c: float(np.exp(rng.normal(0, dev.noise))) for c in ("encoder", "decoder")}
            vals = {"encoder": truth["encoder"][i] * noise["encoder"], "decoder": truth["decoder"][i] * noise["decoder"]}
            vals["total"] = vals["encoder"] + vals["decoder"]
            mid = f"{aid}-{rep}"
            for comp, ms in vals.items():
                rows.append({
                    "arch_id": aid, "arch_json": aj, "space": sp.name, "component": comp,
                    "backend": "synthetic", "device": dev.name,
                    "median_ms": ms, "p10_ms": ms * 0.98, "p90_ms": ms * 1.03, "mean_ms": ms, "std_ms": ms * 0.02,
                    "ci_lo_ms": ms * 0.99, "ci_hi_ms": ms * 1.01, "ci_rel": 0.01, "n_runs": 60, "n_warmup": 10,
                    "precision_reached": True, "target_rel": 0.02, "threads_intra": 1, "threads_inter": 1,
                    "session_options": "{}", **protocol.to_dict(), "protocol_id": pid, "expert_counts": None, "op_profile": None,
                    "cpu_model": dev.name, "cpu_cores": 1, "versions": "{}", "fingerprint_id": fid,
                    "timestamp": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00", "run_id": f"synthetic-{seed}",
                    "measurement_id": mid, "drift_flag": False, "remeasured": False, "repeat_index": rep,
                    "reference_ratio": 1.0,
                })
    df = pd.DataFrame(rows)
    from moenas.data.profiles import COLUMNS

    for col, dtype in COLUMNS.items():  # every column of the schema, typed (unknown ones empty)
        if col not in df:
            df[col] = pd.Series([np.nan if dtype == "float64" else (0 if dtype == "int64" else None)] * len(df))
    df = df.astype(COLUMNS)
    meta = {"protocol": protocol.to_dict(), "protocol_id": pid, "fingerprint": {**fp, "fingerprint_id": fid},
            "fingerprint_id": fid, "space": sp.name, "synthetic": True,
            "note": f"SYNTHETIC latencies (moenas.predictor.synthetic, device {dev.name}), not measurements"}
    return df, meta


def write_synthetic(path: str | Path, space: str, n: int, device: str = "a", seed: int = 0, **kw) -> Path:
    """Write a synthetic dataset through ``moenas.data.profiles.write_profiles``."""
    from moenas.data.profiles import write_profiles

    df, meta = make_profiles(space, n, device, seed, **kw)
    write_profiles(path, df, meta)
    return Path(path)
