"""Kernel launch configurations: defaults, per-device tuned JSON files, test overrides.

Tuned files live in ``moe_kernels/configs/<device>.json`` (device name lower-cased, non
alphanumerics replaced by ``_``; e.g. ``nvidia_h100_80gb_hbm3.json``), written by
``benchmarks/tune_moe_kernels.py``. A directory named by ``$MOENAS_MOE_CONFIG_DIR`` is searched
first. File layout::

    {"device": "NVIDIA H100 80GB HBM3", "torch": "...", "triton": "...", "cuda": "...",
     "configs": {"bf16|D512|slots4096": {"up": {...}, "down": {...}, "wgrad": {...}}, ...}}

Shape class = (dtype, model dim D, number of token-slots T*k rounded up to a power of two,
clamped to [64, 32768]). Lookup: exact class, else the nearest slot bucket with the same dtype
and D. When nothing matches (or the device has no file) the defaults below are used and one
``UserWarning`` is emitted per device and process.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

__all__ = [
    "GemmConfig",
    "WgradConfig",
    "MoEKernelConfig",
    "default_config",
    "get_config",
    "shape_class",
    "slot_bucket",
    "device_config_path",
    "override_config",
    "config_to_json",
    "config_from_json",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_MIN_BUCKET, _MAX_BUCKET = 64, 32768


@dataclass(frozen=True)
class GemmConfig:
    """Row-grouped GEMM (the ``up`` kernel D -> h_e and the ``down`` kernel h_e -> D)."""

    block_m: int = 64
    block_n: int = 128
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class WgradConfig:
    """Per-expert weight-gradient kernel (reduction over the expert's rows)."""

    block_h: int = 128
    block_d: int = 128
    block_r: int = 64
    num_warps: int = 8
    num_stages: int = 3


@dataclass(frozen=True)
class MoEKernelConfig:
    up: GemmConfig = GemmConfig()
    down: GemmConfig = GemmConfig()
    wgrad: WgradConfig = WgradConfig()


_DEFAULT_HALF = MoEKernelConfig()
_DEFAULT_FP32 = MoEKernelConfig(
    up=GemmConfig(block_m=32, block_n=64, block_k=32, num_warps=4, num_stages=2),
    down=GemmConfig(block_m=32, block_n=64, block_k=32, num_warps=4, num_stages=2),
    wgrad=WgradConfig(block_h=64, block_d=64, block_r=32, num_warps=4, num_stages=2),
)

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype}; use float32, float16 or bfloat16") from None


def default_config(dtype: torch.dtype) -> MoEKernelConfig:
    return _DEFAULT_FP32 if dtype == torch.float32 else _DEFAULT_HALF


def slot_bucket(num_slots: int) -> int:
    b = _MIN_BUCKET
    while b < num_slots and b < _MAX_BUCKET:
        b *= 2
    return b


def shape_class(dtype: torch.dtype, d_model: int, num_slots: int) -> str:
    return f"{dtype_name(dtype)}|D{int(d_model)}|slots{slot_bucket(num_slots)}"


def _sanitize(device_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_") or "unknown"


def device_config_path(device_name: str, directory: str | Path | None = None) -> Path:
    return Path(directory or CONFIG_DIR) / f"{_sanitize(device_name)}.json"


def config_to_json(cfg: MoEKernelConfig) -> dict:
    return {"up": asdict(cfg.up), "down": asdict(cfg.down), "wgrad": asdict(cfg.wgrad)}


def config_from_json(obj: dict, base: MoEKernelConfig | None = None) -> MoEKernelConfig:
    base = base or _DEFAULT_HALF
    return MoEKernelConfig(
        up=replace(base.up, **obj.get("up", {})),
        down=replace(base.down, **obj.get("down", {})),
        wgrad=replace(base.wgrad, **obj.get("wgrad", {})),
    )


@lru_cache(maxsize=None)
def _load_device_file(device_name: str) -> dict:
    dirs = []
    if os.environ.get("MOENAS_MOE_CONFIG_DIR"):
        dirs.append(Path(os.environ["MOENAS_MOE_CONFIG_DIR"]))
    dirs.append(CONFIG_DIR)
    for d in dirs:
        p = device_config_path(device_name, d)
        if p.is_file():
            with open(p) as f:
                return json.load(f).get("configs", {})
    return {}


_WARNED: set[str] = set()
_OVERRIDE: list[MoEKernelConfig] = []


@contextmanager
def override_config(cfg: MoEKernelConfig):
    """Force ``cfg`` for every launch inside the ``with`` block (tests, tuning)."""
    _OVERRIDE.append(cfg)
    try:
        yield cfg
    finally:
        _OVERRIDE.pop()


def _reset_caches() -> None:
    """Forget loaded files and issued warnings (tests only)."""
    _WARNED.clear()
    _load_device_file.cache_clear()


def get_config(device_name: str | None, dtype: torch.dtype, d_model: int, num_slots: int) -> MoEKernelConfig:
    """Config for one launch. ``device_name=None`` (CPU / interpreter) returns the defaults
    silently; a CUDA device without a tuned entry returns the defaults with one warning."""
    if _OVERRIDE:
        return _OVERRIDE[-1]
    base = default_config(dtype)
    if device_name is None:
        return base
    table = _load_device_file(device_name)
    key = shape_class(dtype, d_model, num_slots)
    entry = table.get(key)
    if entry is None:
        prefix = key.rsplit("|", 1)[0] + "|slots"
        want = slot_bucket(num_slots)
        near = [
            (abs(int(k2[len(prefix) :]).bit_length() - want.bit_length()), k2)
            for k2 in table
            if k2.startswith(prefix) and k2[len(prefix) :].isdigit()
        ]
        if near:
            entry = table[min(near)[1]]
    if entry is None:
        if device_name not in _WARNED:
            _WARNED.add(device_name)
            warnings.warn(
                f"moenas.moe_kernels: no tuned kernel configuration for device "
                f"'{device_name}' and shape class '{key}' (looked for "
                f"{device_config_path(device_name)}); using defaults. Run "
                f"benchmarks/tune_moe_kernels.py on this machine to create one.",
                UserWarning,
                stacklevel=3,
            )
        return base
    return config_from_json(entry, base)
