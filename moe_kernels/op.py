"""The custom op (``torch.ops.moenas.moe_ffn_fwd`` / ``moe_ffn_bwd``), its autograd, and the
public :func:`moe_ffn` entry point.

``moe_ffn_fwd`` returns the output together with what the backward needs (hidden activations,
fc2 output before the routing weight, routing permutation and offsets); ``register_autograd``
connects it to ``moe_ffn_bwd``; ``register_fake`` gives both ops shapes for torch.compile /
torch.export, which therefore see a single opaque op per direction. The ``impl`` argument selects
Triton kernels (``"triton"``: CUDA, or CPU under the interpreter) or the equivalent explicit
PyTorch computation (``"torch"``: any device; used by ``torch.library.opcheck`` in CI).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Sequence

import torch
from torch import Tensor

from .reference import grouped_backward_torch, grouped_forward_torch, moe_ffn_reference

__all__ = ["moe_ffn", "triton_available", "MoEFFNFunction", "moe_ffn_op"]

_IMPLS = ("triton", "torch")
_BACKENDS = ("auto", "torch", "triton")


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")


@torch.library.custom_op("moenas::moe_ffn_fwd", mutates_args=())
def moe_ffn_fwd(
    x: Tensor,
    topk_ids: Tensor,
    topk_weights: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2t: Tensor,
    b2: Tensor,
    hidden_sizes: Sequence[int],
    save_raw: bool,
    impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (out (T,D), hbuf (T*k,max_h), yraw (T*k,D) or (0,), sorted_slots (T*k,) int32,
    expert_offsets (E+1,) int32)."""
    _check_impl(impl)
    args = (x, topk_ids, topk_weights, w1, b1, w2t, b2, list(hidden_sizes), save_raw)
    if impl == "triton":
        from .launch import grouped_forward_triton

        return grouped_forward_triton(*args)
    return grouped_forward_torch(*args)


@moe_ffn_fwd.register_fake
def _moe_ffn_fwd_fake(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, save_raw, impl):
    t, d = x.shape
    n = t * topk_ids.shape[1]
    return (
        x.new_empty(t, d),
        x.new_empty(n, max(hidden_sizes)),
        x.new_empty(n, d) if save_raw else x.new_empty(0),
        x.new_empty(n, dtype=torch.int32),
        x.new_empty(len(hidden_sizes) + 1, dtype=torch.int32),
    )


