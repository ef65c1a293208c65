"""Model families: one owner of the timed components, and everything that lists them derives
from it without changing what an encoder-decoder run writes."""

import json

import pandas as pd
import pytest
from registries import family_registries, package_modules

from moenas.arch import SearchSpace
from moenas.arch.cost import protocol_cost
from moenas.arch.errors import UserError
from moenas.arch.family import (
    DECODER_ONLY,
    ENCODER_DECODER,
    FAMILIES,
    TOTAL,
    FamilyRegistry,
    ModelFamily,
    all_row_components,
    all_targets,
    get_family,
)
from moenas.arch.protocol import LatencyProtocol, LMProtocol
from moenas.data import profiles as P
from moenas.predictor.names import TARGETS
from moenas.profiler.backend_base import PreparedWorkload
from moenas.profiler.op_profile import sum_ops

SHIPPED = ["tiny-cpu-ort", "tiny-cpu-ort-2t", "tiny-cpu-torch", "automoe-wmt-cpu-ort"]


def test_encoder_decoder_names_its_parts_in_the_order_datasets_and_predictors_always_used():
    assert ENCODER_DECODER.row_components == ("encoder", "decoder", "total")
    assert ENCODER_DECODER.targets == ("total", "encoder", "decoder")
    assert DECODER_ONLY.row_components == ("prefill", "decode", "total")
    assert DECODER_ONLY.targets == ("total", "prefill", "decode")
    # the unions keep the encoder-decoder names first, in their order
    assert P.COMPONENTS == all_row_components() == ("encoder", "decoder", "total", "prefill", "decode")
    assert TARGETS == all_targets() == ("total", "encoder", "decoder", "prefill", "decode")
    assert LatencyProtocol.family is ENCODER_DECODER and PreparedWorkload.family is ENCODER_DECODER
    assert LMProtocol.family is DECODER_ONLY
    assert get_family("encoder-decoder") is ENCODER_DECODER and get_family("decoder-only") is DECODER_ONLY
    assert list(FAMILIES) == ["encoder-decoder", "decoder-only"]


def test_a_family_is_refused_when_its_components_cannot_name_rows():
    for bad in [(), ("a", "a"), ("a", TOTAL)]:
        with pytest.raises(ValueError):
            ModelFamily("x", bad)
    with pytest.raises(UserError, match="unknown model family 'nope'"):
        get_family("nope")


def test_the_protocol_id_did_not_change_when_protocols_gained_a_family():
    """The family is a class attribute, not a field: every shipped row keeps its protocol id."""
    assert "family" not in LatencyProtocol().to_dict()
    for name in SHIPPED:
        df, meta = P.read_profiles(P.shipped(name))
        assert set(df["protocol_id"]) == {LatencyProtocol().protocol_id}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_metadata_is_recomputed_exactly_from_its_rows(name):
    """Counts and per-component noise floors, derived through the family, equal what the
    shipped sidecar recorded before families existed."""
    df, meta = P.read_profiles(P.shipped(name))
    assert P.counts(df) == meta["counts"]
    assert {c: P.noise_floor(df, c) for c in P.present_components(df)} == meta["noise_floor"]["by_component"]
    assert P.present_components(df) == list(ENCODER_DECODER.row_components)


def test_rewriting_a_shipped_dataset_keeps_its_rows_and_metadata(tmp_path):
    df, meta = P.read_profiles(P.shipped("tiny-cpu-torch"))
    out = tmp_path / "copy.parquet"
    P.write_profiles(out, df, meta)
    df2, meta2 = P.read_profiles(out)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), df2.reset_index(drop=True))
    drop = {"updated"}
    assert {k: v for k, v in json.loads(json.dumps(meta2, default=str)).items() if k not in drop} == {
        k: v for k, v in json.loads(json.dumps(meta, default=str)).items() if k not in drop
    }


