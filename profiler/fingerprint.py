"""Device fingerprint: what machine and software a measurement came from.

``fingerprint_id`` hashes the fields that change latency: CPU model and logical core count,
GPU name and driver (when a GPU is used), OS, Python and the versions of onnxruntime, torch,
triton and moenas. Thread counts are per-row columns, not part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

ID_FIELDS = (
    "cpu_model",
    "cpu_cores",
    "gpu_name",
    "gpu_driver",
    "os",
    "python",
    "onnxruntime_version",
    "torch_version",
    "triton_version",
    "moenas_version",
)


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def gpu_info() -> tuple[str | None, str | None]:
    """(name, driver) of GPU 0, from torch and nvidia-smi; (None, None) without a GPU."""
    name = driver = None
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no usable CUDA is the common case
        pass
    if name is not None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = None
    return name, driver


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """The fingerprint fields for measurements on ``device`` ('cpu' or 'cuda')."""
    gpu_name, gpu_driver = gpu_info() if device != "cpu" else (None, None)
    fp: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "gpu_name": gpu_name,
        "gpu_driver": gpu_driver,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime_version": _pkg("onnxruntime") or _pkg("onnxruntime-gpu"),
        "torch_version": _pkg("torch"),
        "triton_version": _pkg("triton"),
        "moenas_version": _pkg("moenas"),
    }
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    key = json.dumps({k: fp.get(k) for k in ID_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def bench_environment(device: str = "cpu", packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """The columns every benchmark CSV carries: the machine (CPU model and cores, GPU when used,
    fingerprint id), the date, and Python plus the versions of ``packages`` (torch always).
    One helper so that every results file names its machine the same way."""
    from moenas.arch.provenance import now_iso, versions

    fp = fingerprint(device)
    env = {
        "device": fp["gpu_name"] or fp["cpu_model"],
        "cores": fp["cpu_cores"],
        "fingerprint_id": fp["fingerprint_id"],
        "date": now_iso()[:10],
    }
    env.update(versions(("torch", *packages)))
    return env
