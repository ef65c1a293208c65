"""Features: the vectorised cost model equals arch.cost exactly; encoding equals space.encode."""

import numpy as np
import pytest

from moenas.arch import Arch, LayerArch, SearchSpace, StackArch, UserError
from moenas.arch.cost import protocol_cost
from moenas.arch.protocol import LatencyProtocol
from moenas.predictor.features import COST_FEATURES, HAT_FEATURES, ArchFeatures

PROTOCOLS = [
    LatencyProtocol(batch=1, src_len=30, decoder_steps=30, beam=5),  # HAT's protocol
    LatencyProtocol(batch=2, src_len=7, decoder_steps=3, beam=1),  # odd sizes: every term of the step sum matters
]


@pytest.mark.parametrize("space", ["tiny", "hat-wmt", "automoe-wmt"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cost_features_equal_the_cost_model(space, protocol):
    archs = SearchSpace.load(space).sample_n(25, seed=3)
    f = ArchFeatures(protocol=protocol, space=space).fit(archs)
    X = f.transform(archs)
    got = X[:, [f.feature_names_.index(k) for k in COST_FEATURES]]
    ref = np.array([[protocol_cost(a, protocol).summary()[k] for k in COST_FEATURES] for a in archs])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("space", ["tiny", "automoe-wmt"])
def test_encoding_equals_space_encode(space):
    sp = SearchSpace.load(space)
    archs = sp.sample_n(30, seed=1)
    f = ArchFeatures(space=space, groups=("encoding",)).fit(archs)
    assert f.feature_names_ == sp.feature_names()
    np.testing.assert_array_equal(f.transform(archs), sp.encode(archs))


def test_hat_features_known_values():
    dec = lambda h, e, ch, s: LayerArch(h, e, ch, s)  # noqa: E731
    a = Arch(
        StackArch(128, (LayerArch(2, (128,)), LayerArch(4, (256, 512)))),  # MoE layer: mean size 384
        StackArch(64, (dec(2, (128,), 4, 1), dec(4, (512,), 2, 2), dec(4, (256,), 2, 2))),
        qkv_dim=128,
        vocab_size=8000,
    )
    f = ArchFeatures(groups=("hat", "moe")).fit([a])
    row = dict(zip(f.feature_names_, f.transform([a])[0]))
    assert [row[k] for k in HAT_FEATURES] == [
        128,
        2,
        (128 + 384) / 2,
        3,
        64,
        3,
        (128 + 512 + 256) / 3,
        10 / 3,
        8 / 3,
        5 / 3,
    ]
    assert row["moe.enc_experts_mean"] == 1.5 and row["moe.enc_expert_size_mean"] == (128 + 256 + 512) / 3
    assert row["moe.enc_moe_layers"] == 1 and row["moe.dec_experts_total"] == 3


def test_json_strings_and_errors():
    archs = SearchSpace.load("tiny").sample_n(5, seed=0)
    f = ArchFeatures(space="tiny").fit(archs)
    np.testing.assert_array_equal(f.transform([a.to_json() for a in archs]), f.transform(archs))
    deep = SearchSpace.load("automoe-wmt").sample(0)
    with pytest.raises(UserError, match="layers|experts"):
        f.transform([deep])  # 6 encoder layers: more than tiny allows
    with pytest.raises(UserError, match="no archs"):
        f.transform([])
    with pytest.raises(UserError, match="unknown feature group"):
        ArchFeatures(groups=("nope",)).fit(archs)


def test_layout_errors_name_the_arch_and_mixed_batches_pad():
    """arch_arrays checks the layout once per batch: an arch with too many experts in one layer
    is found and named; archs of different depths in one batch are padded with zeros."""
    sp = SearchSpace.load("tiny")
    archs = sp.sample_n(40, seed=2)
    f = ArchFeatures(space="tiny").fit(archs)
    wide = Arch(
        StackArch(64, (LayerArch(2, (128,) * 5), LayerArch(2, (128,)))),  # 5 experts > tiny's 4
        StackArch(64, (LayerArch(2, (128,), 2, 1),)),
        qkv_dim=128,
        vocab_size=8000,
    )
    with pytest.raises(UserError, match=wide.arch_id):
        f.transform(archs[:3] + [wide])
    np.testing.assert_array_equal(f.transform(archs), np.vstack([f.transform([a]) for a in archs]))
