"""Micro search spaces for tests, importable as ``micro_spaces``: the smallest spaces of each
family whose archs still have MoE layers, more than one layer and (encoder-decoder) cross
attention, so supernets and models build and train in milliseconds.

Each call returns a fresh copy (a test may change its copy); ``changes`` replace top-level keys.
"""

from __future__ import annotations

import copy
from typing import Any

_ENCODER_DECODER: dict[str, Any] = {
    "name": "micro",
    "vocab_size": 97,
    "qkv_dim": 16,
    "top_k": [1, 2],
    "encoder": {
        "embed_dim": [16, 24],
        "layers": [1, 2],
        "heads": [2, 4],
        "experts": [1, 2, 3],
        "expert_sizes": [16, 32],
    },
    "decoder": {
        "embed_dim": [16, 24],
        "layers": [1, 2],
        "heads": [2, 4],
        "cross_heads": [2, 4],
        "cross_span": [1, 2],
        "experts": [1, 2],
        "expert_sizes": [16, 32],
    },
}
_DECODER_ONLY: dict[str, Any] = {
    "name": "lm-micro",
    "family": "decoder-only",
    "vocab_size": 128,
    "qkv_dim": 16,
    "top_k": [1, 2],
    "decoder": {
        "embed_dim": [16, 24],
        "layers": [1, 2],
        "heads": [2, 4],
        "experts": [1, 2, 3],
        "expert_sizes": [16, 32],
    },
}


def micro(**changes: Any) -> dict[str, Any]:
    """The encoder-decoder micro space as a dict (``SearchSpace.from_dict`` reads it)."""
    return {**copy.deepcopy(_ENCODER_DECODER), **changes}


def micro_lm(**changes: Any) -> dict[str, Any]:
    """The decoder-only micro space as a dict."""
    return {**copy.deepcopy(_DECODER_ONLY), **changes}
