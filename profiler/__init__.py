"""Device profiling: ONNX export, timing backends, statistics, device fingerprint, profiling runs.

See profiler/README.md for the measurement method. The dataset written here is read through
:mod:`moenas.data.profiles`. Names are imported lazily (as in :mod:`moenas.predictor`), so that
``moenas.profiler.fingerprint`` alone does not pay for torch and onnxruntime.
"""

from importlib import import_module

_LAZY = {
    "BACKENDS": "backends",
    "Backend": "backends",
    "PreparedWorkload": "backends",
    "Workload": "workload",
    "LMWorkload": "workload",
    "make_workload": "workload",
    "available": "backends",
    "get_backend": "backends",
    "register_backend": "backends",
    "ExportedArch": "onnx_export",
    "export_arch": "onnx_export",
    "export_to_dir": "onnx_export",
    "export_lm": "onnx_export_lm",
    "exporter_for": "onnx_export_lm",
    "ProfileConfig": "runner",
    "Profiler": "runner",
    "measure_one": "runner",
    "StopRule": "stats",
    "measure": "stats",
    "median_ci": "stats",
    "summarize": "stats",
}
__all__ = ["LatencyProtocol", *_LAZY]


def __getattr__(name: str):
    if name == "LatencyProtocol":
        from moenas.arch.protocol import LatencyProtocol

        return LatencyProtocol
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
