"""moenas: find fast sparse (Mixture-of-Experts) Transformers for a given machine.

The public Python API, re-exported from the floors below (imported lazily, so that
``import moenas`` stays cheap and ``moenas.moe_kernels`` imports nothing else of moenas)::

    from moenas import SearchSpace, Arch, build_model, protocol_cost, Predictor
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **{
        name: "moenas.arch"
        for name in (
            "Arch",
            "LayerArch",
            "StackArch",
            "SearchSpace",
            "UserError",
            "load_arch",
            "load_archs",
            "save_archs",
        )
    },
    "build_model": "moenas.arch.model",
    "SubTransformer": "moenas.arch.model",
    "protocol_cost": "moenas.arch.cost",
    "param_count": "moenas.arch.cost",
    "LatencyProtocol": "moenas.arch.protocol",
    "Predictor": "moenas.predictor",
    "fit_predictor": "moenas.predictor",
    "read_profiles": "moenas.data.profiles",
    "latency_table": "moenas.data.profiles",
    "moe_ffn": "moenas.moe_kernels",
    "load_supernet": "moenas.search.checkpoint",
    "validation_loss": "moenas.search.evaluation",
    "Evolution": "moenas.search.evolution",
    "EvolutionConfig": "moenas.search.evolution",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moenas' has no attribute {name!r}")
