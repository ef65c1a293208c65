"""Encoder-decoder features are what they were before the decoder-only family had features:
every value of ``ArchFeatures`` (default, with a space's layout, under an odd protocol), the
synthetic devices' latencies, and what ``load_dataset`` reads from the shipped datasets equal
``fixtures/encoder_decoder_features.*``, recorded before that change (bit for bit)."""

import json
from pathlib import Path

import numpy as np
import pytest

from moenas.arch import SearchSpace
from moenas.arch.protocol import LatencyProtocol
from moenas.data.profiles import shipped
from moenas.predictor.dataset import load_dataset
from moenas.predictor.features import ArchFeatures
from moenas.predictor.synthetic import DEVICES, make_profiles, true_latency
from moenas.predictor.transfer import TRANSFER_FEATURES

FIXTURES = Path(__file__).parent / "fixtures"
VALUES = np.load(FIXTURES / "encoder_decoder_features.npz")
RECORDS = json.loads((FIXTURES / "encoder_decoder_features.json").read_text())
ODD = LatencyProtocol(batch=2, src_len=7, decoder_steps=3, beam=1)
SPACES = [("tiny", 20), ("automoe-wmt", 10)]


@pytest.mark.parametrize("space,n", SPACES)
@pytest.mark.parametrize("label,kw", [("plain", {}), ("space", {"space": True}), ("odd", {"protocol": ODD})])
def test_feature_matrices_are_unchanged(space, n, label, kw):
    archs = SearchSpace.load(space).sample_n(n, seed=0)
    kw = {**kw, "space": space} if kw.get("space") else kw
    f = ArchFeatures(**kw).fit(archs)
    assert list(f.feature_names_) == RECORDS[f"{space}/{label}"]
    np.testing.assert_array_equal(f.transform(archs), VALUES[f"{space}/{label}"])


@pytest.mark.parametrize("space,n", SPACES)
def test_synthetic_latencies_are_unchanged(space, n):
    archs = SearchSpace.load(space).sample_n(n, seed=0)
    for d in ("a", "c"):
        truth = true_latency(archs, DEVICES[d])
        assert list(truth) == ["encoder", "decoder", "total"]
        for comp, v in truth.items():
            np.testing.assert_array_equal(v, VALUES[f"{space}/synthetic-{d}/{comp}"])
    df, _ = make_profiles(space, 12, "a", seed=1)
    np.testing.assert_array_equal(df["median_ms"].to_numpy(float), VALUES[f"{space}/profiles_median"])


@pytest.mark.parametrize("name", ["tiny-cpu-ort", "automoe-wmt-cpu-ort"])
@pytest.mark.parametrize("target", ["total", "encoder", "decoder"])
def test_shipped_datasets_read_and_featurise_as_before(name, target):
    """Same rows, protocol, noise floor, reference and features: a predictor fitted on them
    predicts the same numbers."""
    ds = load_dataset([shipped(name)], target)
    key = f"shipped/{name}/{target}"
    rec = RECORDS[key]
    assert ds.arch_ids == rec["arch_ids"] and ds.protocol.to_dict() == rec["protocol"]
    assert (ds.protocol_id, ds.space, ds.noise_floor, ds.threads) == (
        rec["protocol_id"],
        rec["space"],
        rec["noise_floor"],
        rec["threads"],
    )
    assert ds.reference == rec["reference"]
    np.testing.assert_array_equal(ds.y, VALUES[f"{key}/y"])
    f = ArchFeatures(protocol=ds.protocol, space=ds.space).fit(ds.archs)
    assert f.feature_names_ == rec["names"]
    np.testing.assert_array_equal(f.transform(ds.archs), VALUES[f"{key}/X"])


def test_transfer_features_are_unchanged():
    assert list(TRANSFER_FEATURES) == RECORDS["TRANSFER_FEATURES"]
