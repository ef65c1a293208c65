"""PyTorch implementations: the reference loop over experts, weight packing, and the explicit
grouped forward/backward used by the ``torch`` implementation of the custom op.

* :func:`moe_ffn_reference` is the plain, autograd-differentiable loop (the ``"torch"`` backend
  of :func:`moenas.moe_kernels.moe_ffn`, the CPU path, and the ground truth of tests and
  benchmarks). It indexes only the tokens routed to each expert: it never runs every expert on
  every token.
* :func:`grouped_forward_torch` / :func:`grouped_backward_torch` compute exactly what the Triton
  launchers compute (same buffers, same layout, hand-written backward formulas) with torch ops, so
  the op can be checked with ``torch.library.opcheck`` on CPU and the backward maths is tested
  independently of the kernels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .routing import sort_slots

__all__ = ["moe_ffn_reference", "pack_expert_weights", "grouped_forward_torch", "grouped_backward_torch"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_ids(flat_ids: Tensor, num_experts: int) -> list[int]:
    if flat_ids.numel() == 0:
        return [0] * num_experts
    lo, hi = int(flat_ids.min()), int(flat_ids.max())
    if lo < 0 or hi >= num_experts:
        raise ValueError(f"topk_ids must lie in [0, {num_experts}); got range [{lo}, {hi}]")
    return torch.bincount(flat_ids, minlength=num_experts).tolist()


def moe_ffn_reference(
    x: Tensor,
    topk_ids: Tensor,
    topk_weights: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2t: Tensor,
    b2: Tensor | None,
    hidden_sizes: Sequence[int],
) -> Tensor:
    """Loop over experts; for each, gather its tokens, run its FFN, scatter-add weighted rows.

    ``out[t] = sum_j topk_weights[t, j] * (relu(x[t] @ W1_e.T + b1_e) @ W2t_e + b2_e)``,
    ``e = topk_ids[t, j]``. Sums over the k choices are accumulated in fp32 (fp64 for fp64
    inputs) and cast back to ``x.dtype``. Differentiable by ordinary autograd.
    """
    t, d = x.shape
    k = topk_ids.shape[1]
    num_experts = len(hidden_sizes)
    flat_ids = topk_ids.reshape(-1)
    counts = _check_ids(flat_ids, num_experts)
    order = torch.sort(flat_ids, stable=True)[1]
    flat_w = topk_weights.reshape(-1)
    out = torch.zeros(t, d, dtype=_acc_dtype(x.dtype), device=x.device)
    row = 0
    hoff = 0
    for e, h in enumerate(hidden_sizes):
        c = counts[e]
        if c > 0:
            slots = order[row : row + c]
            tok = slots // k
            bias1 = None if b1 is None else b1[hoff : hoff + h]
            hid = F.relu(F.linear(x[tok], w1[hoff : hoff + h], bias1))
            y = hid @ w2t[hoff : hoff + h]
            if b2 is not None:
                y = y + b2[e]
            y = y.to(out.dtype) * flat_w[slots].to(out.dtype)[:, None]
            out = out.index_add(0, tok, y)
        row += c
        hoff += h
    return out.to(x.dtype)


def pack_expert_weights(fc1_list, fc2_list):
    """Pack per-expert ``nn.Linear`` layers into the grouped layout (differentiably).

    ``fc1_list[e]``: Linear(D, h_e); ``fc2_list[e]``: Linear(h_e, D). Returns
    ``(w1 (H,D), b1 (H,), w2t (H,D), b2 (E,D), hidden_sizes tuple)`` built with ``torch.cat`` /
    ``torch.stack`` so gradients flow back into the per-expert parameters. A missing bias is
    replaced by zeros (no gradient).
    """
    fc1_list, fc2_list = list(fc1_list), list(fc2_list)
    if len(fc1_list) != len(fc2_list) or not fc1_list:
        raise ValueError("fc1_list and fc2_list must be non-empty and of equal length")
    hidden = []
    for e, (a, b) in enumerate(zip(fc1_list, fc2_list)):
        h, d = a.weight.shape
        if b.weight.shape != (d, h):
            raise ValueError(
                f"expert {e}: fc2 weight must be ({d}, {h}) to match fc1 {tuple(a.weight.shape)}, "
                f"got {tuple(b.weight.shape)}"
            )
        hidden.append(int(h))
    w1 = torch.cat([a.weight for a in fc1_list], 0)
    b1 = torch.cat([a.bias if a.bias is not None else a.weight.new_zeros(a.weight.shape[0]) for a in fc1_list], 0)
    w2t = torch.cat([b.weight.t() for b in fc2_list], 0)
    b2 = torch.stack([b.bias if b.bias is not None else b.weight.new_zeros(b.weight.shape[0]) for b in fc2_list], 0)
    return w1, b1, w2t, b2, tuple(hidden)


# --------------------------------------------------------------------------------------------
# Explicit grouped forward / backward (same buffers as the Triton launchers)
# --------------------------------------------------------------------------------------------


def grouped_forward_torch(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, save_raw):
    """Returns ``(out, hbuf, yraw, sorted_slots, expert_offsets)`` like the Triton launcher.

    ``hbuf`` (T*k, max_h): relu(fc1) per sorted row, columns >= h_e are zero here (undefined in
    the Triton version). ``yraw`` (T*k, D), slot order: fc2 output before the routing weight
    (empty when ``save_raw`` is False).
    """
    t, d = x.shape
    k = topk_ids.shape[1]
    n = t * k
    num_experts = len(hidden_sizes)
    max_h = max(hidden_sizes)
    flat_ids = topk_ids.reshape(-1)
    _check_ids(flat_ids, num_experts)
    sorted_slots, offsets = sort_slots(topk_ids, num_experts)
    offs = offsets.tolist()
    acc = _acc_dtype(x.dtype)
    hbuf = x.new_zeros(n, max_h)
    ys = torch.zeros(n, d, dtype=acc, device=x.device)  # fc2 output (+bias) per slot
    ss = sorted_slots.long()
    hoff = 0
    for e, h in enumerate(hidden_sizes):
        r0, r1 = offs[e], offs[e + 1]
        if r1 > r0:
            slots = ss[r0:r1]
            xa = x[slots // k].to(acc)
            hid = F.relu(xa @ w1[hoff : hoff + h].to(acc).t() + b1[hoff : hoff + h].to(acc))
            hid = hid.to(x.dtype)
            hbuf[r0:r1, :h] = hid
            ys[slots] = hid.to(acc) @ w2t[hoff : hoff + h].to(acc) + b2[e].to(acc)
        hoff += h
    yraw = ys.to(x.dtype) if save_raw else x.new_empty(0)
    wy = ys * topk_weights.reshape(-1, 1).to(acc)
    out = wy.view(t, k, d).sum(1).to(x.dtype)
    return out, hbuf, yraw, sorted_slots, offsets


def grouped_backward_torch(
    grad_out,
    x,
    topk_weights,
    w1,
    w2t,
    hbuf,
    yraw,
    sorted_slots,
    expert_offsets,
    hidden_sizes,
    need_dx,
    need_dweights,
    need_drouting,
):
    """Hand-written backward of the grouped FFN. Returns ``(dx, dtw, dw1, db1, dw2t, db2)``;
    gradients that are not requested come back as empty tensors.

    With ``G = grad_out[token]`` per sorted row and ``s`` the routing weight of the row:
    ``dY = s*G``; ``dH = dY @ W2t_e.T``; ``dZ = dH * (H > 0)``; ``dW2t_e = H_e.T @ dY_e``;
    ``db2_e = sum dY_e``; ``dW1_e = dZ_e.T @ X_e``; ``db1_e = sum dZ_e``; ``dX_slot = dZ @ W1_e``
    summed over the k slots of a token; ``dtw[t, j] = <G_t, yraw[t, j]>``.
    """
    t, d = x.shape
    n = sorted_slots.numel()
    k = topk_weights.shape[1]
    acc = _acc_dtype(x.dtype)
    offs = expert_offsets.tolist()
    ss = sorted_slots.long()
    tw = topk_weights.reshape(-1).to(acc)
    g = grad_out.to(acc)

    def empty():
        return x.new_empty(0)  # a fresh tensor each time: op outputs must not alias

    dxs = torch.zeros(n, d, dtype=acc, device=x.device) if need_dx else None
    if need_dweights:
        dw1 = torch.zeros_like(w1, dtype=acc)
        db1 = torch.zeros(w1.shape[0], dtype=acc, device=x.device)
        dw2t = torch.zeros_like(w2t, dtype=acc)
        db2 = torch.zeros(len(hidden_sizes), d, dtype=acc, device=x.device)
    hoff = 0
    for e, h in enumerate(hidden_sizes):
        r0, r1 = offs[e], offs[e + 1]
        if r1 > r0 and (need_dx or need_dweights):
            slots = ss[r0:r1]
            tok = slots // k
            dy = g[tok] * tw[slots][:, None]
            hid = hbuf[r0:r1, :h].to(acc)
            dz = (dy @ w2t[hoff : hoff + h].to(acc).t()) * (hid > 0)
            dz = dz.to(x.dtype).to(acc)  # the Triton path stores dZ in x.dtype
            if need_dweights:
                dw2t[hoff : hoff + h] = hid.t() @ dy
                db2[e] = dy.sum(0)
                dw1[hoff : hoff + h] = dz.t() @ x[tok].to(acc)
                db1[hoff : hoff + h] = dz.sum(0)
            if need_dx:
                dxs[slots] = dz @ w1[hoff : hoff + h].to(acc)
        hoff += h
    dx = dxs.view(t, k, d).sum(1).to(x.dtype) if need_dx else empty()
    if need_drouting:
        dtw = (g[:, None, :] * yraw.view(t, k, d).to(acc)).sum(-1).to(topk_weights.dtype)
    else:
        dtw = empty()
    if need_dweights:
        return dx, dtw, dw1.to(w1.dtype), db1.to(w1.dtype), dw2t.to(w2t.dtype), db2.to(w2t.dtype)
    return dx, dtw, empty(), empty(), empty(), empty()
