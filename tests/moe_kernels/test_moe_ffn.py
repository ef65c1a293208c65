"""Grouped heterogeneous-expert FFN: outputs and all gradients against a float64 reference.

Backends under test:
  * "torch"    - moe_ffn(backend="torch"), the reference loop used as the CPU path;
  * "torch_op" - the custom op with its explicit PyTorch forward / hand-written backward;
  * "triton"   - the custom op with the Triton kernels (interpreter on CPU, compiled on CUDA).
Each is compared with `slot_reference` below (float64, one token-slot at a time, autograd) by
relative Frobenius error, with the tolerance of the input dtype.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
import torch

from moenas.moe_kernels import (
    GemmConfig,
    MoEKernelConfig,
    WgradConfig,
    moe_ffn,
    moe_ffn_op,
    override_config,
    triton_available,
)

CUDA = torch.cuda.is_available()

# relative Frobenius error vs float64, per input dtype (fp32 uses IEEE dots, no TF32)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}

# Small blocks so that tiny shapes still span several tiles and partial tiles (tl.dot needs 16).
SMALL = MoEKernelConfig(
    up=GemmConfig(block_m=16, block_n=16, block_k=16, group_m=2, num_warps=4, num_stages=1),
    down=GemmConfig(block_m=16, block_n=16, block_k=16, group_m=2, num_warps=4, num_stages=1),
    wgrad=WgradConfig(block_h=16, block_d=16, block_r=16, num_warps=4, num_stages=1),
)


def slot_reference(x, ids, tw, w1, b1, w2t, b2, hidden_sizes):
    """Obviously-correct reference: one token-slot at a time, float64."""
    offs = [0]
    for h in hidden_sizes:
        offs.append(offs[-1] + h)
    rows = []
    for t in range(x.shape[0]):
        acc = torch.zeros_like(x[t])
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            s = slice(offs[e], offs[e + 1])
            h = torch.relu(w1[s] @ x[t] + b1[s])
            acc = acc + tw[t, j] * (h @ w2t[s] + b2[e])
        rows.append(acc)
    return torch.stack(rows)


@dataclass(frozen=True)
class Case:
    name: str
    tokens: int
    d_model: int
    hidden_sizes: tuple
    topk: int
    routing: str = "random"  # "random" | "one_expert" | "skip_last"


CASES = [
    # an expert receives no token (its weight gradients must be exact zeros, still written)
    Case("empty_expert", 20, 32, (16, 32, 24), 1, routing="skip_last"),
    # a single token
    Case("one_token", 1, 32, (16, 48), 2),
    # fewer token-slots than one M block (5 < 16)
    Case("fewer_than_block", 5, 32, (32, 16), 1),
    # hidden sizes not multiples of the block (17, 40, 9 vs 16) and D not a multiple (40)
    Case("ragged_hidden", 24, 40, (17, 40, 9), 2),
    # all tokens routed to one expert (several full tiles + a partial one)
    Case("one_expert", 37, 32, (16, 32, 48), 1, routing="one_expert"),
    # E = 1 (a dense FFN through the grouped path), top-1
    Case("single_expert", 21, 32, (48,), 1),
    # mixed sizes in one layer, top-2, several tiles per expert (scaled 1024/3072/2048)
    Case("mixed_top2", 48, 32, (16, 48, 32), 2),
    # mixed sizes, top-1
    Case("mixed_top1", 40, 32, (16, 48, 32), 1),
]


def make_inputs(case: Case, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    t, d, k, hs = case.tokens, case.d_model, case.topk, case.hidden_sizes
    e, h_total = len(hs), sum(hs)
    if case.routing == "one_expert":
        ids = torch.full((t, k), 1 % e, dtype=torch.long)
    else:
        n_used = e - 1 if case.routing == "skip_last" else e
        ids = torch.stack([torch.randperm(n_used, generator=g)[:k] for _ in range(t)])
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    tw = torch.rand(t, k, generator=g, dtype=torch.float64) + 0.1
    tensors = dict(
        x=rand(t, d),
        tw=tw / tw.sum(-1, keepdim=True),
        w1=rand(h_total, d) / d**0.5,
        b1=rand(h_total) * 0.1,
        w2t=torch.cat([rand(h, d) / h**0.5 for h in hs]),
        b2=rand(e, d) * 0.1,
    )
    lowp = {n: v.to(dtype).to(device) for n, v in tensors.items()}
    grad_out = rand(t, d)
    return ids.to(device), lowp, grad_out


NAMES = ["x", "tw", "w1", "b1", "w2t", "b2"]


def run_backend(backend, ids, lowp, grad_out, hs):
    leaves = {n: v.detach().clone().requires_grad_() for n, v in lowp.items()}
    args = (leaves["x"], ids, leaves["tw"], leaves["w1"], leaves["b1"], leaves["w2t"], leaves["b2"], hs)
    if backend == "torch":
        out = moe_ffn(*args, backend="torch")
    elif backend == "torch_op":
        out = moe_ffn_op(*args, impl="torch")
    else:
        with override_config(SMALL):
            out = moe_ffn_op(*args, impl="triton")
    out.backward(grad_out.to(out.dtype).to(out.device))
    return {"out": out.detach(), **{n: leaves[n].grad for n in NAMES}}


def expected(ids, lowp, grad_out, hs):
    # float64 computation on exactly the (rounded) low-precision inputs
    leaves = {n: v.detach().double().cpu().requires_grad_() for n, v in lowp.items()}
    out = slot_reference(
        leaves["x"], ids.cpu(), leaves["tw"], leaves["w1"], leaves["b1"], leaves["w2t"], leaves["b2"], hs
    )
    out.backward(grad_out)
    return {"out": out.detach(), **{n: leaves[n].grad for n in NAMES}}


def rel_err(got, ref):
    got = got.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def check_case(case, dtype, backend, device):
    seed = zlib.crc32(f"{case.name}/{dtype}/{backend}".encode())  # fresh inputs per case
    ids, lowp, grad_out = make_inputs(case, dtype, device, seed)
    ref = expected(ids, lowp, grad_out, case.hidden_sizes)
    got = run_backend(backend, ids, lowp, grad_out, case.hidden_sizes)
    tol = TOLERANCE[dtype]
    errors = {n: rel_err(got[n], ref[n]) for n in ref}
    bad = {n: f"{v:.2e}" for n, v in errors.items() if not v <= tol}
    assert not bad, f"{case.name} {dtype} {backend}: rel. error > {tol:g}: {bad}"
    if case.routing == "skip_last":  # the unused expert's gradients are exact zeros
        hs = case.hidden_sizes
        last = slice(sum(hs[:-1]), sum(hs))
        for n in ("w1", "b1", "w2t"):
            assert torch.equal(got[n][last], torch.zeros_like(got[n][last])), n
        assert torch.equal(got["b2"][-1], torch.zeros_like(got["b2"][-1]))


needs_triton = pytest.mark.skipif(not triton_available(), reason="triton not installed")
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not CUDA, reason="bf16 runs on CUDA")),
]


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_triton_matches_reference(case, dtype, device, nan_fill):
    check_case(case, dtype, "triton", device)


@pytest.mark.parametrize("backend", ["torch", "torch_op"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_paths_match_reference(case, dtype, backend, device):
    check_case(case, dtype, backend, device)


@needs_triton
@pytest.mark.skipif(CUDA, reason="interpreter-only workaround; CUDA runs bf16 natively above")
def test_triton_bf16_under_interpreter(nan_fill):
    # The interpreter's bf16 tl.dot is wrong, so the launcher up-casts dot operands to fp32
    # there; this still exercises every bf16 load, cast and store of the kernels.
    check_case(Case("bf16_interp", 24, 40, (17, 40, 9), 2), torch.bfloat16, "triton", "cpu")


@needs_triton
def test_fp32_routing_weights_with_half_inputs(device, nan_fill):
    # routing weights may stay fp32 while x / weights are fp16; grads keep each dtype
    case = Case("fp32_router", 20, 32, (16, 32), 2)
    ids, lowp, grad_out = make_inputs(case, torch.float16, device, 7)
    lowp["tw"] = lowp["tw"].float()
    ref = expected(ids, lowp, grad_out, case.hidden_sizes)
    got = run_backend("triton", ids, lowp, grad_out, case.hidden_sizes)
    assert got["tw"].dtype == torch.float32 and got["x"].dtype == torch.float16
    for n in ref:
        assert rel_err(got[n], ref[n]) <= TOLERANCE[torch.float16], n


@needs_triton
def test_leading_dims_and_auto_backend(device):
    # (B, S, D) input with (B, S, k) routing; "auto" picks triton on CUDA, torch on CPU
    g = torch.Generator().manual_seed(3)
    hs = (16, 32)
    x = torch.randn(2, 5, 32, generator=g).to(device)
    ids = torch.randint(0, 2, (2, 5, 1), generator=g).to(device)
    tw = torch.ones(2, 5, 1).to(device)
    w1 = torch.randn(48, 32, generator=g).to(device) / 6
    w2t = torch.randn(48, 32, generator=g).to(device) / 6
    b1, b2 = torch.zeros(48, device=device), torch.zeros(2, 32, device=device)
    out = moe_ffn(x, ids, tw, w1, b1, w2t, b2, hs)
    ref = moe_ffn(x, ids, tw, w1, b1, w2t, b2, hs, backend="torch")
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with override_config(SMALL):
        out_t = moe_ffn(x, ids, tw, w1, None, w2t, None, hs, backend="triton")  # no biases
    torch.testing.assert_close(out_t, ref, rtol=1e-5, atol=1e-5)


def test_bad_inputs_give_clear_errors():
    x = torch.randn(4, 8)
    ids = torch.zeros(4, 1, dtype=torch.long)
    tw = torch.ones(4, 1)
    w = torch.randn(6, 8)
    with pytest.raises(ValueError, match="backend"):
        moe_ffn(x, ids, tw, w, None, w, None, (6,), backend="cuda")
    with pytest.raises(ValueError, match="sum\\(hidden_sizes\\)"):
        moe_ffn(x, ids, tw, w, None, w, None, (4,))
    with pytest.raises(ValueError, match="topk_ids"):
        moe_ffn(x, ids[:3], tw, w, None, w, None, (6,))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        moe_ffn(x, ids + 1, tw, w, None, w, None, (6,), backend="torch")


@needs_triton
def test_triton_default_blocks(device, nan_fill):
    # the default (GPU) block sizes, not the small test blocks: fp16 64x128x64 GEMM tiles and
    # 128x128 weight-gradient tiles over hidden sizes 72/200/130 (partial tiles everywhere),
    # int32 expert ids
    case = Case("default_blocks", 70, 64, (72, 200, 130), 2)
    ids, lowp, grad_out = make_inputs(case, torch.float16, device, 11)
    ref = expected(ids, lowp, grad_out, case.hidden_sizes)
    leaves = {n: v.detach().clone().requires_grad_() for n, v in lowp.items()}
    out = moe_ffn(
        leaves["x"],
        ids.int(),
        leaves["tw"],
        leaves["w1"],
        leaves["b1"],
        leaves["w2t"],
        leaves["b2"],
        case.hidden_sizes,
        backend="triton",
    )
    out.backward(grad_out.to(out.dtype).to(out.device))
    got = {"out": out.detach(), **{n: leaves[n].grad for n in NAMES}}
    for n in ref:
        assert rel_err(got[n], ref[n]) <= TOLERANCE[torch.float16], n
