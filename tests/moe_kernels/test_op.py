"""The torch.library custom op: registration, opcheck, autograd, torch.compile and export."""

from __future__ import annotations

import pytest
import torch

from moenas.moe_kernels import GroupedExpertFFN, MoEFFNFunction, moe_ffn, moe_ffn_op, override_config, triton_available

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")


def op_args(hidden_sizes, t=6, d=16, k=2, requires_grad=True, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    e, h = len(hidden_sizes), sum(hidden_sizes)

    def r(*s):
        return torch.randn(*s, generator=g).to(device).requires_grad_(requires_grad)

    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)]).to(device)
    tw = torch.rand(t, k, generator=g).to(device).requires_grad_(requires_grad)
    return (r(t, d), ids, tw, r(h, d), r(h), r(h, d), r(e, d), list(hidden_sizes), True)


def test_ops_registered():
    assert hasattr(torch.ops.moenas, "moe_ffn_fwd")
    assert hasattr(torch.ops.moenas, "moe_ffn_bwd")


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_torch_impl(requires_grad):
    # schema, fake tensor, autograd registration and AOT dispatch with dynamic shapes
    args = op_args((16, 32), requires_grad=requires_grad) + ("torch",)
    torch.library.opcheck(torch.ops.moenas.moe_ffn_fwd.default, args)


def test_opcheck_backward_op():
    args = op_args((16, 32), requires_grad=False)
    x, ids, tw, w1, b1, w2t, b2, hs, _ = args
    out, hbuf, yraw, ss, offs = torch.ops.moenas.moe_ffn_fwd(*args, "torch")
    g = torch.randn_like(out)
    for flags in [(True, True, True), (False, True, False), (True, False, False)]:
        torch.library.opcheck(
            torch.ops.moenas.moe_ffn_bwd.default, (g, x, tw, w1, w2t, hbuf, yraw, ss, offs, hs, *flags, "torch")
        )


@needs_triton
def test_opcheck_triton_impl(device, small_config):
    # equal hidden sizes: every column of the hidden buffer is written, so eager and AOT runs
    # can be compared element by element (with mixed sizes the unused columns are undefined)
    args = op_args((32, 32), device=device) + ("triton",)
    with override_config(small_config):
        torch.library.opcheck(torch.ops.moenas.moe_ffn_fwd.default, args)


def test_autograd_function_matches_op():
    args = op_args((16, 48))
    out_op = torch.ops.moenas.moe_ffn_fwd(*args, "torch")[0]
    out_fn = MoEFFNFunction.apply(*args, "torch")[0]
    torch.testing.assert_close(out_op, out_fn)
    g_op = torch.autograd.grad(out_op.sum(), [args[0], args[2], args[3]])
    g_fn = torch.autograd.grad(out_fn.sum(), [args[0], args[2], args[3]])
    for a, b in zip(g_op, g_fn):
        torch.testing.assert_close(a, b)


def test_only_needed_gradients():
    # x without grad (first layer), weights with grad: the op skips dX, still gives weight grads
    x, ids, tw, w1, b1, w2t, b2, hs, _ = op_args((16, 32))
    x = x.detach()
    out = moe_ffn_op(x, ids, tw, w1, b1, w2t, b2, hs, impl="torch")
    out.sum().backward()
    assert x.grad is None and w1.grad is not None and tw.grad is not None


@needs_triton
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile(backend, device, small_config):
    # triton: one graph, no break (the op is opaque to dynamo). torch: the reference loop is
    # data-dependent (per-expert counts on the host), so it compiles with graph breaks.
    # aot_eager avoids needing a C++ compiler on CPU.
    torch.manual_seed(0)
    mod = GroupedExpertFFN(16, (16, 32)).to(device)
    x = torch.randn(6, 16, device=device, requires_grad=True)
    ids = torch.randint(0, 2, (6, 2), device=device)
    tw = torch.rand(6, 2, device=device, requires_grad=True)
    f = torch.compile(lambda a, b, c: mod(a, b, c, backend=backend), backend="aot_eager", fullgraph=backend == "triton")
    with override_config(small_config):
        out = f(x, ids, tw)
    ref = mod(x, ids, tw, backend="torch")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if backend == "triton":
        with override_config(small_config):
            out.sum().backward()
        assert x.grad is not None and mod.w1.grad is not None


def test_torch_export_sees_one_op():
    torch.manual_seed(0)
    ffn = GroupedExpertFFN(16, (16, 32))

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ffn = ffn

        def forward(self, x, ids, tw):
            f = self.ffn
            return moe_ffn_op(x, ids, tw, f.w1, f.b1, f.w2t, f.b2, f.hidden_sizes, impl="torch")

    x, ids, tw = torch.randn(5, 16), torch.randint(0, 2, (5, 1)), torch.rand(5, 1)
    ep = torch.export.export(M(), (x, ids, tw))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.moenas.moe_ffn_fwd.default) == 1
    torch.testing.assert_close(
        ep.module()(x, ids, tw), moe_ffn(x, ids, tw, ffn.w1, ffn.b1, ffn.w2t, ffn.b2, ffn.hidden_sizes, backend="torch")
    )
