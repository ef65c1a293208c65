"""Training loss: label-smoothed cross-entropy fused with the output projection, and the
module that runs every arch of a step in one forward.

Why by hand: at tiny scale the vocabulary (V = 8000) is 30-60x the model width, so the
(N, V) logits of a 2048-token batch (64 MB in fp32) and the five memory-bound passes over them
that ``F.cross_entropy`` makes (log-softmax, its backward, the label-smoothing sum, the zero
fill and the gradient add) took 35% of a training step on the 2-core CPU, more than the
matrix products. Computing the loss *and* its gradients chunk by chunk while the chunk's logits
are still in cache (Liger-Kernel's fused linear cross-entropy, here in plain torch for the
CPU) removes those passes; no library ships it for CPUs. The matrix products stay the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moenas.arch import Arch
from moenas.arch.arch import AnyArch
from moenas.arch.model import PAD

from .supernet import SuperNet

CHUNK_ROWS = 512  # (512, 8000) fp32 logits = 16 MB; fastest of 64-1024 measured on the 2-core CPU


class _FusedLinearCE(torch.autograd.Function):
    """sum over rows of label-smoothed CE(h @ w.T, target); gradients made in the forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, smoothing: float, chunk: int):
        need = h.requires_grad or w.requires_grad
        n, v = h.shape[0], w.shape[0]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if need else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need else None
        wf = w.float()
        for s in range(0, n, chunk):
            hc, tc = h[s : s + chunk].float(), target[s : s + chunk]
            lp = torch.log_softmax(hc @ wf.t(), dim=-1)  # (c, V) log-probabilities
            nll = -lp.gather(1, tc.unsqueeze(1)).squeeze(1)
            loss = (1 - smoothing) * nll - smoothing * lp.mean(dim=-1) if smoothing else nll
            total += loss.sum()
            if need:  # d loss / d logits = softmax - (1 - eps) onehot - eps / V, built in place
                z = lp.exp_()
                z.scatter_add_(1, tc.unsqueeze(1), torch.full_like(z[:, :1], smoothing - 1))
                if smoothing:
                    z.sub_(smoothing / v)
                grad_h[s : s + chunk] = (z @ wf).to(h.dtype)
                grad_w.addmm_(z.t(), hc)
        ctx.save_for_backward(grad_h, grad_w.to(w.dtype) if need else None)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def linear_cross_entropy(
    h: torch.Tensor,
    w: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    chunk: int = CHUNK_ROWS,
) -> torch.Tensor:
    """``F.cross_entropy(h @ w.T, target, ignore_index=PAD, label_smoothing=...)`` without the
    (N, V) logits: h (..., D) states, w (V, D) output weights, target (...) ids.
    ``reduction``: ``mean`` over non-PAD targets (nats/token) or ``sum``."""
    h, target = h.reshape(-1, h.shape[-1]), target.reshape(-1)
    keep = target.ne(PAD)
    h, target = h[keep], target[keep]  # PAD rows cost nothing: they are never projected
    total = _FusedLinearCE.apply(h, w, target, float(label_smoothing), int(chunk))
    if reduction == "sum":
        return total
    return total / max(int(target.numel()), 1)


@torch.no_grad()
def token_nll(
    h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk: int = CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy (nats) of the non-PAD targets, for evaluation: h (..., D) states,
    w (V, D) output weights, target (...) ids -> (nll (N,) fp32 over the N non-PAD targets in
    row-major order, their sum). The sum adds chunk by chunk exactly as
    :func:`linear_cross_entropy` does, so ``sum / N`` equals its mean bit for bit."""
    h, target = h.reshape(-1, h.shape[-1]), target.reshape(-1)
    keep = target.ne(PAD)
    h, target = h[keep], target[keep]
    wf = w.float()
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    parts = []
    for s in range(0, h.shape[0], chunk):
        lp = torch.log_softmax(h[s : s + chunk].float() @ wf.t(), dim=-1)
        nll = -lp.gather(1, target[s : s + chunk].unsqueeze(1)).squeeze(1)
        total += nll.sum()
        parts.append(nll)
    return (torch.cat(parts) if parts else torch.zeros(0, device=h.device)), total


class LossModule(nn.Module):
    """Wraps the supernet (or one standalone model) so that a whole step - every arch of the
    sandwich - is one forward; DDP wraps this.

    ``forward(*inputs, target, archs)``: the model's inputs ((src, tgt_in) for translation,
    (ids,) for a language model), the target ids at every output position (B, T), the step's
    archs. Returns (sum over archs of CE + aux_coef x load-balancing loss, the per-arch CE
    values (A,)): the same next-token cross-entropy for both families."""

    def __init__(self, model: nn.Module, label_smoothing: float, aux_coef: float):
        super().__init__()
        self.model, self.label_smoothing, self.aux_coef = model, label_smoothing, aux_coef

    def forward(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        *inputs, target, archs = args
        total = torch.zeros((), device=target.device)
        parts = []
        for arch in archs:
            states, weight = run_inputs(self.model, tuple(inputs), arch, hidden=True)
            ce = linear_cross_entropy(states, weight, target, self.label_smoothing)
            total = total + ce + self.aux_coef * model_aux_loss(self.model)
            parts.append(ce.detach())
        return total, torch.stack(parts)


def run_inputs(model: nn.Module, inputs: tuple[torch.Tensor, ...], arch: AnyArch | None, hidden: bool = False):
    """Logits (B, T, V) of ``arch`` (a SuperNet of either family) or of the standalone model
    itself on its ``inputs``; with ``hidden`` the final states (B, T, D) and the output weight
    (V, D) instead."""
    if isinstance(model, SuperNet):
        return model(*inputs, arch, hidden=hidden)
    return model(*inputs, hidden=hidden)


def run_model(model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor, arch: Arch | None, hidden: bool = False):
    """:func:`run_inputs` of a translation model on (src (B, S), tgt_in (B, T))."""
    return run_inputs(model, (src, tgt_in), arch, hidden)


def model_aux_loss(model: nn.Module) -> torch.Tensor:
    if isinstance(model, SuperNet):
        return model.aux_loss
    return model.aux_loss()


def reference_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The unfused definition :func:`linear_cross_entropy` must equal (tests)."""
    return F.cross_entropy(
        logits.flatten(0, -2).float(), target.flatten(), ignore_index=PAD, label_smoothing=label_smoothing
    )
