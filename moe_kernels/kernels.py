"""Triton kernels for heterogeneous grouped-expert FFNs (imported lazily: needs triton).

Layout shared by all kernels (see ``routing.py``):

* token-slots are grouped by expert; sorted row ``r`` is slot ``sorted_slots[r]``, token
  ``slot // TOPK``; expert ``e`` owns rows ``expert_offsets[e]:expert_offsets[e+1]``;
* packed weights ``(H_total, D)`` with expert ``e`` owning rows
  ``hidden_offsets[e]:hidden_offsets[e+1]`` (``h_e`` rows, no padding): ``W1`` (fc1 weight)
  and ``W2t`` (fc2 weight transposed) share this layout;
* hidden buffers ``(T*k, max_h)`` in sorted-row order; only the first ``h_e`` columns of a row of
  expert ``e`` are written or read.

Three kernels, each used twice (forward and backward):

``moe_up_kernel``    C[r, n] = sum_d A[token(r), d] * W[hoff_e + n, d]        (D -> h_e)
    forward fc1: A = x, W = W1, epilogue + b1, ReLU  -> H
    backward dH: A = grad_out, W = W2t, epilogue * routing weight, * (H > 0) -> dZ
``moe_down_kernel``  C[slot(r), n] = sum_k B[r, k] * W[hoff_e + k, n]        (h_e -> D)
    forward fc2: B = H, W = W2t, epilogue + b2_e (optionally stored raw), * routing weight
    backward dX: B = dZ, W = W1
``moe_wgrad_kernel`` dW[hoff_e + n, d] = sum_{r in e} P[r, n] * s_r * Q[token(r), d]
    dW1: P = dZ, Q = x (column sums of P give db1)
    dW2t: P = H, Q = grad_out, s = routing weight (column sums of s*Q give db2)

All products accumulate in fp32. Grids have a fixed upper-bound size; programs without work
(unused tile, hidden tile beyond a small expert's ``h_e``) return at once.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _swizzle(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """Map a 1D program id onto (m tile, n tile), GROUP_M m-tiles sharing n tiles (L2 reuse)."""
    width = GROUP_M * num_n
    group = pid // width
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    return pid_m, pid_n


# Over 80 lines for a reason: one Triton program (gathered-row loads, the tile dot, bias/ReLU/scale
# epilogue, store) compiles as one body; most lines are its argument list.
@triton.jit
def moe_up_kernel(
    a_ptr,  # (T, D) rows gathered by token: x (forward) or grad_out (backward)
    stride_a,
    w_ptr,  # (H_total, D) packed, contiguous: W1 (forward) or W2t (backward)
    bias_ptr,  # (H_total,) b1                      [HAS_BIAS]
    scale_ptr,  # (T*k,) routing weight per slot      [ROW_SCALE]
    hmask_ptr,  # (T*k, max_h) H from forward, same strides as out   [RELU_GRAD]
    out_ptr,  # (T*k, max_h) output rows in sorted order
    stride_out,
    sorted_slots_ptr,
    tile_expert_ptr,
    tile_row_ptr,
    expert_offsets_ptr,
    hidden_offsets_ptr,
    D,
    num_m_tiles,
    num_n_tiles,
    TOPK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    RELU_GRAD: tl.constexpr,
    EVEN_K: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _swizzle(tl.program_id(0), num_m_tiles, num_n_tiles, GROUP_M)
    e = tl.load(tile_expert_ptr + pid_m)
    if e < 0:
        return
    h0 = tl.load(hidden_offsets_ptr + e)
    h_e = tl.load(hidden_offsets_ptr + e + 1) - h0
    n0 = pid_n * BLOCK_N
    if n0 >= h_e:
        return
    row0 = tl.load(tile_row_ptr + pid_m)
    row_end = tl.load(expert_offsets_ptr + e + 1)

    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    slots = tl.load(sorted_slots_ptr + rows, mask=row_ok, other=0)
    tokens = (slots // TOPK).to(tl.int64)
    cols = n0 + tl.arange(0, BLOCK_N)
    col_ok = cols < h_e
    offs_k = tl.arange(0, BLOCK_K)

    a_ptrs = a_ptr + tokens[:, None] * stride_a + offs_k[None, :]  # (BM, BK)
    w_ptrs = w_ptr + (h0 + cols).to(tl.int64)[None, :] * D + offs_k[:, None]  # (BK, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            w = tl.load(w_ptrs, mask=col_ok[None, :], other=0.0)
        else:
            k_ok = (k0 + offs_k) < D
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    if HAS_BIAS:
        bias = tl.load(bias_ptr + h0 + cols, mask=col_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if ROW_SCALE:
        s = tl.load(scale_ptr + slots, mask=row_ok, other=0.0)
        acc = acc * s.to(tl.float32)[:, None]
    out_offs = rows.to(tl.int64)[:, None] * stride_out + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    if RELU_GRAD:
        hval = tl.load(hmask_ptr + out_offs, mask=ok, other=0.0)
        acc = tl.where(hval > 0, acc, 0.0)
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def moe_down_kernel(
    h_ptr,  # (T*k, max_h) sorted rows: H (forward) or dZ (backward)
    stride_h,
    w_ptr,  # (H_total, D) packed, contiguous: W2t (forward) or W1 (backward)
    bias_ptr,  # (E, D) b2                            [HAS_BIAS]
    scale_ptr,  # (T*k,) routing weight per slot      [ROW_SCALE]
    raw_ptr,  # (T*k, D) fc2 output before routing weight, slot order   [SAVE_RAW]
    out_ptr,  # rows indexed by slot: (T*k, D), or (T, D) when TOPK == 1
    stride_out,
    sorted_slots_ptr,
    tile_expert_ptr,
    tile_row_ptr,
    expert_offsets_ptr,
    hidden_offsets_ptr,
    D,
    num_m_tiles,
    num_n_tiles,
    HAS_BIAS: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    SAVE_RAW: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _swizzle(tl.program_id(0), num_m_tiles, num_n_tiles, GROUP_M)
    e = tl.load(tile_expert_ptr + pid_m)
    if e < 0:
        return
    h0 = tl.load(hidden_offsets_ptr + e)
    h_e = tl.load(hidden_offsets_ptr + e + 1) - h0
    row0 = tl.load(tile_row_ptr + pid_m)
    row_end = tl.load(expert_offsets_ptr + e + 1)

    rows = row0 + tl.arange(0, BLOCK_M)
    row_ok = rows < row_end
    slots = tl.load(sorted_slots_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < D
    offs_k = tl.arange(0, BLOCK_K)

    a_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_h + offs_k[None, :]  # (BM, BK)
    w_ptrs = w_ptr + (h0 + offs_k).to(tl.int64)[:, None] * D + cols[None, :]  # (BK, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, h_e, BLOCK_K):
        k_ok = (k0 + offs_k) < h_e
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * D

    ok = row_ok[:, None] & col_ok[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + e.to(tl.int64) * D + cols, mask=col_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    if SAVE_RAW:
        raw_offs = slots[:, None] * D + cols[None, :]
        tl.store(raw_ptr + raw_offs, acc.to(raw_ptr.dtype.element_ty), mask=ok)
    if ROW_SCALE:
        s = tl.load(scale_ptr + slots, mask=row_ok, other=0.0)
        acc = acc * s.to(tl.float32)[:, None]
    out_offs = slots[:, None] * stride_out + cols[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


# Over 80 lines for a reason: one Triton program (per-expert tile loop, accumulators, bias sums) compiles as one body; most lines are its argument list.
@triton.jit
def moe_wgrad_kernel(
    p_ptr,  # (T*k, max_h) sorted rows: dZ (for dW1) or H (for dW2t)
    stride_p,
    q_ptr,  # (T, D) rows gathered by token: x (dW1) or grad_out (dW2t)
    stride_q,
    scale_ptr,  # (T*k,) routing weight per slot, multiplies Q rows   [ROW_SCALE]
    dw_ptr,  # (H_total, D) output, contiguous
    dbp_ptr,  # (H_total,) column sums of P (db1)      [BIAS_P]
    dbq_ptr,  # (E, D) column sums of s*Q (db2)        [BIAS_Q]
    sorted_slots_ptr,
    expert_offsets_ptr,
    hidden_offsets_ptr,
    htile_expert_ptr,
    htile_n0_ptr,
    D,
    TOPK: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    BIAS_P: tl.constexpr,
    BIAS_Q: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    pid_h = tl.program_id(0)
    pid_d = tl.program_id(1)
    e = tl.load(htile_expert_ptr + pid_h)
    n0 = tl.load(htile_n0_ptr + pid_h)
    h0 = tl.load(hidden_offsets_ptr + e)
    h_e = tl.load(hidden_offsets_ptr + e + 1) - h0
    r_start = tl.load(expert_offsets_ptr + e)
    r_end = tl.load(expert_offsets_ptr + e + 1)

    cols_h = n0 + tl.arange(0, BLOCK_H)
    h_ok = cols_h < h_e
    cols_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = cols_d < D
    offs_r = tl.arange(0, BLOCK_R)

    acc = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    acc_p = tl.zeros((BLOCK_H,), dtype=tl.float32)
    acc_q = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for r0 in range(r_start, r_end, BLOCK_R):
        rows = r0 + offs_r
        r_ok = rows < r_end
        slots = tl.load(sorted_slots_ptr + rows, mask=r_ok, other=0)
        tokens = (slots // TOPK).to(tl.int64)
        p = tl.load(
            p_ptr + rows.to(tl.int64)[:, None] * stride_p + cols_h[None, :],
            mask=r_ok[:, None] & h_ok[None, :],
            other=0.0,
        )  # (BR, BH)
        q = tl.load(
            q_ptr + tokens[:, None] * stride_q + cols_d[None, :], mask=r_ok[:, None] & d_ok[None, :], other=0.0
        )  # (BR, BD)
        if ROW_SCALE:
            s = tl.load(scale_ptr + slots, mask=r_ok, other=0.0).to(tl.float32)
            q32 = q.to(tl.float32) * s[:, None]
            if BIAS_Q:
                acc_q += tl.sum(q32, axis=0)
            q = q32.to(q.dtype)
        elif BIAS_Q:
            acc_q += tl.sum(q.to(tl.float32), axis=0)
        if BIAS_P:
            acc_p += tl.sum(p.to(tl.float32), axis=0)
        if UPCAST:
            p = p.to(tl.float32)
            q = q.to(tl.float32)
        acc = tl.dot(tl.trans(p), q, acc, input_precision=DOT_PRECISION)

    out_offs = (h0 + cols_h).to(tl.int64)[:, None] * D + cols_d[None, :]
    tl.store(dw_ptr + out_offs, acc.to(dw_ptr.dtype.element_ty), mask=h_ok[:, None] & d_ok[None, :])
    if BIAS_P:
        if pid_d == 0:
            tl.store(dbp_ptr + h0 + cols_h, acc_p.to(dbp_ptr.dtype.element_ty), mask=h_ok)
    if BIAS_Q:
        if n0 == 0:
            tl.store(dbq_ptr + e.to(tl.int64) * D + cols_d, acc_q.to(dbq_ptr.dtype.element_ty), mask=d_ok)


@triton.jit
def moe_tile_table_kernel(
    expert_offsets_ptr,  # (E+1,) int32 row offsets of the experts in sorted order
    tile_expert_ptr,  # (num_tiles,) int32 out: expert of each M tile, -1 = unused
    tile_row_ptr,  # (num_tiles,) int32 out: first sorted row of each M tile
    num_experts,
    num_tiles,
    BLOCK_M: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One program builds the whole M-tile table (replaces ~15 small torch launches)."""
    offs = tl.arange(0, BLOCK)
    pos = 0
    for e in range(0, num_experts):
        r0 = tl.load(expert_offsets_ptr + e)
        r1 = tl.load(expert_offsets_ptr + e + 1)
        nt = (r1 - r0 + BLOCK_M - 1) // BLOCK_M
        for j0 in range(0, nt, BLOCK):
            j = j0 + offs
            m = j < nt
            tl.store(tile_expert_ptr + pos + j, tl.zeros([BLOCK], dtype=tl.int32) + e, mask=m)
            tl.store(tile_row_ptr + pos + j, r0 + j * BLOCK_M, mask=m)
        pos += nt
    for j0 in range(pos, num_tiles, BLOCK):
        j = j0 + offs
        m = j < num_tiles
        tl.store(tile_expert_ptr + j, tl.full([BLOCK], -1, dtype=tl.int32), mask=m)
        tl.store(tile_row_ptr + j, tl.zeros([BLOCK], dtype=tl.int32), mask=m)
