"""Device profiling: ONNX export, timing backends, statistics, device fingerprint, profiling runs.

See profiler/README.md for the measurement method. The dataset written here is read through
:mod:`moenas.data.profiles`.
"""
from .backends import BACKENDS, Backend, Runner, Workload, available, get_backend, register_backend
from .onnx_export import ExportedArch, export_arch, export_to_dir
from moenas.arch.protocol import LatencyProtocol
from .runner import ProfileConfig, Profiler, measure_one
from .stats import StopRule, measure, median_ci, summarize

__all__ = [
    "BACKENDS", "Backend", "Runner", "Workload", "available", "get_backend", "register_backend",
    "ExportedArch", "export_arch", "export_to_dir", "LatencyProtocol", "ProfileConfig", "Profiler", "measure_one",
    "StopRule", "measure", "median_ci", "summarize",
]
