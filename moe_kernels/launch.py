"""Launchers: allocate buffers, build routing / tile tables, pick configs, launch the kernels.

``triton`` is imported lazily (first launch), so this module imports without it. On CPU tensors
the kernels run only under the Triton interpreter, which Triton enables for a kernel when
``TRITON_INTERPRET=1`` is in the environment at the moment the kernel is *decorated*, i.e. when
``moenas.moe_kernels.kernels`` is first imported (the first Triton launch).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .config import MoEKernelConfig, get_config
from .routing import hidden_offsets_tensor, hidden_tile_table, max_m_tiles, sort_slots

__all__ = ["grouped_forward_triton", "grouped_backward_triton", "triton_interpreted", "check_triton_device"]

_KERNELS = None
# Tests set this to a float (NaN) to fill every buffer the kernels must write, so that an
# element a kernel forgets to write shows up in the results.
DEBUG_FILL: float | None = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        try:
            from . import kernels as k
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "moenas.moe_kernels: the 'triton' backend needs the triton package "
                "(pip install triton), or use backend='torch'"
            ) from exc
        _KERNELS = k
    return _KERNELS


def triton_interpreted() -> bool:
    """True when our kernels were decorated under the Triton interpreter."""
    k = _kernels()
    return type(k.moe_up_kernel).__name__ == "InterpretedFunction"


def check_triton_device(device: torch.device) -> None:
    if device.type == "cuda":
        return
    if device.type == "cpu" and triton_interpreted():
        return
    if device.type == "cpu":
        raise RuntimeError(
            "moenas.moe_kernels: the 'triton' backend on CPU tensors needs the Triton "
            "interpreter; set TRITON_INTERPRET=1 in the environment before the first Triton "
            "launch of this process (tests do it in tests/moe_kernels/conftest.py), move the "
            "tensors to a CUDA device, or use backend='torch'"
        )
    raise RuntimeError(f"moenas.moe_kernels: the 'triton' backend does not support {device}")


def _empty(shape, dtype, device) -> Tensor:
    if DEBUG_FILL is not None:
        return torch.full(shape, DEBUG_FILL, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _device_name(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_name(device)


def _config(x: Tensor, num_slots: int) -> MoEKernelConfig:
    return get_config(_device_name(x.device), x.dtype, x.shape[1], num_slots)


def _dot_flags(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    """(UPCAST, DOT_PRECISION). The interpreter computes bf16 dots wrongly: upcast there.
    fp32 uses TF32 only when torch allows it for matmuls (same rule as torch.matmul)."""
    upcast = dtype == torch.bfloat16 and device.type != "cuda"
    if dtype == torch.float32 and device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return upcast, "tf32"
    return upcast, "ieee"


def build_tile_table_triton(expert_offsets: Tensor, num_slots: int, block_m: int):
    """Same table as ``routing.build_tile_table``, built by one Triton program."""
    n_tiles = max_m_tiles(num_slots, expert_offsets.numel() - 1, block_m)
    tile_expert = torch.empty(n_tiles, dtype=torch.int32, device=expert_offsets.device)
    tile_row = torch.empty(n_tiles, dtype=torch.int32, device=expert_offsets.device)
    if n_tiles:
        _kernels().moe_tile_table_kernel[(1,)](
            expert_offsets,
            tile_expert,
            tile_row,
            expert_offsets.numel() - 1,
            n_tiles,
            BLOCK_M=block_m,
            BLOCK=256,
            num_warps=4,
        )
    return tile_expert, tile_row


def _tile_tables(cache: dict, expert_offsets: Tensor, num_slots: int, block_m: int):
    if block_m not in cache:
        cache[block_m] = build_tile_table_triton(expert_offsets, num_slots, block_m)
    return cache[block_m]


def _launch_up(
    a, w, bias, scale, hmask, out, topk, sorted_slots, expert_offsets, hoffs, max_h, cfg, tiles_cache, relu, relu_grad
):
    k = _kernels()
    n = sorted_slots.numel()
    d = a.shape[1]
    c = cfg.up
    tile_expert, tile_row = _tile_tables(tiles_cache, expert_offsets, n, c.block_m)
    num_m, num_n = tile_expert.numel(), triton_cdiv(max_h, c.block_n)
    if num_m == 0 or num_n == 0:
        return
    upcast, prec = _dot_flags(a.dtype, a.device)
    k.moe_up_kernel[(num_m * num_n,)](
        a,
        a.stride(0),
        w,
        bias if bias is not None else w,
        scale if scale is not None else w,
        hmask if hmask is not None else w,
        out,
        out.stride(0),
        sorted_slots,
        tile_expert,
        tile_row,
        expert_offsets,
        hoffs,
        d,
        num_m,
        num_n,
        TOPK=topk,
        HAS_BIAS=bias is not None,
        RELU=relu,
        ROW_SCALE=scale is not None,
        RELU_GRAD=relu_grad,
        EVEN_K=(d % c.block_k == 0),
        UPCAST=upcast,
        DOT_PRECISION=prec,
        BLOCK_M=c.block_m,
        BLOCK_N=c.block_n,
        BLOCK_K=c.block_k,
        GROUP_M=c.group_m,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
    )


def _launch_down(hbuf, w, bias, scale, raw, out, sorted_slots, expert_offsets, hoffs, d, cfg, tiles_cache):
    k = _kernels()
    n = sorted_slots.numel()
    c = cfg.down
    tile_expert, tile_row = _tile_tables(tiles_cache, expert_offsets, n, c.block_m)
    num_m, num_n = tile_expert.numel(), triton_cdiv(d, c.block_n)
    if num_m == 0 or num_n == 0:
        return
    upcast, prec = _dot_flags(hbuf.dtype, hbuf.device)
    k.moe_down_kernel[(num_m * num_n,)](
        hbuf,
        hbuf.stride(0),
        w,
        bias if bias is not None else w,
        scale if scale is not None else w,
        raw if raw is not None else w,
        out,
        out.stride(0),
        sorted_slots,
        tile_expert,
        tile_row,
        expert_offsets,
        hoffs,
        d,
        num_m,
        num_n,
        HAS_BIAS=bias is not None,
        ROW_SCALE=scale is not None,
        SAVE_RAW=raw is not None,
        UPCAST=upcast,
        DOT_PRECISION=prec,
        BLOCK_M=c.block_m,
        BLOCK_N=c.block_n,
        BLOCK_K=c.block_k,
        GROUP_M=c.group_m,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
    )


def _launch_wgrad(p, q, scale, dw, dbp, dbq, topk, sorted_slots, expert_offsets, hoffs, hidden_sizes, cfg):
    k = _kernels()
    c = cfg.wgrad
    d = q.shape[1]
    htiles = hidden_tile_table(hidden_sizes, c.block_h, p.device)
    grid = (htiles.shape[1], triton_cdiv(d, c.block_d))
    upcast, prec = _dot_flags(p.dtype, p.device)
    k.moe_wgrad_kernel[grid](
        p,
        p.stride(0),
        q,
        q.stride(0),
        scale if scale is not None else dw,
        dw,
        dbp if dbp is not None else dw,
        dbq if dbq is not None else dw,
        sorted_slots,
        expert_offsets,
        hoffs,
        htiles[0],
        htiles[1],
        d,
        TOPK=topk,
        ROW_SCALE=scale is not None,
        BIAS_P=dbp is not None,
        BIAS_Q=dbq is not None,
        UPCAST=upcast,
        DOT_PRECISION=prec,
        BLOCK_H=c.block_h,
        BLOCK_D=c.block_d,
        BLOCK_R=c.block_r,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
    )


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def grouped_forward_triton(
    x: Tensor,
    topk_ids: Tensor,
    topk_weights: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2t: Tensor,
    b2: Tensor,
    hidden_sizes: Sequence[int],
    save_raw: bool,
    config: MoEKernelConfig | None = None,
):
    """Grouped FFN forward. Returns ``(out, hbuf, yraw, sorted_slots, expert_offsets)``
    (see ``reference.grouped_forward_torch`` for the meaning of each)."""
    check_triton_device(x.device)
    # kernels assume unit inner strides and contiguous packed weights (no-ops when so)
    x, w1, b1, w2t, b2 = (a.contiguous() for a in (x, w1, b1, w2t, b2))
    t, d = x.shape
    k = topk_ids.shape[1]
    n = t * k
    num_experts = len(hidden_sizes)
    max_h = max(hidden_sizes)
    cfg = config or _config(x, n)
    sorted_slots, offsets = sort_slots(topk_ids, num_experts)
    hoffs = hidden_offsets_tensor(hidden_sizes, x.device)
    tiles: dict = {}
    tw = topk_weights.contiguous().reshape(-1)

    hbuf = _empty((n, max_h), x.dtype, x.device)
    _launch_up(
        x, w1, b1, None, None, hbuf, k, sorted_slots, offsets, hoffs, max_h, cfg, tiles, relu=True, relu_grad=False
    )
    yraw = _empty((n, d), x.dtype, x.device) if save_raw else x.new_empty(0)
    if k == 1:
        out = _empty((t, d), x.dtype, x.device)
        _launch_down(hbuf, w2t, b2, tw, yraw if save_raw else None, out, sorted_slots, offsets, hoffs, d, cfg, tiles)
    else:
        ys = _empty((n, d), torch.float32, x.device)
        _launch_down(hbuf, w2t, b2, tw, yraw if save_raw else None, ys, sorted_slots, offsets, hoffs, d, cfg, tiles)
        out = ys.view(t, k, d).sum(1).to(x.dtype)
    return out, hbuf, yraw, sorted_slots, offsets


def grouped_backward_triton(
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
    config: MoEKernelConfig | None = None,
):
    """Grouped FFN backward. Returns ``(dx, dtw, dw1, db1, dw2t, db2)``; gradients not asked
    for are empty tensors."""
    check_triton_device(x.device)
    x, w1, w2t, hbuf = (a.contiguous() for a in (x, w1, w2t, hbuf))
    t, d = x.shape
    k = topk_weights.shape[1]
    n = t * k
    max_h = max(hidden_sizes)
    num_experts = len(hidden_sizes)
    cfg = config or _config(x, n)
    hoffs = hidden_offsets_tensor(hidden_sizes, x.device)
    tiles: dict = {}
    g = grad_out.contiguous()
    tw = topk_weights.contiguous().reshape(-1)
    # distinct empty tensors for gradients not asked for (op outputs must not alias)
    dx, dtw, dw1, db1, dw2t, db2 = (x.new_empty(0) for _ in range(6))

    if need_dx or need_dweights:
        # dZ = relu'(H) * s * (G[token] @ W2t_e.T)
        dz = _empty((n, max_h), x.dtype, x.device)
        _launch_up(
            g,
            w2t,
            None,
            tw,
            hbuf,
            dz,
            k,
            sorted_slots,
            expert_offsets,
            hoffs,
            max_h,
            cfg,
            tiles,
            relu=False,
            relu_grad=True,
        )
        if need_dweights:
            dw2t = _empty(w2t.shape, w2t.dtype, x.device)
            db2 = _empty((num_experts, d), w2t.dtype, x.device)
            _launch_wgrad(hbuf, g, tw, dw2t, None, db2, k, sorted_slots, expert_offsets, hoffs, hidden_sizes, cfg)
            dw1 = _empty(w1.shape, w1.dtype, x.device)
            db1 = _empty((w1.shape[0],), w1.dtype, x.device)
            _launch_wgrad(dz, x, None, dw1, db1, None, k, sorted_slots, expert_offsets, hoffs, hidden_sizes, cfg)
        if need_dx:
            if k == 1:
                dx = _empty((t, d), x.dtype, x.device)
                _launch_down(dz, w1, None, None, None, dx, sorted_slots, expert_offsets, hoffs, d, cfg, tiles)
            else:
                dxs = _empty((n, d), torch.float32, x.device)
                _launch_down(dz, w1, None, None, None, dxs, sorted_slots, expert_offsets, hoffs, d, cfg, tiles)
                dx = dxs.view(t, k, d).sum(1).to(x.dtype)
    if need_drouting:
        dtw = torch.einsum("td,tkd->tk", g.float(), yraw.view(t, k, d).float())
        dtw = dtw.to(topk_weights.dtype)
    return dx, dtw, dw1, db1, dw2t, db2
