"""Weight packing and the packed-parameter module."""

from __future__ import annotations

import torch
from torch import nn

from moenas.moe_kernels import GroupedExpertFFN, moe_ffn, moe_ffn_reference, pack_expert_weights


def per_expert_loop(x, ids, tw, fc1, fc2):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            out[t] += tw[t, j] * fc2[e](torch.relu(fc1[e](x[t])))
    return out


def test_pack_matches_linears_and_gradients_flow():
    torch.manual_seed(0)
    hs, d = (8, 24, 16), 12
    fc1 = [nn.Linear(d, h) for h in hs]
    fc2 = [nn.Linear(h, d) for h in hs]
    w1, b1, w2t, b2, got_hs = pack_expert_weights(fc1, fc2)
    assert got_hs == hs and w1.shape == (48, d) and w2t.shape == (48, d) and b2.shape == (3, d)
    x, ids, tw = torch.randn(9, d), torch.randint(0, 3, (9, 2)), torch.rand(9, 2)
    out = moe_ffn(x, ids, tw, w1, b1, w2t, b2, hs, backend="torch")
    torch.testing.assert_close(out, per_expert_loop(x, ids, tw, fc1, fc2))
    out.square().sum().backward()  # gradients reach the per-expert Linear parameters
    used = set(ids.reshape(-1).tolist())
    for e in range(3):
        assert fc1[e].weight.grad is not None and fc2[e].bias.grad is not None
        assert (fc1[e].weight.grad.abs().sum() > 0) == (e in used)


def test_pack_without_bias():
    fc1 = [nn.Linear(4, 8, bias=False)]
    fc2 = [nn.Linear(8, 4, bias=False)]
    w1, b1, w2t, b2, hs = pack_expert_weights(fc1, fc2)
    assert not b1.any() and not b2.any() and hs == (8,)


def test_module_from_linears_and_init():
    torch.manual_seed(1)
    hs, d = (8, 16), 12
    fc1 = [nn.Linear(d, h) for h in hs]
    fc2 = [nn.Linear(h, d) for h in hs]
    mod = GroupedExpertFFN.from_linears(fc1, fc2)
    x, ids, tw = torch.randn(5, d), torch.randint(0, 2, (5, 1)), torch.rand(5, 1)
    torch.testing.assert_close(mod(x, ids, tw), per_expert_loop(x, ids, tw, fc1, fc2))
    fresh = GroupedExpertFFN(d, hs)
    assert fresh.w1.abs().max() <= d**-0.5 and fresh.w2t[:8].abs().max() <= 8**-0.5
    assert "hidden_sizes=(8, 16)" in repr(fresh)


def test_reference_handles_empty_batch():
    hs, d = (4, 8), 6
    w = torch.randn(12, d)
    out = moe_ffn_reference(
        torch.randn(0, d), torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1), w, None, w, None, hs
    )
    assert out.shape == (0, d)
