"""The encoder-decoder family is exactly what it was before a second family existed: canonical
JSON, arch ids, every cost number, seeded sampling and evolution, protocol ids and model
outputs equal what ``fixtures/encoder_decoder.json`` recorded before that change."""

import json
from pathlib import Path

import pytest
import torch

from moenas.arch import Arch, SearchSpace
from moenas.arch.cost import protocol_cost
from moenas.arch.model import build_model
from moenas.arch.protocol import LatencyProtocol, protocol_from_dict

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "encoder_decoder.json").read_text())


@pytest.mark.parametrize("rec", FIXTURE["archs"], ids=lambda r: f"{r['space']}-{r['seed']}-{r['protocol']['beam']}")
def test_json_id_and_every_cost_number_are_unchanged(rec):
    arch = SearchSpace.load(rec["space"]).sample(rec["seed"])
    assert arch.to_json() == rec["json"] and arch.arch_id == rec["arch_id"]
    assert Arch.from_json(rec["json"]) == arch
    protocol = LatencyProtocol.from_dict(rec["protocol"])
    assert protocol_cost(arch, protocol).summary() == rec["summary"]  # exact: same floats, same keys
    if protocol == LatencyProtocol():
        assert protocol_cost(arch).summary() == rec["summary"]


@pytest.mark.parametrize("name", sorted(FIXTURE["samples"]))
def test_seeded_sampling_mutation_and_crossover_are_unchanged(name):
    rec, sp = FIXTURE["samples"][name], SearchSpace.load(name)
    a, b = sp.sample(11), sp.sample(12)
    assert [x.arch_id for x in sp.sample_n(20, seed=5)] == rec["sample_n_20_seed5"]
    assert [sp.mutate(a, s, pr).arch_id for s in range(5) for pr in (0.3, 0.7)] == rec["mutate"]
    assert [sp.crossover(a, b, s).arch_id for s in range(5)] == rec["crossover"]
    assert (sp.largest().arch_id, sp.smallest().arch_id, sp.dense().sample(4).arch_id) == (
        rec["largest"],
        rec["smallest"],
        rec["dense_sample"],
    )
    assert str(sp.size()) == rec["size"] and sp.feature_names() == rec["feature_names"]
    assert sp.encode(sp.sample_n(3, seed=1)).tolist() == rec["encode"]


@pytest.mark.parametrize("rec", FIXTURE["protocols"], ids=lambda r: r["id"])
def test_latency_protocol_dict_and_id_are_unchanged(rec):
    p = LatencyProtocol.from_dict(rec["dict"])
    assert p.to_dict() == rec["dict"]
    assert list(p.to_dict()) == ["batch", "src_len", "decoder_steps", "beam", "routing", "model_seed", "input_seed"]
    assert p.protocol_id == rec["id"] and p.arch_seed("abc123") == rec["seed"]
    assert protocol_from_dict(rec["dict"]) == p


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_model_outputs_are_unchanged(seed):
    rec = FIXTURE["model"][str(seed)]
    arch = SearchSpace.load("tiny").sample(seed)
    model = build_model(arch, seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, arch.vocab_size, (2, 9), generator=g)
    tgt = torch.randint(4, arch.vocab_size, (2, 6), generator=g)
    with torch.no_grad():
        full = model(src, tgt)
        states, pad = model.encode(src)
        cross = model.cross_kv(states, pad)
        _, cache = model.step(tgt[:, :1], None, cross)
        step, _ = model.step(tgt[:, 1:2], cache, cross)
        beams = model.generate(src, beam=3, max_len=5)
    # recorded on one machine: another CPU's kernels may round the last bits differently
    torch.testing.assert_close(full[:, :, :6], torch.tensor(rec["full"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(step[:, :6], torch.tensor(rec["step"]), rtol=1e-5, atol=1e-6)
    assert beams == rec["generate_beam3"]
