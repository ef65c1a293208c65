"""Weight-sharing supernet: extracted sub-Transformers compute exactly what the supernet
computes (slice and MoS), gradients reach only the slices an arch uses, MoS mixes per arch."""

import pytest
import torch
from micro_spaces import micro
from supernets import perturbed as perturbed_supernet

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.model import PAD, build_model
from moenas.search.supernet import SuperNet, SupernetConfig, build_supernet, extract

# A space small enough for CPU tests that still has every gene: 2 embed widths, 1-2 layers,
# 1-3 experts of 2 sizes, top-1 and top-2, cross spans 1-2.
MICRO = micro()
SPACE = SearchSpace.from_dict(MICRO)
ARCHS = [SPACE.largest(), SPACE.smallest()] + SPACE.sample_n(10, seed=7)
KINDS = [
    ("slice", "layer", "copy"),
    ("mos", "layer", "copy"),
    ("mos", "neuron", "copy"),
    ("mos", "layer", "independent"),
]


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 97, (3, 9), generator=g)
    src[1, 6:] = PAD  # a padded row: masks must agree too
    tgt = torch.randint(4, 97, (3, 6), generator=g)
    return src, tgt


def perturbed(kind, mode, init="copy"):
    return perturbed_supernet(SPACE, kind, mode, init)


@pytest.mark.parametrize("kind,mode,init", KINDS)
def test_extracted_model_matches_supernet(kind, mode, init):
    net = perturbed(kind, mode, init)
    src, tgt = batch()
    for arch in ARCHS:
        sub = extract(net, arch)
        ref = build_model(arch)
        assert type(sub) is type(ref)
        assert {k: v.shape for k, v in sub.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
        torch.testing.assert_close(net(src, tgt, arch), sub(src, tgt), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(net.aux_loss, sub.aux_loss())
        assert net.expert_counts() == sub.expert_counts()
        # incremental decoding of the extracted model works on inherited weights
        assert len(sub.generate(src[:1], beam=2, max_len=4)) == 1


def test_set_arch_and_arch_validation():
    net = build_supernet(SPACE).eval()
    src, tgt = batch()
    with pytest.raises(UserError, match="no arch"):
        net(src, tgt)
    net.set_arch(ARCHS[3])
    torch.testing.assert_close(net(src, tgt), net(src, tgt, ARCHS[3]))
    bad = Arch.from_dict({**ARCHS[0].to_dict(), "top_k": 3})
    with pytest.raises(UserError, match="top_k: 3 is not allowed"):
        net.set_arch(bad)
    with pytest.raises(UserError, match="outside space"):
        extract(net, bad)


def test_gradients_reach_only_the_used_slices():
    net = build_supernet(SPACE)
    small = SPACE.smallest()  # 1 encoder layer, 1 decoder layer, dense 16-wide FFNs, width 16
    src, tgt = batch()
    net(src, tgt, small).sum().backward()
    emb = net.w("enc_embed.weight").grad
    assert emb[:, 16:].abs().sum() == 0 and emb[4:, :16].abs().sum() > 0
    fc1 = net.w("enc_layers.0.ffn.experts.0.fc1.weight").grad
    assert fc1[16:].abs().sum() == 0 and fc1[:, 16:].abs().sum() == 0 and fc1[:16, :16].abs().sum() > 0
    assert net.w("enc_layers.1.attn.q_proj.weight").grad is None  # layer the arch does not have
    assert net.w("enc_layers.0.ffn.experts.1.fc1.weight").grad is None  # expert the arch does not have


def test_mos_weights_depend_on_the_arch_and_m1_equals_slice():
    net = perturbed("mos", "neuron")
    a, b = ARCHS[0], SPACE.mutate(ARCHS[0], rng=1, prob=1.0)
    assert a != b
    ma, mb = net.mos.mix(a), net.mos.mix(b)
    assert not torch.allclose(ma["enc_layers.0.ffn"][0], mb["enc_layers.0.ffn"][0])
    for alphas in ma.values():
        for x in alphas:
            torch.testing.assert_close(x.sum(0), torch.ones(x.shape[1:]))
    banks = build_supernet(SPACE, "mos", mos_init="independent").mos.bank("enc_layers.0.ffn.experts.0.fc1.weight")
    assert not torch.equal(banks[0], banks[1])  # independent banks differ from the start
    one = SuperNet(SupernetConfig.for_space(SPACE, kind="mos", mos_experts=1)).eval()
    plain = SuperNet(SupernetConfig.for_space(SPACE, kind="slice")).eval()
    src, tgt = batch()
    for arch in ARCHS[:4]:  # same seed -> same initial weights; one bank mixes to itself
        torch.testing.assert_close(one(src, tgt, arch), plain(src, tgt, arch))


def test_state_dict_holds_only_supernet_weights():
    net = build_supernet(SPACE, "mos")
    src, tgt = batch()
    net(src, tgt, ARCHS[2])  # running an arch must not add its template to the state
    keys = set(net.state_dict())
    assert all(k.startswith(("weights.", "mos.")) for k in keys)
    assert not any(t.device.type == "meta" for t in net.state_dict().values())


def test_config_round_trips_through_primitives():
    cfg = SupernetConfig.for_space(SPACE, kind="mos", mos_mode="neuron")
    again = SupernetConfig.from_dict(cfg.to_dict())
    assert again == cfg and SearchSpace.from_dict(again.space) == SPACE
    with pytest.raises(UserError, match="unknown supernet kind"):
        SupernetConfig.for_space(SPACE, kind="dense")


def test_tiny_space_supernet_builds():
    net = build_supernet(SearchSpace.load("tiny"), "mos")
    arch = SearchSpace.load("tiny").sample(0)
    assert extract(net, arch).arch == arch
