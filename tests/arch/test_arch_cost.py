"""Cost model against torch.utils.flop_counter and parameter counts on the built model."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moenas.arch import SearchSpace, shipped_spaces
from moenas.arch import cost as C
from moenas.arch.cost import PARTS, decoder_cost, decoder_step_cost, encoder_cost, param_count, protocol_cost
from moenas.arch.family import ENCODER_DECODER
from moenas.arch.model import build_model
from moenas.arch.protocol import LatencyProtocol


def counted(fn) -> int:
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        fn()
    return mode.get_total_flops()


# the encoder-decoder spaces (tests/arch/test_lm_model.py costs the decoder-only ones)
ED_SPACES = [name for name in shipped_spaces() if SearchSpace.load(name).family is ENCODER_DECODER]
CASES = [(name, seed) for name in ED_SPACES for seed in (0, 1)]


@pytest.mark.parametrize("name, seed", CASES)
def test_flops_match_flop_counter_given_the_same_routing(name, seed):
    space = SearchSpace.load(name)
    arch = space.sample(seed)
    model = build_model(arch, seed=seed).eval()
    batch, src_len, beam, past = 1, 13, 3, 5
    src = torch.randint(4, arch.vocab_size, (batch, src_len))
    holder = {}

    def run_encoder():
        states, _ = model.encode(src)
        holder["cross"] = model.cross_kv(states)

    enc_flops = counted(run_encoder)
    enc = encoder_cost(arch, batch, src_len, counts=model.expert_counts())
    assert enc.flops == enc_flops  # exact: same matmuls, same routing

    cross = [(k.repeat(beam, 1, 1, 1), v.repeat(beam, 1, 1, 1), None) for k, v, _ in holder["cross"]]
    cache = [(torch.randn(beam, la.heads, past, arch.qkv_dim // la.heads),) * 2 for la in arch.decoder.layers]
    step_flops = counted(lambda: model.step(torch.randint(4, 99, (beam, 1)), cache, cross))
    step = decoder_step_cost(arch, past, beam, src_len, counts=model.expert_counts())
    assert step.flops == step_flops


@pytest.mark.parametrize("name", ED_SPACES)
def test_uniform_routing_expectation_is_within_2_percent_on_many_tokens(name):
    # with 4096 tokens the measured routing of a random router is close to uniform only in
    # aggregate; the expectation must match when routing *is* uniform: a dense arch exactly
    arch = SearchSpace.load(name).sample(4)
    counts = {
        f"encoder.{i}": [4096 * arch.top_k / len(la.experts)] * len(la.experts)
        for i, la in enumerate(arch.encoder.layers)
    }
    assert encoder_cost(arch, 1, 4096, counts).flops == pytest.approx(encoder_cost(arch, 1, 4096).flops, rel=0.02)


@pytest.mark.parametrize("name", ED_SPACES)
def test_param_count_matches_the_model(name):
    for seed in range(3):
        arch = SearchSpace.load(name).sample(seed)
        model = build_model(arch)
        pc = param_count(arch)
        assert pc.total == sum(p.numel() for p in model.parameters())
        assert pc.active <= pc.total
        if arch.is_dense:
            assert pc.active == pc.total


def test_protocol_cost_adds_up_and_grows_with_the_cache():
    arch = SearchSpace.load("automoe-wmt").sample(0)
    p = LatencyProtocol()
    cost = protocol_cost(arch, p)
    assert cost.components["decoder"].flops == pytest.approx(
        sum(decoder_step_cost(arch, t, 5, 30).flops for t in range(30))
    )
    assert decoder_step_cost(arch, 29, 5, 30).flops > decoder_step_cost(arch, 0, 5, 30).flops
    s = cost.summary()
    assert s["flops_total"] == pytest.approx(s["flops_encoder"] + s["flops_decoder"])
    assert decoder_cost(arch, LatencyProtocol(decoder_steps=10)).flops < cost.components["decoder"].flops


def test_idle_experts_cost_nothing():
    arch = SearchSpace.load("tiny").sample(3)
    key, layer = next((f"{n}.{i}", la) for n, i, la in arch.layers if la.is_moe and n == "encoder")
    n = 30
    one_expert = [n] + [0] * (len(layer.experts) - 1)
    c1 = encoder_cost(arch, 1, n, {key: one_expert})
    assert c1.flops_by_part["experts"] > 0
    zero = encoder_cost(arch, 1, n, {key: [0] * len(layer.experts)})
    assert zero.flops < c1.flops


@pytest.mark.parametrize(
    "protocol",
    [LatencyProtocol(), LatencyProtocol(batch=2, src_len=7, decoder_steps=3, beam=1), LatencyProtocol(decoder_steps=1)],
)
def test_decoder_cost_is_the_sum_of_its_steps_part_by_part(protocol):
    # decoder_cost evaluates one step at the mean cache length; it must equal the explicit sum
    arch = SearchSpace.load("tiny").sample(3)
    whole = decoder_cost(arch, protocol)
    steps = [
        decoder_step_cost(arch, t, protocol.decoder_batch, protocol.src_len) for t in range(protocol.decoder_steps)
    ]
    assert {"attention", "logits"} <= set(whole.flops_by_part) <= set(PARTS)
    for part in whole.flops_by_part:
        assert whole.flops_by_part[part] == pytest.approx(sum(s.flops_by_part[part] for s in steps), rel=1e-12)
        assert whole.bytes_by_part[part] == pytest.approx(sum(s.bytes_by_part[part] for s in steps), rel=1e-12)


def test_idle_experts_move_no_bytes():
    arch = SearchSpace.load("tiny").sample(3)
    idle = {f"{n}.{i}": [0] * len(la.experts) for n, i, la in arch.layers if la.is_moe and n == "encoder"}
    assert idle
    zero = encoder_cost(arch, 1, 30, idle)
    assert zero.flops_by_part["experts"] == zero.bytes_by_part["experts"] == 0
    others = {k: v for k, v in encoder_cost(arch, 1, 30).bytes_by_part.items() if k != "experts"}
    assert {k: v for k, v in zero.bytes_by_part.items() if k != "experts"} == others


def test_helpers_take_arrays_as_well_as_numbers():
    rng = np.random.default_rng(0)
    m, k, n, b = (rng.integers(0, 50, 40).astype(float) for _ in range(4))
    m[:5] = 0  # rows absent: nothing moves
    f, by = C.matmul(m, k, n, b)
    for i in range(40):
        assert (f[i], by[i]) == C.matmul(float(m[i]), float(k[i]), float(n[i]), float(b[i]))
    assert not by[:5].any()
    heads = np.array([1.0, 2, 4, 8])
    f, by = C.attention(3, 64.0, 5, 128.0, heads, 2, project_kv=True)
    for i, h in enumerate(heads):
        assert (f[i], by[i]) == C.attention(3, 64, 5, 128, int(h), 2, project_kv=True)
    sizes = np.array([64.0, 128, 256, 512])
    total, active = C.ffn_params(32.0, np.array([1.0, 2, 4]), np.array([1.0, 2, 4]), np.array([64.0, 192, 960]))
    assert [C.ffn_params(32, k_, e, h) for k_, e, h in ((1, 1, 64), (2, 2, 192), (4, 4, 960))] == list(
        zip(total, active)
    )
    # all experts under uniform routing = the per-expert sum of FFNs on the uniform loads
    load = C.uniform_loads(30, 2, len(sizes))
    per_expert = C.add(*(C.ffn(load, 48, h) for h in sizes))
    assert C.uniform_experts(30, 2, 48, len(sizes), sizes.sum()) == pytest.approx(per_expert, rel=1e-12)
