"""Sub-Transformer and MoE layer: real dispatch, incremental decoding, generation."""

import pytest
import torch
import torch.nn.functional as F

from moenas.arch import SearchSpace
from moenas.arch.model import BOS, EOS, PAD, build_model
from moenas.arch.moe import FeedForward, MoELayer

TINY = SearchSpace.load("tiny")


def moe_reference(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, then the routing weights select (the thing dispatch avoids)."""
    _, w, ids = layer.route(x)
    all_out = torch.stack([e(x) for e in layer.experts], dim=1)  # (T, E, D)
    picked = all_out.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return (picked * w.unsqueeze(-1)).sum(1)


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_dispatch_matches_compute_all_and_select(top_k):
    layer = MoELayer(16, (8, 24, 32), top_k=top_k)
    x = torch.randn(37, 16)
    torch.testing.assert_close(layer(x), moe_reference(layer, x))
    assert int(layer.expert_counts.sum()) == 37 * top_k


def test_moe_with_idle_experts_and_all_tokens_to_one():
    layer = MoELayer(8, (4, 12, 20, 4), top_k=1)
    with torch.no_grad():  # router sends every token to expert 2: experts 0, 1, 3 get nothing
        layer.router.weight.zero_()
        layer.router.weight[2] = 1.0
    x = torch.rand(9, 8) + 0.1
    out = layer(x)
    assert layer.expert_counts.tolist() == [0, 0, 9, 0]
    torch.testing.assert_close(out, moe_reference(layer, x))
    # and experts that get no token get no gradient
    out.sum().backward()
    assert layer.experts[0].fc1.weight.grad is None or layer.experts[0].fc1.weight.grad.abs().sum() == 0
    assert layer.experts[2].fc1.weight.grad.abs().sum() > 0


def test_moe_only_runs_experts_on_their_tokens():
    layer = MoELayer(8, (4, 4, 4), top_k=1)
    seen = []
    for e in layer.experts:
        e.fc1.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    layer(torch.randn(10, 8))
    assert sum(seen) == 10  # not 3 x 10


def test_load_balancing_loss_is_one_when_balanced_and_larger_when_not():
    layer = MoELayer(4, (4, 4), top_k=1)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
    x = torch.zeros(4, 4)
    x[:2, 0], x[2:, 0] = 5.0, -5.0
    layer(x)
    assert layer.expert_counts.tolist() == [2, 2]
    assert float(layer.aux_loss) == pytest.approx(1.0, abs=1e-3)
    layer(torch.ones(4, 4))
    assert float(layer.aux_loss) > 1.5


def test_dense_layer_is_a_plain_ffn():
    model = build_model(TINY.smallest())
    assert isinstance(model.enc_layers[0].ffn, FeedForward) and model.moe_layers() == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_incremental_decoding_matches_full_forward(seed):
    arch = TINY.sample(seed)
    model = build_model(arch, seed=seed).eval()
    src = torch.randint(4, arch.vocab_size, (3, 9))
    src[1, -3:] = PAD  # padded source row
    tgt = torch.randint(4, arch.vocab_size, (3, 6))
    with torch.no_grad():
        full = model(src, tgt)
        states, pad = model.encode(src)
        cross = model.cross_kv(states, pad)
        cache, steps = None, []
        for t in range(tgt.shape[1]):
            logits, cache = model.step(tgt[:, t : t + 1], cache, cross)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-4, rtol=1e-4)
    assert cache[0][0].shape[2] == tgt.shape[1]


def test_source_padding_does_not_change_the_translation_of_a_row():
    arch = TINY.sample(5)
    model = build_model(arch).eval()
    src = torch.randint(4, arch.vocab_size, (1, 7))
    padded = torch.cat([src, torch.full((1, 4), PAD)], dim=1)
    tgt = torch.randint(4, arch.vocab_size, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(src, tgt), model(padded, tgt), atol=1e-4, rtol=1e-4)


def test_cross_span_joins_the_last_encoder_layers_along_the_sequence():
    arch = TINY.sample(3)  # decoder layers with cross_span 2
    model = build_model(arch).eval()
    src = torch.randint(4, arch.vocab_size, (2, 5))
    states, _ = model.encode(src)
    cross = model.cross_kv(states)
    for layer, (k, _v, _) in zip(arch.decoder.layers, cross):
        assert k.shape[2] == 5 * layer.cross_span


def naive_greedy(model, src, max_len):
    out = torch.full((src.shape[0], 1), BOS)
    for _ in range(max_len):
        nxt = model(src, out)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
    return out[:, 1:].tolist()


def test_greedy_generation_matches_a_naive_loop_and_beam_is_at_least_as_good():
    arch = TINY.sample(7)
    model = build_model(arch, seed=1).eval()
    src = torch.randint(4, arch.vocab_size, (2, 6))
    with torch.no_grad():
        greedy = model.generate(src, beam=1, max_len=5)
        ref = [row[: row.index(EOS)] if EOS in row else row for row in naive_greedy(model, src, 5)]
        assert greedy == ref
        beam = model.generate(src, beam=4, max_len=5)

        def score(tokens):
            seq = torch.tensor([[BOS] + tokens])
            lp = F.log_softmax(model(src[:1], seq[:, :-1]), -1)
            return float(lp[0, torch.arange(len(tokens)), torch.tensor(tokens)].sum()) / len(tokens)

    if len(beam[0]) == len(greedy[0]) == 5:  # no EOS: compare length-normalised scores
        assert score(beam[0]) >= score(greedy[0]) - 1e-5


def test_unknown_moe_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        MoELayer(4, (4, 4), backend="cuda-magic")
