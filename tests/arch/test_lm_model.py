"""The decoder-only CausalLM (incremental decoding, seeding, routing) and its cost model against
torch.utils.flop_counter and the built model's parameters."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moenas.arch import SearchSpace, UserError
from moenas.arch.cost import PARTS, lm_decode_cost, lm_prefill_cost, lm_step_cost, param_count, protocol_cost
from moenas.arch.lm_model import CausalLM, build_lm_model
from moenas.arch.model import build_model
from moenas.arch.moe import FeedForward
from moenas.arch.protocol import LMProtocol

TINY = SearchSpace.load("lm-tiny")
SMALL = SearchSpace.load("lm-small")


def counted(fn) -> int:
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        fn()
    return mode.get_total_flops()


def moe_arch(space, seed: int = 0):
    """The first seeded sample with an MoE layer (nearly every one has)."""
    return next(a for a in (space.sample(seed + i) for i in range(100)) if not a.is_dense)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prefill_then_steps_give_the_logits_of_one_forward(seed):
    arch = TINY.sample(seed)
    model = build_lm_model(arch, seed=seed).eval()
    ids = torch.randint(4, arch.vocab_size, (3, 11))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model.prefill(ids[:, :6])
        steps = [logits]
        for t in range(6, 11):
            logits, cache = model.step(ids[:, t : t + 1], cache)
            steps.append(logits)
    assert full.shape == (3, 11, arch.vocab_size)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 5:], atol=1e-5, rtol=1e-5)
    assert len(cache) == len(arch.decoder.layers) and cache[0][0].shape[2] == 11


def test_forward_is_causal():
    arch = TINY.sample(4)
    model = build_lm_model(arch).eval()
    ids = torch.randint(4, arch.vocab_size, (1, 9))
    changed = ids.clone()
    changed[0, 6:] = (ids[0, 6:] + 1) % arch.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])


def test_seeded_build_is_deterministic_and_leaves_the_global_rng_alone():
    arch = TINY.sample(1)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_lm_model(arch, seed=7), build_lm_model(arch, seed=7), build_lm_model(arch, seed=8)
    assert torch.rand(1) == before
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embed.weight"], sc["embed.weight"])


def test_an_moe_layer_routes_every_token_to_top_k_experts():
    arch = moe_arch(TINY)
    model = build_lm_model(arch).eval()
    ids = torch.randint(4, arch.vocab_size, (2, 13))
    with torch.no_grad():
        model(ids)
    counts = model.expert_counts()
    moe = [(f"decoder.{i}", lay) for _, i, lay in arch.layers if lay.is_moe]
    assert set(counts) == {k for k, _ in moe} and len(model.moe_layers()) == len(moe)
    for key, layer in moe:
        assert len(counts[key]) == len(layer.experts)
        assert sum(counts[key]) == 2 * 13 * min(arch.top_k, len(layer.experts))
    assert float(model.aux_loss()) > 0
    dense = build_lm_model(TINY.dense().sample(0))
    assert dense.moe_layers() == [] and isinstance(dense.layers[0].ffn, FeedForward)
    assert float(dense.aux_loss()) == 0


def test_greedy_generation_is_the_argmax_of_forward_each_step():
    arch = TINY.sample(6)
    model = build_lm_model(arch, seed=2).eval()
    ids = torch.randint(4, arch.vocab_size, (2, 5))
    out = model.generate(ids, 4)
    seq = ids
    with torch.no_grad():
        for _ in range(4):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 5:])


def test_the_encoder_decoder_builder_refuses_a_decoder_only_arch():
    with pytest.raises(UserError, match="build_lm_model"):
        build_model(TINY.sample(0))


# ---- cost model --------------------------------------------------------------------------------


def flops_given_the_same_routing(model: CausalLM, batch: int, prompt: int, past: int) -> None:
    arch = model.arch
    ids = torch.randint(4, arch.vocab_size, (batch, prompt))
    assert (
        counted(lambda: model.prefill(ids)) == lm_prefill_cost(arch, batch, prompt, counts=model.expert_counts()).flops
    )
    cache = [(torch.randn(batch, lay.heads, past, arch.qkv_dim // lay.heads),) * 2 for lay in arch.decoder.layers]
    step = counted(lambda: model.step(torch.randint(4, 99, (batch, 1)), cache))
    assert step == lm_step_cost(arch, past, batch, counts=model.expert_counts()).flops  # exact: same matmuls


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flops_match_flop_counter_on_lm_tiny(seed):
    model = build_lm_model(TINY.sample(seed), seed=seed).eval()
    flops_given_the_same_routing(model, batch=2, prompt=13, past=7)


def test_flops_and_params_match_on_lm_small():
    """lm-small's archs build and cost on a CPU: its smallest arch and one sample."""
    for arch in (SMALL.smallest(), SMALL.sample(7)):
        model = build_lm_model(arch).eval()
        assert param_count(arch).total == sum(p.numel() for p in model.parameters())
        if arch == SMALL.smallest():
            flops_given_the_same_routing(model, batch=1, prompt=5, past=3)
        del model


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_param_count_matches_the_model(seed):
    arch = TINY.sample(seed)
    pc = param_count(arch)
    assert pc.total == sum(p.numel() for p in build_lm_model(arch).parameters())
    assert pc.embedding == arch.vocab_size * arch.embed_dim and pc.active <= pc.total
    dense = TINY.dense().sample(seed)
    assert param_count(dense).active == param_count(dense).total


