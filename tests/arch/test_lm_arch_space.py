"""The decoder-only family's arch, protocol and search spaces (lm-tiny, lm-small)."""

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moenas.arch import Arch, SearchSpace, UserError, load_archs, shipped_spaces
from moenas.arch.arch import LayerArch, LMArch, StackArch
from moenas.arch.cost import param_count, protocol_cost
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER
from moenas.arch.protocol import (
    LatencyProtocol,
    LMProtocol,
    default_protocol,
    protocol_for,
    protocol_from_dict,
    shape_differences,
)
from moenas.arch.space import SPACES_DIR, LMSearchSpace, load_space, space_from_dict

LM_SPACES = {name: SearchSpace.load(name) for name in ("lm-tiny", "lm-small")}
lm_names = st.sampled_from(sorted(LM_SPACES))
seeds = st.integers(min_value=0, max_value=2**32 - 1)
MICRO = {
    "name": "micro-lm",
    "family": "decoder-only",
    "vocab_size": 16,
    "qkv_dim": 4,
    "top_k": [1, 2],
    "decoder": {"embed_dim": [4, 8], "layers": [1, 2], "heads": [1, 2], "experts": [1, 2], "expert_sizes": [4, 8]},
}


def lm_arch(**kw) -> LMArch:
    layers = (LayerArch(2, (64, 128)), LayerArch(4, (96,)))
    return LMArch(**{"decoder": StackArch(32, layers), "top_k": 2, "qkv_dim": 64, "vocab_size": 300, **kw})


# ---- arch ----------------------------------------------------------------------------------------


def test_lm_json_names_its_family_and_encoder_decoder_json_does_not():
    a = lm_arch()
    d = json.loads(a.to_json())
    assert d["family"] == "decoder-only" and set(d) == {
        "schema_version",
        "family",
        "vocab_size",
        "qkv_dim",
        "top_k",
        "decoder",
    }
    assert d["decoder"]["layers"][0] == {"heads": 2, "experts": [64, 128]}
    assert a.family is DECODER_ONLY and Arch.family is ENCODER_DECODER
    assert "family" not in json.loads(SearchSpace.load("tiny").sample(0).to_json())
    assert a.arch_id == LMArch.from_json(a.to_json()).arch_id == Arch.from_json(a.to_json()).arch_id
    assert [(n, i) for n, i, _ in a.layers] == [("decoder", 0), ("decoder", 1)]
    assert a.embed_dim == 32 and not a.is_dense and lm_arch(decoder=StackArch(32, (LayerArch(2, (8,)),))).is_dense


def test_an_encoder_decoder_json_with_its_family_named_loads_as_that_arch():
    a = SearchSpace.load("tiny").sample(1)
    d = json.loads(a.to_json())
    d["family"] = "encoder-decoder"
    b = Arch.from_dict(d)
    assert type(b) is Arch and b == a and b.arch_id == a.arch_id


def test_load_archs_reads_both_families_from_one_file(tmp_path):
    ed, lm = SearchSpace.load("tiny").sample(2), SearchSpace.load("lm-tiny").sample(2)
    f = tmp_path / "mixed.jsonl"
    f.write_text(ed.to_json() + "\n" + lm.to_json() + "\n")
    assert load_archs(f) == [ed, lm] and [type(a) for a in load_archs(f)] == [Arch, LMArch]
    one = tmp_path / "one.json"
    one.write_text(lm.to_json(indent=2))
    assert load_archs(one) == [lm]


GOOD = {
    "family": "decoder-only",
    "vocab_size": 64,
    "qkv_dim": 8,
    "top_k": 1,
    "decoder": {"embed_dim": 8, "layers": [{"heads": 2, "experts": [16, 8]}]},
}


def with_(path: str, value) -> dict:
    d = json.loads(json.dumps(GOOD))
    *keys, last = path.split(".")
    node = d
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[int(last) if isinstance(node, list) else last] = value
    return d


