"""Features of decoder-only language models (LMArch under an LMProtocol): the vectorised cost
model equals arch.cost (to 1e-9), the encoding equals LMSearchSpace.encode, names come from the
family's components and stacks, and one feature matrix never mixes families."""

import numpy as np
import pytest

from moenas.arch import LayerArch, LMArch, SearchSpace, StackArch, UserError
from moenas.arch.cost import protocol_cost
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER
from moenas.arch.protocol import LatencyProtocol, LMProtocol
from moenas.predictor.features import (
    ArchFeatures,
    cost_names,
    family_columns,
    hat_names,
    lm_arch_arrays,
    moe_names,
    roofline_names,
    transfer_names,
    vector_cost,
)

LM_PROTOCOLS = [
    LMProtocol(),  # llama-bench's pp128 / tg32
    LMProtocol(batch=3, prompt_len=7, decode_steps=5),  # odd sizes: every term of the step sum matters
]


@pytest.mark.parametrize("space", ["lm-tiny", "lm-small"])
@pytest.mark.parametrize("protocol", LM_PROTOCOLS)
def test_lm_cost_features_equal_the_cost_model_and_encoding_the_space_encode(space, protocol):
    sp = SearchSpace.load(space)
    archs = sp.sample_n(25, seed=3)
    f = ArchFeatures(protocol=protocol, space=space).fit(archs)
    X = f.transform(archs)
    names = list(cost_names(DECODER_ONLY))
    summaries = [protocol_cost(a, protocol).summary() for a in archs]
    assert set(summaries[0]) == set(names)
    np.testing.assert_allclose(
        X[:, [f.feature_names_.index(k) for k in names]],
        [[s[k] for k in names] for s in summaries],
        rtol=1e-9,
        atol=1e-6,
    )
    assert f.feature_names_[-len(sp.feature_names()) :] == sp.feature_names()
    np.testing.assert_array_equal(X[:, -len(sp.feature_names()) :], sp.encode(archs))


def test_vector_cost_of_lm_arrays_defaults_to_the_families_protocol():
    archs = SearchSpace.load("lm-tiny").sample_n(7, seed=4)
    c = vector_cost(lm_arch_arrays(archs))
    np.testing.assert_allclose(
        c["flops_decode"], [protocol_cost(a).summary()["flops_decode"] for a in archs], rtol=1e-12
    )
    with pytest.raises(UserError, match="encoder-decoder protocol cannot time decoder-only"):
        vector_cost(lm_arch_arrays(archs), LatencyProtocol())


def test_lm_names_come_from_the_familys_components_and_stack():
    archs = SearchSpace.load("lm-tiny").sample_n(5, seed=0)
    f = ArchFeatures().fit(archs)
    assert f.family_ is DECODER_ONLY and f.protocol_ == LMProtocol()
    names = f.feature_names_
    assert not [n for n in names if "encoder" in n or "decoder" in n or n.startswith(("enc", "hat.enc", "moe.enc"))]
    assert [n for n in cost_names(DECODER_ONLY) if n.count("_") == 1 and n.startswith("flops")] == [
        "flops_total",
        "flops_prefill",
        "flops_decode",
    ]
    assert hat_names(DECODER_ONLY) == ("hat.dec_embed_dim", "hat.dec_layers", "hat.dec_ffn_mean", "hat.dec_heads_mean")
    assert roofline_names(DECODER_ONLY) == ("flops_prefill", "bytes_prefill", "flops_decode", "bytes_decode")
    assert transfer_names(DECODER_ONLY) == (
        "flops_prefill",
        "flops_decode",
        "bytes_prefill",
        "bytes_decode",
        "hat.dec_layers",
        "moe.dec_experts_total",
    )
    assert len(names) == len(set(names)) == f.transform(archs).shape[1]


def test_lm_hat_and_moe_features_known_values():
    a = LMArch(
        StackArch(96, (LayerArch(2, (128,)), LayerArch(4, (256, 512)), LayerArch(4, (64, 64, 64)))),
        top_k=2,
        qkv_dim=64,
        vocab_size=1000,
    )
    f = ArchFeatures(groups=("hat", "moe")).fit([a])
    row = dict(zip(f.feature_names_, f.transform([a])[0]))
    assert [row[k] for k in hat_names(DECODER_ONLY)] == [96, 3, (128 + 384 + 64) / 3, 10 / 3]
    assert [row[k] for k in moe_names(DECODER_ONLY)] == [6 / 3, (128 + 256 + 512 + 192) / 6, 2, 6, 2]


def test_families_are_not_mixed_in_one_matrix():
    lm = SearchSpace.load("lm-tiny").sample_n(4, seed=0)
    ed = SearchSpace.load("tiny").sample_n(4, seed=0)
    with pytest.raises(UserError, match="two model families"):
        ArchFeatures().fit(ed + lm)
    f_lm, f_ed = ArchFeatures().fit(lm), ArchFeatures().fit(ed)
    with pytest.raises(UserError, match=f"arch {ed[0].arch_id} is encoder-decoder.*for decoder-only archs"):
        f_lm.transform(ed)
    with pytest.raises(UserError, match=f"arch {lm[0].arch_id} is decoder-only.*for encoder-decoder archs"):
        f_ed.transform([a.to_json() for a in lm])
    with pytest.raises(UserError, match="two model families"):
        f_lm.transform(lm + ed[:1])
    with pytest.raises(UserError, match="protocol is encoder-decoder, the archs decoder-only"):
        ArchFeatures(protocol=LatencyProtocol()).fit(lm)
    with pytest.raises(UserError, match="space lm-tiny is decoder-only, the archs encoder-decoder"):
        ArchFeatures(space="lm-tiny").fit(ed)


def test_lm_layout_errors_name_the_arch_and_json_strings_read():
    archs = SearchSpace.load("lm-tiny").sample_n(40, seed=2)
    f = ArchFeatures(space="lm-tiny").fit(archs)
    np.testing.assert_array_equal(f.transform([a.to_json() for a in archs]), f.transform(archs))
    np.testing.assert_array_equal(f.transform(archs), np.vstack([f.transform([a]) for a in archs]))
    np.testing.assert_array_equal(f.transform(archs, chunk=7), f.transform(archs))
    deep = LMArch(StackArch(128, tuple(LayerArch(2, (256,)) for _ in range(5))), qkv_dim=128, vocab_size=4096)
    with pytest.raises(UserError, match=deep.arch_id):
        f.transform(archs[:3] + [deep])


def test_family_columns_read_an_encoder_decoder_default_for_the_features_family():
    lm_names = ArchFeatures().fit(SearchSpace.load("lm-tiny").sample_n(3, seed=0)).feature_names_
    ed_names = ArchFeatures().fit(SearchSpace.load("tiny").sample_n(3, seed=0)).feature_names_
    for make in (roofline_names, hat_names, cost_names, transfer_names):
        assert family_columns(make(ENCODER_DECODER), ed_names) == list(make(ENCODER_DECODER))
        assert family_columns(make(ENCODER_DECODER), lm_names) == list(make(DECODER_ONLY))
    assert family_columns(["flops_prefill", "nope"], lm_names) == [
        "flops_prefill",
        "nope",
    ]  # the caller names what is missing