def test_uniform_routing_expectation_is_within_2_percent_on_many_tokens():
    arch = moe_arch(TINY, 4)
    counts = {
        f"decoder.{i}": [4096 * min(arch.top_k, len(la.experts)) / len(la.experts)] * len(la.experts)
        for _, i, la in arch.layers
        if la.is_moe
    }
    assert lm_prefill_cost(arch, 1, 4096, counts).flops == pytest.approx(lm_prefill_cost(arch, 1, 4096).flops, rel=0.02)


def test_measured_routing_of_a_random_router_is_near_the_uniform_expectation_in_aggregate():
    arch = moe_arch(TINY, 2)
    model = build_lm_model(arch).eval()
    ids = torch.randint(4, arch.vocab_size, (4, 128))
    with torch.no_grad():
        model.prefill(ids)
    measured = lm_prefill_cost(arch, 4, 128, model.expert_counts()).flops_by_part["experts"]
    assert measured == pytest.approx(lm_prefill_cost(arch, 4, 128).flops_by_part["experts"], rel=0.25)


@pytest.mark.parametrize(
    "protocol", [LMProtocol(), LMProtocol(batch=2, prompt_len=7, decode_steps=3), LMProtocol(decode_steps=1)]
)
def test_decode_cost_is_the_sum_of_its_steps_part_by_part(protocol):
    arch = TINY.sample(3)
    whole = lm_decode_cost(arch, protocol)
    steps = [lm_step_cost(arch, protocol.prompt_len + t, protocol.batch) for t in range(protocol.decode_steps)]
    assert {"attention", "logits"} <= set(whole.flops_by_part) <= set(PARTS)
    for part in whole.flops_by_part:
        assert whole.flops_by_part[part] == pytest.approx(sum(s.flops_by_part[part] for s in steps), rel=1e-12)
        assert whole.bytes_by_part[part] == pytest.approx(sum(s.bytes_by_part[part] for s in steps), rel=1e-12)


def test_protocol_cost_of_an_lm_has_prefill_and_decode_and_logits_once_per_token():
    arch = TINY.sample(8)
    cost = protocol_cost(arch)
    assert cost.summary() == protocol_cost(arch, LMProtocol()).summary()  # the family's default protocol
    assert list(cost.components) == ["prefill", "decode"]
    one_logits = 2 * arch.embed_dim * arch.vocab_size
    assert cost.components["prefill"].flops_by_part["logits"] == one_logits  # the last position only
    assert cost.components["decode"].flops_by_part["logits"] == 32 * one_logits
    assert "cross_kv" not in cost.components["prefill"].flops_by_part
    assert protocol_cost(arch, LMProtocol(prompt_len=256)).total_flops > cost.total_flops
    assert 0 < cost.ffn_share < 1 and cost.params == param_count(arch)