@pytest.mark.parametrize(
    "d, match",
    [
        (with_("family", "encoder-only"), "arch: family 'encoder-only' is not a model family"),
        (with_("family", ["decoder-only"]), "is not a model family"),
        (with_("decoder.layers", []), "decoder.layers: expected a non-empty list"),
        (with_("decoder.layers.0.experts", [16, "x"]), r"decoder.layers\[0\].experts\[1\]: expected an integer"),
        (with_("decoder.layers.0.heads", 3), r"decoder.layers\[0\].heads: qkv_dim 8 is not divisible by 3 heads"),
        (with_("decoder.layers.0.cross_heads", 2), r"decoder.layers\[0\]: unknown field\(s\) 'cross_heads'"),
        (with_("decoder.embed_dim", 10**9), "decoder.embed_dim: 1000000000 is beyond"),
        (with_("vocab_size", 0), "vocab_size: must be >= 1"),
        (with_("schema_version", 2), "schema_version: 2 is not supported"),
        (with_("encoder", {}), r"arch: unknown field\(s\) 'encoder'"),
        ({"family": "decoder-only"}, "missing the field 'decoder'"),
    ],
)
def test_malformed_lm_arch_is_a_user_error_naming_the_field(d, match):
    with pytest.raises(UserError, match=match):
        Arch.from_dict(d)
    with pytest.raises(UserError, match=match):
        LMArch.from_dict(d)


def test_lm_arch_parser_refuses_an_encoder_decoder_dict():
    with pytest.raises(UserError, match="not 'decoder-only'"):
        LMArch.from_dict({**json.loads(SearchSpace.load("tiny").sample(0).to_json()), "family": "encoder-decoder"})


# ---- protocol ------------------------------------------------------------------------------------


def test_lm_protocol_defaults_id_and_reading_back():
    p = LMProtocol()
    assert (p.batch, p.prompt_len, p.decode_steps) == (1, 128, 32) and p.family is DECODER_ONLY
    d = p.to_dict()
    assert d == {
        "family": "decoder-only",
        "batch": 1,
        "prompt_len": 128,
        "decode_steps": 32,
        "routing": "seeded-random",
        "model_seed": 0,
        "input_seed": 0,
    }
    assert LMProtocol.from_dict(d) == p and protocol_from_dict(d) == p
    assert LMProtocol(prompt_len=64).protocol_id != p.protocol_id != LatencyProtocol().protocol_id
    assert p.arch_seed("abc") == LatencyProtocol().arch_seed("abc")  # one rule for both families
    assert protocol_for("decoder-only") == p == protocol_for(DECODER_ONLY) == default_protocol(lm_arch())
    assert default_protocol(SearchSpace.load("tiny").sample(0)) == LatencyProtocol() == protocol_for(ENCODER_DECODER)


def test_a_protocol_of_one_family_is_not_read_as_the_other():
    with pytest.raises(UserError, match="family 'decoder-only', expected one of family 'encoder-decoder'"):
        LatencyProtocol.from_dict(LMProtocol().to_dict())
    with pytest.raises(UserError, match="family 'encoder-decoder', expected one of family 'decoder-only'"):
        LMProtocol.from_dict(LatencyProtocol().to_dict())
    with pytest.raises(UserError, match="unknown"):
        protocol_from_dict({"family": "nope"})
    with pytest.raises(UserError, match="no latency protocol"):
        protocol_for("nope")


@pytest.mark.parametrize(
    "kw", [{"prompt_len": 0}, {"decode_steps": -1}, {"batch": 1.5}, {"input_seed": -1}, {"routing": "x"}]
)
def test_lm_protocol_range_checks(kw):
    with pytest.raises(UserError):
        LMProtocol(**kw)


def test_shape_differences_name_the_lm_fields_and_the_family():
    assert shape_differences(LMProtocol(), LMProtocol()) == []
    assert shape_differences(LMProtocol(prompt_len=64), LMProtocol()) == ["prompt_len 64 vs 128"]
    diff = shape_differences(LatencyProtocol(), LMProtocol())
    assert diff[0] == "family encoder-decoder vs decoder-only" and "prompt_len None vs 128" in diff
    assert shape_differences(LatencyProtocol(beam=4), LatencyProtocol()) == ["beam 4 vs 5"]


