"""Search space: sampling, validation, mutation and crossover keep archs valid (property tests)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moenas.arch import Arch, SearchSpace, UserError, shipped_spaces
from moenas.arch.arch import LayerArch, StackArch

SPACES = {name: SearchSpace.load(name) for name in shipped_spaces()}
space_names = st.sampled_from(sorted(SPACES))
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def test_shipped_spaces_are_the_three_asked_for():
    assert {"tiny", "hat-wmt", "automoe-wmt"} <= set(SPACES)
    assert SPACES["hat-wmt"].encoder.experts == (1,) and SPACES["hat-wmt"].decoder.experts == (1,)
    assert SPACES["automoe-wmt"].decoder.experts == (1, 2, 3, 4, 5, 6)


@settings(max_examples=60, deadline=None)
@given(space_names, seeds)
def test_sampled_archs_are_valid_and_round_trip(name, seed):
    space = SPACES[name]
    a = space.sample(seed)
    assert space.violations(a) == []
    b = Arch.from_json(a.to_json())
    assert b == a and b.arch_id == a.arch_id
    assert Arch.from_json(a.to_json(indent=2)).arch_id == a.arch_id


@settings(max_examples=60, deadline=None)
@given(space_names, seeds, seeds, st.floats(min_value=0.0, max_value=1.0))
def test_mutation_and_crossover_stay_in_space(name, s1, s2, prob):
    space = SPACES[name]
    a, b = space.sample(s1), space.sample(s2)
    m = space.mutate(a, s2, prob)
    c = space.crossover(a, m, s1)
    for x in (m, c, space.crossover(a, b, s2)):
        assert space.violations(x) == [], x.to_json()
        assert Arch.from_json(x.to_json()) == x


@settings(max_examples=30, deadline=None)
@given(space_names, seeds)
def test_mutation_with_prob_zero_is_identity_and_crossover_of_twins_too(name, seed):
    space = SPACES[name]
    a = space.sample(seed)
    assert space.mutate(a, seed, 0.0) == a
    assert space.crossover(a, a, seed) == a


def test_mutation_changes_expert_count_by_trimming_or_extending():
    space = SPACES["automoe-wmt"]
    a = space.sample(1)
    seen_lengths = set()
    for seed in range(200):
        m = space.mutate(a, seed, 0.5)
        for _old, new in zip(a.encoder.layers, m.encoder.layers):
            seen_lengths.add(len(new.experts))
            assert 1 <= len(new.experts) <= 6
    assert len(seen_lengths) > 3


def test_sampling_is_seeded_and_covers_every_value():
    space = SPACES["tiny"]
    assert [a.arch_id for a in space.sample_n(20, seed=3)] == [a.arch_id for a in space.sample_n(20, seed=3)]
    archs = space.sample_n(300, seed=0)
    assert len({a.arch_id for a in archs}) == 300
    sizes = {h for a in archs for _, _, layer in a.layers for h in layer.experts}
    counts = {len(layer.experts) for a in archs for _, _, layer in a.layers}
    assert sizes == set(space.encoder.expert_sizes) and counts == set(space.encoder.experts)


def test_arch_id_is_stable_across_processes():
    # a literal: the hash of the canonical form must never change silently
    a = SPACES["tiny"].smallest()
    assert a.to_json().startswith('{"decoder":{"embed_dim":64')
    assert a.arch_id == "427ee49e7b35"
    assert a.arch_id == Arch.from_dict(json.loads(a.to_json())).arch_id


def test_validation_names_the_field_and_allowed_values():
    space = SPACES["automoe-wmt"]
    a = space.sample(0)
    layer = a.decoder.layers[0]
    bad = Arch(
        a.encoder,
        StackArch(
            a.decoder.embed_dim,
            (LayerArch(layer.heads, (4096,) + layer.experts[1:], layer.cross_heads, 7),) + a.decoder.layers[1:],
        ),
        1,
        512,
        32000,
    )
    v = space.violations(bad)
    assert any(s.startswith("decoder.layers[0].experts[0]: 4096") and "1024, 2048, 3072" in s for s in v)
    assert any(s.startswith("decoder.layers[0].cross_span: 7") for s in v)
    with pytest.raises(UserError, match="outside space"):
        space.validate(bad)


@pytest.mark.parametrize(
    "text, match",
    [
        ("{", "malformed arch JSON"),
        ("[]", "must be a JSON object"),
        ('{"encoder": {"embed_dim": 64, "layers": []}, "decoder": {}}', "encoder.layers"),
        (
            '{"encoder": {"embed_dim": 64, "layers": [{"heads": 2, "experts": ["x"]}]}, '
            '"decoder": {"embed_dim": 64, "layers": [{"heads": 2, "experts": [128], "cross_heads": 2, "cross_span": 1}]}}',
            r"encoder.layers\[0\].experts\[0\]",
        ),
        ('{"schema_version": 99, "encoder": {}, "decoder": {}}', "schema_version"),
    ],
)
def test_malformed_arch_json_is_a_user_error(text, match):
    with pytest.raises(UserError, match=match):
        Arch.from_json(text)


def test_size_matches_brute_force_enumeration_on_a_micro_space():
    micro = SearchSpace.from_dict(
        {
            "name": "micro",
            "vocab_size": 16,
            "qkv_dim": 4,
            "top_k": [1, 2],
            "encoder": {"embed_dim": [4], "layers": [1, 2], "heads": [1, 2], "experts": [1, 2], "expert_sizes": [4, 8]},
            "decoder": {
                "embed_dim": [4, 8],
                "layers": [1],
                "heads": [1],
                "experts": [1],
                "expert_sizes": [4],
                "cross_heads": [1],
                "cross_span": [1, 2],
            },
        }
    )
    seen = {micro.sample(s).arch_id for s in range(100000)}
    # encoder layer choices: heads 2 x (2 + 4) ffn = 12; depth 1 or 2 -> 12 + 144
    # decoder: 2 embeds x span (1 if 1 enc layer, else 2); top_k 2
    expected = 2 * (12 * 2 * 1 + 144 * 2 * 2)
    assert micro.size() == expected == len(seen)


def test_encoding_has_fixed_length_and_names():
    for space in SPACES.values():
        x = space.encode(space.sample_n(5, seed=1))
        assert x.shape == (5, len(space.feature_names()))
        one = space.encode(space.sample(1))
        assert one.shape == (len(space.feature_names()),)
    tiny = SPACES["tiny"]
    a = tiny.smallest()
    row = dict(zip(tiny.feature_names(), tiny.encode(a)))
    assert row["enc.layers"] == 2 and row["enc2.heads"] == 0 and row["dec0.expert0"] == 128 and row["dec0.expert1"] == 0


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"name": "x"}, "missing key"),
        (
            {
                "name": "x",
                "vocab_size": 8,
                "qkv_dim": 6,
                "encoder": {"embed_dim": 4, "layers": 1, "heads": 4, "experts": 1, "expert_sizes": 4},
                "decoder": {
                    "embed_dim": 4,
                    "layers": 1,
                    "heads": 4,
                    "experts": 1,
                    "expert_sizes": 4,
                    "cross_heads": 1,
                    "cross_span": 1,
                },
            },
            "not divisible",
        ),
        (
            {
                "name": "x",
                "vocab_size": 8,
                "qkv_dim": 4,
                "encoder": {"embed_dim": 4, "layers": 1, "heads": 1, "experts": [], "expert_sizes": 4},
                "decoder": {
                    "embed_dim": 4,
                    "layers": 1,
                    "heads": 1,
                    "experts": 1,
                    "expert_sizes": 4,
                    "cross_heads": 1,
                    "cross_span": 1,
                },
            },
            "experts",
        ),
    ],
)
def test_malformed_space_is_a_user_error(bad, match):
    with pytest.raises(UserError, match=match):
        SearchSpace.from_dict(bad)


def test_unknown_space_lists_the_shipped_ones():
    with pytest.raises(UserError, match="tiny"):
        SearchSpace.load("no-such-space")


def test_largest_and_smallest_bound_every_sample():
    space = SPACES["tiny"]
    big, small = space.largest(), space.smallest()
    for a in space.sample_n(50, seed=2):
        for st_a, st_big, st_small in (
            (a.encoder, big.encoder, small.encoder),
            (a.decoder, big.decoder, small.decoder),
        ):
            assert st_small.embed_dim <= st_a.embed_dim <= st_big.embed_dim
            assert len(st_small.layers) <= len(st_a.layers) <= len(st_big.layers)
            for layer in st_a.layers:
                assert len(layer.experts) <= len(st_big.layers[0].experts)
                assert max(layer.experts) <= st_big.layers[0].experts[0]
