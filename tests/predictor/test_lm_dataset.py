"""Profile datasets of decoder-only language models: rows of components prefill, decode and
total whose protocol columns (family, batch, prompt_len, decode_steps, routing, seeds) read
back as an LMProtocol; targets are the family's. The rows are synthetic
(moenas.predictor.synthetic: a known function of the LM cost model plus 1.5% noise)."""

import numpy as np
import pandas as pd
import pytest

from moenas.arch import LMArch, SearchSpace, UserError
from moenas.arch.protocol import LatencyProtocol, LMProtocol
from moenas.data.profiles import read_profiles, write_profiles
from moenas.predictor.dataset import load_dataset
from moenas.predictor.synthetic import DEVICES, make_profiles, true_latency

PROTOCOL = LMProtocol(prompt_len=64, decode_steps=8)  # not the default: read back from the rows


@pytest.fixture(scope="module")
def lm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "lm.parquet"
    df, meta = make_profiles("lm-tiny", 40, "a", seed=0, protocol=PROTOCOL)
    write_profiles(path, df, meta)
    return path


def test_rows_carry_the_lm_protocol_and_components(lm_file):
    df, _ = read_profiles(lm_file)
    assert list(df["component"].unique()) == ["prefill", "decode", "total"]
    assert set(df["family"]) == {"decoder-only"} and df["src_len"].isna().all()
    assert set(df["prompt_len"]) == {64} and set(df["decode_steps"]) == {8}
    assert set(df["protocol_id"]) == {PROTOCOL.protocol_id}


@pytest.mark.parametrize("target", ["total", "prefill", "decode"])
def test_each_target_loads_with_its_protocol(lm_file, target):
    ds = load_dataset([lm_file], target)
    assert ds.protocol == PROTOCOL and ds.protocol_id == PROTOCOL.protocol_id and ds.space == "lm-tiny"
    assert len(ds) == 40 and all(isinstance(a, LMArch) for a in ds.archs)
    assert ds.noise_floor is not None and ds.describe()["protocol"]["family"] == "decoder-only"
    truth = true_latency(ds.archs, DEVICES["a"], PROTOCOL)[target]
    assert np.all(np.abs(np.log(ds.y / truth)) < 0.1)  # the known latency plus its noise


def test_targets_are_the_familys(lm_file, tmp_path):
    with pytest.raises(
        UserError, match=r"target 'encoder' is not one of the decoder-only family's \(total, prefill, decode\)"
    ):
        load_dataset([lm_file], "encoder")
    ed = tmp_path / "ed.parquet"
    write_profiles(ed, *make_profiles("tiny", 10, "a", seed=0))
    with pytest.raises(
        UserError, match=r"target 'prefill' is not one of the encoder-decoder family's \(total, encoder, decoder\)"
    ):
        load_dataset([ed], "prefill")
    assert load_dataset([ed], "decoder").protocol == LatencyProtocol()
    with pytest.raises(UserError, match="different model families"):
        load_dataset([ed, lm_file], "total")


def test_rows_of_two_families_or_a_mislabelled_arch_are_refused(lm_file, tmp_path):
    lm, meta = read_profiles(lm_file)
    ed, _ = make_profiles("tiny", 5, "a", seed=0)
    both = tmp_path / "both.parquet"
    write_profiles(both, pd.concat([lm, ed], ignore_index=True), meta)
    with pytest.raises(UserError, match=r"rows of 2 model families \(decoder-only, encoder-decoder\)"):
        load_dataset([both], "total")
    arch = SearchSpace.load("lm-tiny").sample(0)
    ed["arch_json"], ed["arch_id"] = arch.to_json(), arch.arch_id  # an LM arch in encoder-decoder rows
    bad = tmp_path / "bad.parquet"
    write_profiles(bad, ed, meta)
    with pytest.raises(UserError, match=f"arch {arch.arch_id} is decoder-only, its rows say encoder-decoder"):
        load_dataset([bad], "total")