@torch.library.custom_op("moenas::moe_ffn_bwd", mutates_args=())
def moe_ffn_bwd(
    grad_out: Tensor,
    x: Tensor,
    topk_weights: Tensor,
    w1: Tensor,
    w2t: Tensor,
    hbuf: Tensor,
    yraw: Tensor,
    sorted_slots: Tensor,
    expert_offsets: Tensor,
    hidden_sizes: Sequence[int],
    need_dx: bool,
    need_dweights: bool,
    need_drouting: bool,
    impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (dx, d topk_weights, dw1, db1, dw2t, db2); the ones not requested are empty."""
    _check_impl(impl)
    args = (
        grad_out,
        x,
        topk_weights,
        w1,
        w2t,
        hbuf,
        yraw,
        sorted_slots,
        expert_offsets,
        list(hidden_sizes),
        need_dx,
        need_dweights,
        need_drouting,
    )
    if impl == "triton":
        from .launch import grouped_backward_triton

        return grouped_backward_triton(*args)
    return grouped_backward_torch(*args)


@moe_ffn_bwd.register_fake
def _moe_ffn_bwd_fake(
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
    impl,
):
    e = len(hidden_sizes)
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    dtw = topk_weights.new_empty(topk_weights.shape) if need_drouting else x.new_empty(0)
    if need_dweights:
        return (
            dx,
            dtw,
            w1.new_empty(w1.shape),
            w1.new_empty(w1.shape[0]),
            w2t.new_empty(w2t.shape),
            w2t.new_empty(e, x.shape[1]),
        )
    return dx, dtw, x.new_empty(0), x.new_empty(0), x.new_empty(0), x.new_empty(0)


class MoEFFNFunction(torch.autograd.Function):
    """Autograd of ``moenas::moe_ffn_fwd``. Its ``setup_context``/``backward`` are what
    ``register_autograd`` attaches to the op; ``MoEFFNFunction.apply(*op_args)`` is the same
    computation as ``torch.ops.moenas.moe_ffn_fwd(*op_args)``."""

    @staticmethod
    def forward(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, save_raw, impl):
        return torch.ops.moenas.moe_ffn_fwd(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, save_raw, impl)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _ids, tw, w1, _b1, w2t, _b2, hidden_sizes, save_raw, impl = inputs
        _out, hbuf, yraw, sorted_slots, offsets = output
        ctx.save_for_backward(x, tw, w1, w2t, hbuf, yraw, sorted_slots, offsets)
        ctx.hidden_sizes = list(hidden_sizes)
        ctx.save_raw = bool(save_raw)
        ctx.impl = impl

    @staticmethod
    def backward(ctx, g_out, _g_h=None, _g_raw=None, _g_slots=None, _g_offs=None):
        x, tw, w1, w2t, hbuf, yraw, sorted_slots, offsets = ctx.saved_tensors
        nx, _, ntw, nw1, nb1, nw2, nb2 = ctx.needs_input_grad[:7]
        need_dw = bool(nw1 or nb1 or nw2 or nb2)
        if ntw and not ctx.save_raw:
            raise RuntimeError("moe_ffn_fwd was called with save_raw=False but topk_weights needs a gradient")
        if g_out is None:
            g_out = x.new_zeros(x.shape)
        dx, dtw, dw1, db1, dw2t, db2 = torch.ops.moenas.moe_ffn_bwd(
            g_out.contiguous(),
            x,
            tw,
            w1,
            w2t,
            hbuf,
            yraw,
            sorted_slots,
            offsets,
            ctx.hidden_sizes,
            bool(nx),
            need_dw,
            bool(ntw),
            ctx.impl,
        )
        return (
            dx if nx else None,
            None,
            dtw if ntw else None,
            dw1 if nw1 else None,
            db1 if nb1 else None,
            dw2t if nw2 else None,
            db2 if nb2 else None,
            None,
            None,
            None,
        )


moe_ffn_fwd.register_autograd(MoEFFNFunction.backward, setup_context=MoEFFNFunction.setup_context)


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------

# Decided once at import without importing triton (find_spec is cheap), so that
# ``triton_available()`` is a constant for torch.compile / dynamo.
_TRITON_IMPORTABLE: bool = importlib.util.find_spec("triton") is not None


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether the Triton backend can run.

    ``device=None``: triton is installed. CUDA device: triton is installed and CUDA is
    available. CPU: triton is installed and the interpreter is on (``TRITON_INTERPRET=1``, read
    when our kernels are first imported; this imports them)."""
    if not _TRITON_IMPORTABLE or device is None:
        return _TRITON_IMPORTABLE
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "cpu":
        from .launch import triton_interpreted

        return triton_interpreted()
    return False


def _prepare(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes):
    """Validate shapes; flatten leading dims; returns normalised tensors + output shape."""
    if x.dim() < 1:
        raise ValueError("x must have a trailing model dimension")
    d = x.shape[-1]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, d)
    t = x2.shape[0]
    if topk_ids.shape == lead:  # top-1 given without the k axis
        topk_ids = topk_ids.unsqueeze(-1)
    if topk_weights.shape == lead:
        topk_weights = topk_weights.unsqueeze(-1)
    if topk_ids.shape[:-1] != lead or topk_weights.shape != topk_ids.shape:
        raise ValueError(
            f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
            f"must both be {tuple(lead)} + (k,) for x {tuple(x.shape)}"
        )
    k = topk_ids.shape[-1]
    ids2 = topk_ids.reshape(t, k)
    tw2 = topk_weights.reshape(t, k)
    if ids2.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"topk_ids must be int64 (or int32), got {ids2.dtype}")
    hs = [int(h) for h in hidden_sizes]
    if not hs or min(hs) < 1:
        raise ValueError(f"hidden_sizes must be a non-empty list of positive ints, got {hs}")
    h_total, e = sum(hs), len(hs)
    if tuple(w1.shape) != (h_total, d) or tuple(w2t.shape) != (h_total, d):
        raise ValueError(
            f"w1 {tuple(w1.shape)} and w2t {tuple(w2t.shape)} must be (sum(hidden_sizes)={h_total}, D={d})"
        )
    if b1 is not None and tuple(b1.shape) != (h_total,):
        raise ValueError(f"b1 must be ({h_total},), got {tuple(b1.shape)}")
    if b2 is not None and tuple(b2.shape) != (e, d):
        raise ValueError(f"b2 must be ({e}, {d}), got {tuple(b2.shape)}")
    return x2, ids2, tw2, hs, lead + (d,)


