"""Heterogeneous grouped-expert MoE kernels (Triton) with a PyTorch reference.

Public API::

    moe_ffn(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, backend="auto")
    moe_ffn_reference(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes)
    pack_expert_weights(fc1_list, fc2_list) -> (w1, b1, w2t, b2, hidden_sizes)
    build_routing(topk_ids, num_experts, block_m=64) -> RoutingMeta
    triton_available(device=None) -> bool
    GroupedExpertFFN(d_model, hidden_sizes)   # packed-parameter module

This package imports nothing from the rest of moenas and imports triton only on first use.
"""

from .config import GemmConfig, MoEKernelConfig, WgradConfig, get_config, override_config
from .module import GroupedExpertFFN
from .op import MoEFFNFunction, moe_ffn, moe_ffn_op, triton_available
from .reference import moe_ffn_reference, pack_expert_weights
from .routing import RoutingMeta, build_routing

__all__ = [
    "moe_ffn",
    "moe_ffn_reference",
    "pack_expert_weights",
    "triton_available",
    "build_routing",
    "RoutingMeta",
    "GroupedExpertFFN",
    "MoEFFNFunction",
    "moe_ffn_op",
    "MoEKernelConfig",
    "GemmConfig",
    "WgradConfig",
    "get_config",
    "override_config",
]