def test_the_cost_model_costs_each_component_of_the_family():
    arch = SearchSpace.load("tiny").sample(3)
    cost = protocol_cost(arch)
    assert tuple(cost.components) == LatencyProtocol.family.components
    assert cost.total_flops == sum(c.flops for c in cost.components.values())
    s = cost.summary()
    assert [k for k in s if k.startswith("flops_") and k.count("_") == 1] == [
        "flops_total",
        "flops_encoder",
        "flops_decoder",
    ]


def test_the_cost_model_costs_each_component_of_the_decoder_only_family():
    arch = SearchSpace.load("lm-tiny").sample(3)
    cost = protocol_cost(arch)
    assert tuple(cost.components) == LMProtocol.family.components == ("prefill", "decode")
    assert cost.total_flops == sum(c.flops for c in cost.components.values())
    s = cost.summary()
    assert [k for k in s if k.startswith("flops_") and k.count("_") == 1] == [
        "flops_total",
        "flops_prefill",
        "flops_decode",
    ]


def test_step_times_each_component_in_order_and_their_sum():
    calls = []

    class Fake(PreparedWorkload):
        family = ModelFamily("three", ("a", "b", "c"))

        def run_a(self):
            calls.append("a")

        def run_b(self):
            calls.append("b")

        def run_c(self):
            calls.append("c")

        def run_encoder(self):  # the encoder-decoder hooks are abstract in the base
            raise AssertionError

        run_decoder = run_encoder

        def logits(self):
            raise AssertionError

    t = Fake().step()
    assert calls == ["a", "b", "c"] and list(t) == ["a", "b", "c", TOTAL]
    assert t[TOTAL] == pytest.approx(t["a"] + t["b"] + t["c"], abs=1e-9)


def test_op_tables_of_any_number_of_components_sum_per_op():
    assert sum_ops({"MatMul": 1.0}, {"MatMul": 2.0, "Add": 0.5}, {"Add": 0.25}) == {"MatMul": 3.0, "Add": 0.75}
    assert sum_ops({"MatMul": 1.0}) == {"MatMul": 1.0}


# ---- FamilyRegistry: what differs between families is looked up, not branched on ------------------


def test_every_family_registry_knows_every_family():
    """Adding a family = registering it in each of these; this names the registries that lack it.
    (The floors below search; tests/search/test_family_registries.py checks search's.)"""
    registries = family_registries(package_modules("moenas.arch", "moenas.data", "moenas.profiler", "moenas.predictor"))
    short = {name.rsplit(".", 1)[1] for name in registries}
    assert {"ARCH_CLASSES", "SPACE_CLASSES", "PROTOCOLS", "WORKLOADS", "PREPARED", "STACKS", "ARRAYS"} <= short
    assert {name: r.missing() for name, r in registries.items() if r.missing()} == {}


def test_a_registry_is_filled_by_declared_families_and_its_miss_names_the_known_ones():
    reg = FamilyRegistry("widget", {ENCODER_DECODER: "w"})
    assert reg.for_family(ENCODER_DECODER) == reg.for_family("encoder-decoder") == reg["encoder-decoder"] == "w"
    assert list(reg) == ["encoder-decoder"] and reg.missing() == ["decoder-only"]
    with pytest.raises(UserError, match=r"^no widget for model family 'decoder-only' \(known: encoder-decoder\)$"):
        reg.for_family(DECODER_ONLY)
    with pytest.raises(UserError, match="no widget for model family 'nope'"):
        reg.for_family("nope")

    @reg.register
    class LMWidget:
        family = DECODER_ONLY

    assert reg.for_family(DECODER_ONLY) is LMWidget and not reg.missing()
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("again", ENCODER_DECODER)
    with pytest.raises(TypeError, match="declares no model family"):
        FamilyRegistry("gadget", ["no family here"])
    assert list(FamilyRegistry("protocol", [LMProtocol, LatencyProtocol])) == ["decoder-only", "encoder-decoder"]