def test_the_cost_model_refuses_a_protocol_of_another_family():
    with pytest.raises(UserError, match="decoder-only"):
        protocol_cost(lm_arch(), LatencyProtocol())
    with pytest.raises(UserError, match="encoder-decoder"):
        protocol_cost(SearchSpace.load("tiny").sample(0), LMProtocol())


# ---- spaces --------------------------------------------------------------------------------------


def test_shipped_spaces_list_both_families_and_load_dispatches_on_the_yaml():
    assert {"tiny", "hat-wmt", "automoe-wmt", "lm-tiny", "lm-small"} <= set(shipped_spaces())
    for name in ("lm-tiny", "lm-small"):
        for sp in (
            SearchSpace.load(name),
            LMSearchSpace.load(name),
            load_space(name),
            load_space(SPACES_DIR / f"{name}.yaml"),
        ):
            assert type(sp) is LMSearchSpace and sp.family is DECODER_ONLY and sp.name == name
    assert type(load_space("tiny")) is SearchSpace and load_space("tiny") == SearchSpace.load("tiny")


def test_space_dicts_round_trip_with_their_family():
    lm, ed = LM_SPACES["lm-tiny"], SearchSpace.load("tiny")
    assert lm.to_dict()["family"] == "decoder-only" and "family" not in ed.to_dict()
    assert space_from_dict(lm.to_dict()) == lm == SearchSpace.from_dict(lm.to_dict())
    assert space_from_dict(ed.to_dict()) == ed


@pytest.mark.parametrize(
    "bad, match",
    [
        ({**MICRO, "family": "nope"}, "family 'nope' is not a model family"),
        ({k: v for k, v in MICRO.items() if k != "decoder"}, "missing key 'decoder'"),
        ({**MICRO, "decoder": {**MICRO["decoder"], "heads": [3]}}, "not divisible by 3 heads"),
        ({**MICRO, "decoder": {**MICRO["decoder"], "cross_heads": [1]}}, "no cross attention"),
        ({**MICRO, "decoder": {k: v for k, v in MICRO["decoder"].items() if k != "experts"}}, "decoder lacks experts"),
    ],
)
def test_malformed_lm_space_is_a_user_error(bad, match):
    with pytest.raises(UserError, match=match):
        space_from_dict(bad)


def test_lm_size_matches_brute_force_enumeration_on_a_micro_space():
    micro = space_from_dict(MICRO)
    seen = {micro.sample(s).arch_id for s in range(20000)}
    # a layer: heads 2 x (2 + 4) ffn = 12; depth 1 or 2 -> 12 + 144; embed 2; top_k 2
    assert micro.size() == 2 * 2 * (12 + 144) == len(seen)


def test_lm_sampling_is_seeded_covers_every_value_and_stays_within_the_extremes():
    space = LM_SPACES["lm-tiny"]
    assert [a.arch_id for a in space.sample_n(20, seed=3)] == [a.arch_id for a in space.sample_n(20, seed=3)]
    archs = space.sample_n(300, seed=0)
    assert len({a.arch_id for a in archs}) == 300 and all(isinstance(a, LMArch) for a in archs)
    assert {h for a in archs for _, _, layer in a.layers for h in layer.experts} == set(space.decoder.expert_sizes)
    assert {len(layer.experts) for a in archs for _, _, layer in a.layers} == set(space.decoder.experts)
    assert {a.top_k for a in archs} == set(space.top_k)
    big, small = space.largest(), space.smallest()
    for a in archs:
        assert small.embed_dim <= a.embed_dim <= big.embed_dim
        assert len(small.decoder.layers) <= len(a.decoder.layers) <= len(big.decoder.layers)
        assert param_count(small).total <= param_count(a).total <= param_count(big).total