def moe_ffn_op(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes, impl="triton"):
    """Run the custom op (2-D inputs, validated by :func:`moe_ffn`) and return ``out``."""
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"the grouped kernels support float32/float16/bfloat16, got {dtype}")
    cast = lambda t: (t if t.dtype == dtype else t.to(dtype)).contiguous()  # noqa: E731
    w1, w2t = cast(w1), cast(w2t)
    b1 = w1.new_zeros(w1.shape[0]) if b1 is None else cast(b1)
    b2 = w2t.new_zeros(len(hidden_sizes), x.shape[1]) if b2 is None else cast(b2)
    if topk_weights.dtype not in (dtype, torch.float32):
        topk_weights = topk_weights.float()
    topk_weights = topk_weights.contiguous()
    save_raw = torch.is_grad_enabled() and topk_weights.requires_grad
    out = torch.ops.moenas.moe_ffn_fwd(
        x.contiguous(), topk_ids.contiguous(), topk_weights, w1, b1, w2t, b2, list(hidden_sizes), save_raw, impl
    )[0]
    return out


def moe_ffn(
    x: Tensor,
    topk_ids: Tensor,
    topk_weights: Tensor,
    w1: Tensor,
    b1: Tensor | None,
    w2t: Tensor,
    b2: Tensor | None,
    hidden_sizes: Sequence[int],
    backend: str = "auto",
) -> Tensor:
    """Heterogeneous grouped-expert FFN.

    ``out[t] = sum_j topk_weights[t,j] * (relu(x[t] @ W1_e.T + b1_e) @ W2t_e + b2_e)`` with
    ``e = topk_ids[t,j]``; expert ``e`` owns rows ``offs[e]:offs[e]+h_e`` of ``w1`` (H, D),
    ``b1`` (H,) and ``w2t`` (H, D), and row ``e`` of ``b2`` (E, D).

    ``x`` may have leading dims (..., D) with ``topk_ids``/``topk_weights`` (..., k).
    ``backend``: ``"torch"`` (reference loop), ``"triton"`` (kernels; CPU tensors only under the
    Triton interpreter) or ``"auto"`` (triton for CUDA tensors when triton imports, else torch).
    Differentiable w.r.t. x, topk_weights, w1, b1, w2t, b2 on every backend.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    x2, ids2, tw2, hs, out_shape = _prepare(x, topk_ids, topk_weights, w1, b1, w2t, b2, hidden_sizes)
    if backend == "auto":
        backend = "triton" if (x.is_cuda and triton_available()) else "torch"
    if backend == "torch":
        dt = x2.dtype
        out = moe_ffn_reference(
            x2,
            ids2,
            tw2,
            w1.to(dt),
            None if b1 is None else b1.to(dt),
            w2t.to(dt),
            None if b2 is None else b2.to(dt),
            hs,
        )
    else:
        if not triton_available():
            raise RuntimeError("moe_ffn(backend='triton'): triton is not installed; use backend='torch'")
        # cheap on CPU; on CUDA it would cost a host sync, and compiled graphs skip it
        if not x2.is_cuda and ids2.numel() and not torch.compiler.is_compiling():
            lo, hi = int(ids2.min()), int(ids2.max())
            if lo < 0 or hi >= len(hs):
                raise ValueError(f"topk_ids must lie in [0, {len(hs)}); got [{lo}, {hi}]")
        out = moe_ffn_op(x2, ids2, tw2, w1, b1, w2t, b2, hs, impl="triton")
    return out.reshape(out_shape)
