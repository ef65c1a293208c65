"""The timing backends a caller can ask for: ``get_backend(name, device, threads)``.

Importing this module registers the shipped backends: ``onnxruntime``
(:mod:`~moenas.profiler.backend_onnxruntime`: cpu; cuda when onnxruntime has the CUDA execution
provider), ``torch`` and ``triton`` (:mod:`~moenas.profiler.backend_torch`: eager torch on cpu,
cuda; the Triton MoE kernels on cuda). The interface they implement and the registry are in
:mod:`~moenas.profiler.backend_base`; a new backend is a module like those two, imported here.
"""

from __future__ import annotations

from moenas.arch import UserError

from .backend_base import (
    BACKENDS,
    Backend,
    DecoderOnlyPrepared,
    EncoderDecoderPrepared,
    PreparedWorkload,
    register_backend,
)
from .backend_onnxruntime import OnnxRuntimeBackend, OrtLMPreparedWorkload, OrtPreparedWorkload
from .backend_torch import TorchBackend, TorchLMPreparedWorkload, TorchPreparedWorkload, TritonBackend

__all__ = [
    "BACKENDS",
    "Backend",
    "PreparedWorkload",
    "EncoderDecoderPrepared",
    "DecoderOnlyPrepared",
    "register_backend",
    "get_backend",
    "available",
    "OnnxRuntimeBackend",
    "OrtPreparedWorkload",
    "OrtLMPreparedWorkload",
    "TorchBackend",
    "TorchPreparedWorkload",
    "TorchLMPreparedWorkload",
    "TritonBackend",
]


def get_backend(name: str, device: str = "cpu", threads_intra: int = 1, threads_inter: int = 1) -> Backend:
    """The registered backend ``name`` on ``device``; UserError if either is not available."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r} (available: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[name](device, threads_intra, threads_inter)


def available() -> dict[str, tuple[str, ...]]:
    """Registered backend name -> the devices it can use on this machine."""
    return {n: c.available_devices() for n, c in sorted(BACKENDS.items())}
