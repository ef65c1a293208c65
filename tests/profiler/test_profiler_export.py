"""ONNX export: onnxruntime matches PyTorch; the exported MoE layer computes only routed rows."""

import json
import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from moenas.arch import Arch, LayerArch, SearchSpace, StackArch
from moenas.arch.model import build_model
from moenas.cli import main
from moenas.profiler.onnx_export import DecoderStepGraph, EncoderGraph, ExportedArch, example_inputs, export_arch
from moenas.profiler.op_profile import expert_rows, trace_node_events

ATOL = 1e-4  # fp32, max abs


def _session(model_bytes, profile_prefix=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def assert_parity(arch, model, exported, shapes=((1, 30, 0), (5, 1, 7), (2, 4, 1))):
    """Both graphs vs torch on random inputs for several (batch, src_len, past_len)."""
    for graph, module in ((exported.encoder, EncoderGraph(model)), (exported.decoder, DecoderStepGraph(model))):
        sess = _session(graph)
        names = [i.name for i in sess.get_inputs()]
        for batch, src_len, past_len in shapes:
            feeds = example_inputs(arch, batch, src_len, past_len, seed=batch * 100 + src_len)
            got = sess.run(None, {n: feeds[n].numpy() for n in names})
            with torch.no_grad():
                want = module(*[feeds[n] for n in names])
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.shape == tuple(w.shape)
                err = float(np.abs(g - w.numpy()).max()) if g.size else 0.0
                assert err <= ATOL, (arch.arch_id, batch, src_len, past_len, err)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_archs_match_torch(seed):
    arch = SearchSpace.load("tiny").sample(seed)
    model = build_model(arch, 0).eval()
    assert_parity(arch, model, export_arch(arch, model=model))


def _moe_in_space(space_name):
    """A cheap arch of a big space that still has MoE layers in encoder and decoder."""
    space = SearchSpace.load(space_name)
    a = space.smallest()
    e_sizes, d_sizes = space.encoder.expert_sizes, space.decoder.expert_sizes
    n_e = max(space.encoder.experts)
    enc = list(a.encoder.layers)
    enc[0] = LayerArch(enc[0].heads, tuple(e_sizes[i % len(e_sizes)] for i in range(min(n_e, 3))))
    dec = list(a.decoder.layers)
    dec[0] = LayerArch(
        dec[0].heads,
        tuple(d_sizes[i % len(d_sizes)] for i in range(min(max(space.decoder.experts), 2))),
        dec[0].cross_heads,
        dec[0].cross_span,
    )
    arch = Arch(
        StackArch(a.encoder.embed_dim, tuple(enc)),
        StackArch(a.decoder.embed_dim, tuple(dec)),
        a.top_k,
        a.qkv_dim,
        a.vocab_size,
    )
    return space, arch


@pytest.mark.parametrize("space_name", ["hat-wmt", "automoe-wmt"])  # ~4-12 s each (32k vocab embeddings)
def test_big_space_arch_matches_torch(space_name):
    space, arch = _moe_in_space(space_name)
    if space.contains(arch) is False:  # hat-wmt is dense: use its smallest arch as is
        arch = space.smallest()
    space.validate(arch)
    model = build_model(arch, 0).eval()
    assert_parity(arch, model, export_arch(arch, model=model), shapes=((1, 30, 0), (5, 3, 2)))


def _force_all_to(model, expert: int, value: float = 50.0):
    """Route every token of every MoE layer to ``expert``: the FFN's input norm gets a constant
    large channel 0 (weight 0, bias ``value``), and only that expert's router row reads it."""
    for layer in list(model.enc_layers) + list(model.dec_layers):
        ffn = layer.ffn
        if not hasattr(ffn, "router"):
            continue
        norm = layer.norm2 if hasattr(layer, "attn") else layer.norm3
        with torch.no_grad():
            norm.weight[0] = 0.0
            norm.bias[0] = value
            ffn.router.weight.zero_()
            ffn.router.weight[expert, 0] = 1.0


def _routing_arch(top_k=1):
    return Arch(
        encoder=StackArch(64, (LayerArch(2, (96, 160, 224)), LayerArch(4, (96, 160)))),
        decoder=StackArch(64, (LayerArch(2, (96, 160, 224, 288), 2, 2),)),
        top_k=top_k,
        qkv_dim=128,
        vocab_size=1000,
    )


def test_all_tokens_to_one_expert_matches_torch():
    arch = _routing_arch()
    model = build_model(arch, 0).eval()
    _force_all_to(model, expert=1)
    src = torch.randint(4, 1000, (1, 30))
    with torch.no_grad():
        model.encode(src)
    counts = model.expert_counts()
    assert counts == {"encoder.0": [0, 30, 0], "encoder.1": [0, 30]}  # forcing works
    assert_parity(arch, model, export_arch(arch, model=model))


def test_experts_without_tokens_match_torch():
    # one source token, one decoder row: with top-1, every MoE layer leaves experts empty
    arch = _routing_arch()
    model = build_model(arch, 0).eval()
    src = torch.randint(4, 1000, (1, 1))
    with torch.no_grad():
        model.encode(src)
    assert all(0 in c for c in model.expert_counts().values())
    assert_parity(arch, model, export_arch(arch, model=model), shapes=((1, 1, 0), (1, 1, 3)))


@pytest.mark.parametrize("top_k", [1, 2])
def test_exported_moe_computes_only_routed_rows(tmp_path, top_k):
    """onnxruntime's profile: the expert GEMMs of a layer together see T*k rows, not T*E."""
    arch = _routing_arch(top_k)
    model = build_model(arch, 0).eval()
    exported = export_arch(arch, model=model)
    t = 30
    sess = _session(exported.encoder, str(tmp_path / "enc"))
    sess.run(None, {"src": np.random.default_rng(0).integers(4, 1000, (1, t))})
    rows = expert_rows(trace_node_events(sess.end_profiling()))
    for layer, n_exp in (("enc_layers.0", 3), ("enc_layers.1", 2)):
        per_expert = [rows.get((layer, e), 0) for e in range(n_exp)]
        assert sum(per_expert) == t * top_k, (layer, per_expert)
        if top_k < n_exp:
            assert sum(per_expert) < t * n_exp

    # forced routing: the chosen expert gets all T rows, the others none
    _force_all_to(model, expert=0)
    exported = export_arch(arch, model=model)
    sess = _session(exported.encoder, str(tmp_path / "enc_forced"))
    sess.run(None, {"src": np.random.default_rng(0).integers(4, 1000, (1, t))})
    rows = expert_rows(trace_node_events(sess.end_profiling()))
    if top_k == 1:
        assert [rows.get(("enc_layers.0", e), 0) for e in range(3)] == [t, 0, 0]


def test_export_dir_roundtrip_and_manifest(tmp_path):
    arch = SearchSpace.load("tiny").sample(5)
    (tmp_path / "a.json").write_text(arch.to_json())
    out = tmp_path / "exp"
    assert main(["export", str(tmp_path / "a.json"), "--out", str(out), "--space", "tiny"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arch_id"] == arch.arch_id and manifest["opset"] == 17
    assert {"torch", "onnxruntime", "moenas"} <= set(manifest["versions"])
    assert [i["name"] for i in manifest["decoder"]["inputs"]][:2] == ["tokens", "cross_0_k"]
    assert manifest["decoder"]["outputs"][0]["name"] == "logits"
    loaded = ExportedArch.load(out)
    assert loaded.arch == arch
    sess = _session(str(out / "decoder.onnx"))
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in manifest["decoder"]["inputs"]]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["missing.json"], "no such file"),
        ("{not json", ["a.json"], "malformed arch JSON"),
        ("ARCH", ["a.json", "--space", "hat-wmt"], "outside space"),
        ("ARCH", ["a.json", "--space", "nope"], "unknown space"),
    ],
)
def test_export_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        text = SearchSpace.load("tiny").sample(0).to_json() if setup == "ARCH" else setup
        (tmp_path / "a.json").write_text(text)
    assert main(["export", *args, "--out", "exp"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "exp").exists()


def test_export_refuses_to_overwrite(tmp_path, capsys):
    arch = SearchSpace.load("tiny").sample(random.Random(1))
    (tmp_path / "a.json").write_text(arch.to_json())
    out = tmp_path / "exp"
    assert main(["export", str(tmp_path / "a.json"), "--out", str(out)]) == 0
    before = (out / "encoder.onnx").stat().st_mtime_ns
    assert main(["export", str(tmp_path / "a.json"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "encoder.onnx").stat().st_mtime_ns == before
    assert main(["export", str(tmp_path / "a.json"), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.slow  # the dynamo exporter takes ~15 s for one tiny arch on this machine
def test_dynamo_exporter_matches_torch_too():
    arch = _routing_arch()
    model = build_model(arch, 0).eval()
    assert_parity(arch, model, export_arch(arch, model=model, method="dynamo"), shapes=((1, 30, 0), (5, 1, 3)))
