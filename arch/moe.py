"""The FFN of one layer: a dense FFN, or a Mixture-of-Experts layer with experts of different sizes.

MoE forward (T tokens of width D, E experts, top-k):
  router logits (T, E) -> softmax -> top-k ids and weights (T, k) -> each token runs through
  only the experts it was routed to, scaled by its routing weight, summed back into (T, D).
No expert computes tokens it was not given (no "run all experts and mask"), so an exported
ONNX graph and the timed latency scale with routed tokens, not with E.

Backends: ``torch`` runs the per-expert loop below; ``triton`` hands the same computation to
the grouped heterogeneous-expert kernels of :mod:`moenas.moe_kernels`; ``auto`` picks Triton on
CUDA tensors when Triton is importable and the loop otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("torch", "triton", "auto")


class FeedForward(nn.Module):
    """fc1 (D -> h), ReLU, fc2 (h -> D): one dense FFN, or one expert."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class MoELayer(nn.Module):
    """Router + heterogeneous experts + top-k dispatch.

    After each (non-exported) forward, ``aux_loss`` holds the Switch-Transformer load-balancing
    loss E * sum_e f_e * P_e (f_e: share of tokens whose first choice is e, P_e: mean router
    probability of e; 1.0 when perfectly balanced) and ``expert_counts`` the (E,) number of
    token-slots each expert received.
    """

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...] | list[int], top_k: int = 1, backend: str = "torch"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown MoE backend {backend!r} (choose from {', '.join(BACKENDS)})")
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.top_k = min(top_k, len(self.hidden_sizes))
        self.backend = backend
        self.router = nn.Linear(dim, len(self.hidden_sizes), bias=False)
        self.experts = nn.ModuleList(FeedForward(dim, h) for h in self.hidden_sizes)
        self.aux_loss: torch.Tensor | None = None
        self.expert_counts: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (T, D) -> probs (T, E), top-k weights (T, k), top-k expert ids (T, k).

        Top-1 keeps the raw probability as the weight (Switch), so the router gets a gradient;
        top-k > 1 renormalises the k weights to sum to 1 (Mixtral)."""
        probs = F.softmax(self.router(x), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, weights, ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        probs, weights, ids = self.route(x2)
        if self._use_triton(x2):
            from moenas.moe_kernels import moe_ffn, pack_expert_weights

            packed = pack_expert_weights([e.fc1 for e in self.experts], [e.fc2 for e in self.experts])
            out = moe_ffn(x2, ids, weights.to(x2.dtype), *packed, backend="triton")
        else:
            out = self._dispatch(x2, ids, weights.to(x2.dtype))
        if not _tracing():
            self._record_stats(probs, ids)
        return out.reshape(shape)

    def _dispatch(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(ids == e)  # the token-slots routed to expert e
            y = expert(x[tok]) * weights[tok, slot].unsqueeze(-1)
            out = out.index_add(0, tok, y)
        return out

    def _use_triton(self, x: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        from moenas.moe_kernels import triton_available

        if self.backend == "triton":
            return True
        return x.is_cuda and triton_available()

    def _record_stats(self, probs: torch.Tensor, ids: torch.Tensor) -> None:
        n_exp = probs.shape[-1]
        self.expert_counts = torch.bincount(ids.reshape(-1), minlength=n_exp).detach()
        if probs.shape[0] == 0:
            self.aux_loss = probs.sum()
            return
        first = F.one_hot(ids[:, 0], n_exp).to(probs.dtype).mean(0)
        self.aux_loss = n_exp * (first * probs.mean(0)).sum()


def make_ffn(dim: int, hidden_sizes: tuple[int, ...], top_k: int = 1, backend: str = "torch") -> nn.Module:
    """A dense FeedForward for one hidden size, a MoELayer for several."""
    if len(hidden_sizes) == 1:
        return FeedForward(dim, hidden_sizes[0])
    return MoELayer(dim, hidden_sizes, top_k=top_k, backend=backend)
