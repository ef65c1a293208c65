"""``GroupedExpertFFN``: the experts of one heterogeneous MoE layer as packed parameters."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .op import moe_ffn
from .reference import pack_expert_weights

__all__ = ["GroupedExpertFFN"]


class GroupedExpertFFN(nn.Module):
    """E experts ``Linear(D, h_e) -> ReLU -> Linear(h_e, D)`` with per-expert ``h_e``, stored
    packed (``w1``/``w2t`` (sum h_e, D), ``b1`` (sum h_e,), ``b2`` (E, D)) so that a forward is one
    grouped call with no per-step packing. Routing (the gate) is not part of this module.

    Initialisation matches ``nn.Linear`` per expert (uniform in +-1/sqrt(fan_in))."""

    def __init__(self, d_model: int, hidden_sizes: Sequence[int], bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.d_model = int(d_model)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive ints, got {hidden_sizes}")
        h_total, e = sum(self.hidden_sizes), len(self.hidden_sizes)
        kw = {"device": device, "dtype": dtype}
        self.w1 = nn.Parameter(torch.empty(h_total, d_model, **kw))
        self.w2t = nn.Parameter(torch.empty(h_total, d_model, **kw))
        self.b1 = nn.Parameter(torch.empty(h_total, **kw)) if bias else None
        self.b2 = nn.Parameter(torch.empty(e, d_model, **kw)) if bias else None
        self.reset_parameters()

    @property
    def num_experts(self) -> int:
        return len(self.hidden_sizes)

    def expert_slices(self):
        off = 0
        for h in self.hidden_sizes:
            yield slice(off, off + h)
            off += h

    @torch.no_grad()
    def reset_parameters(self) -> None:
        b_in = 1.0 / math.sqrt(self.d_model)
        self.w1.uniform_(-b_in, b_in)
        if self.b1 is not None:
            self.b1.uniform_(-b_in, b_in)
        for e, sl in enumerate(self.expert_slices()):
            b_h = 1.0 / math.sqrt(self.hidden_sizes[e])
            self.w2t[sl].uniform_(-b_h, b_h)
            if self.b2 is not None:
                self.b2[e].uniform_(-b_h, b_h)

    @classmethod
    def from_linears(cls, fc1_list, fc2_list) -> "GroupedExpertFFN":
        """Copy per-expert ``nn.Linear`` pairs into a new packed module."""
        w1, b1, w2t, b2, hs = pack_expert_weights(fc1_list, fc2_list)
        has_bias = fc1_list[0].bias is not None
        mod = cls(w1.shape[1], hs, bias=has_bias, device=w1.device, dtype=w1.dtype)
        with torch.no_grad():
            mod.w1.copy_(w1)
            mod.w2t.copy_(w2t)
            if has_bias:
                mod.b1.copy_(b1)
                mod.b2.copy_(b2)
        return mod

    def forward(self, x: Tensor, topk_ids: Tensor, topk_weights: Tensor, backend: str = "auto") -> Tensor:
        return moe_ffn(
            x, topk_ids, topk_weights, self.w1, self.b1, self.w2t, self.b2, self.hidden_sizes, backend=backend
        )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden_sizes={self.hidden_sizes}"