def test_lm_dense_variant_violations_and_encoding():
    space = LM_SPACES["lm-tiny"]
    dense = space.dense()
    assert dense.is_dense and not space.is_dense and all(a.is_dense and space.contains(a) for a in dense.sample_n(20))
    a = space.sample(5)
    bad = LMArch(
        decoder=StackArch(100, a.decoder.layers + (LayerArch(3, (7,)),) * 3), top_k=3, qkv_dim=64, vocab_size=5
    )
    v = space.violations(bad)
    for needle in (
        "vocab_size: 5",
        "qkv_dim: 64",
        "top_k: 3",
        "decoder.embed_dim: 100",
        "decoder.layers (count)",
        "decoder.layers[5].heads: 3",
        "decoder.layers[5].experts[0]: 7",
    ):
        assert any(x.startswith(needle) for x in v), (needle, v)
    with pytest.raises(UserError, match="outside space 'lm-tiny'"):
        space.validate(bad)
    # another family's arch is one violation, in both directions
    ed = SearchSpace.load("tiny").sample(0)
    assert space.violations(ed) == ["family: 'encoder-decoder' is not allowed (allowed: decoder-only)"]
    assert SearchSpace.load("tiny").violations(a) == [
        "family: 'decoder-only' is not allowed (allowed: encoder-decoder)"
    ]
    x = space.encode(space.sample_n(5, seed=1))
    assert x.shape == (5, len(space.feature_names())) and space.encode(a).shape == (len(space.feature_names()),)
    row = dict(zip(space.feature_names(), space.encode(space.smallest())))
    assert row["dec.layers"] == 2 and row["dec0.expert0"] == 256 and row["dec3.heads"] == 0 and row["top_k"] == 1


def test_lm_sample_count_is_bounded_by_the_space():
    micro = space_from_dict(MICRO)
    with pytest.raises(UserError, match="holds 624 archs"):
        micro.sample_n(625)
    assert len(micro.sample_n(624, seed=0)) == 624


@settings(max_examples=40, deadline=None)
@given(lm_names, seeds)
def test_lm_samples_are_valid_and_round_trip(name, seed):
    space = LM_SPACES[name]
    a = space.sample(seed)
    assert space.violations(a) == []
    for b in (Arch.from_json(a.to_json()), LMArch.from_json(a.to_json(indent=2))):
        assert b == a and b.arch_id == a.arch_id


@settings(max_examples=40, deadline=None)
@given(lm_names, seeds, seeds, st.floats(min_value=0.0, max_value=1.0))
def test_lm_mutation_and_crossover_stay_in_space(name, s1, s2, prob):
    space = LM_SPACES[name]
    a, b = space.sample(s1), space.sample(s2)
    m = space.mutate(a, s2, prob)
    c = space.crossover(a, m, s1)
    for x in (m, c, space.crossover(a, b, s2)):
        assert space.violations(x) == [], x.to_json()
        assert Arch.from_json(x.to_json()) == x
    assert space.mutate(a, s1, 0.0) == a and space.crossover(a, a, s2) == a


# ---- what lm-tiny.yaml promises in its header ---------------------------------------------------


def test_lm_tiny_header_states_its_ffn_share_and_stays_cpu_small():
    space = LM_SPACES["lm-tiny"]
    share = np.array([protocol_cost(a).ffn_share for a in space.sample_n(500, seed=0)])
    header = (SPACES_DIR / "lm-tiny.yaml").read_text()
    stated = re.search(r"median ([0-9.]+), p10 ([0-9.]+), p90 ([0-9.]+)", header).groups()
    got = (np.median(share), np.percentile(share, 10), np.percentile(share, 90))
    assert [float(x) for x in stated] == pytest.approx(got, abs=5e-4)
    assert 0.45 < got[0] < 0.75  # experts are a real share of the work, as in open MoE LMs
    assert param_count(space.largest()).total <= 10_000_000
    assert space.vocab_size == 4096


def test_a_context_longer_than_a_machine_can_time_is_one_line():
    from moenas.arch.protocol import MAX_CONTEXT, LMProtocol

    assert LMProtocol(prompt_len=MAX_CONTEXT - 32, decode_steps=32).prompt_len == MAX_CONTEXT - 32
    with pytest.raises(UserError, match=f"at most {MAX_CONTEXT}"):
        LMProtocol(prompt_len=100_000_000)
