"""The deployable result: export with trained weights (ONNX output = torch output), the
onnxruntime translator (= the torch model's greedy and beam output), `moenas translate`, and
bad input (an arch outside the checkpoint's space, a standalone checkpoint of another arch)."""
import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

from moenas.arch import Arch, SearchSpace
from moenas.cli import main
from moenas.profiler.onnx_export import ExportedArch, example_inputs
from moenas.search.checkpoint import load_tokenizer, model_for_arch
from moenas.search.deploy import OnnxTranslator, export_trained
from moenas.search.evaluation import translate
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

from toy_corpus import synthetic_pairs, write_parallel_dir

MICRO = {
    "name": "micro", "vocab_size": 97, "qkv_dim": 16, "top_k": [1, 2],
    "encoder": {"embed_dim": [16, 24], "layers": [1, 2], "heads": [2, 4], "experts": [1, 2, 3], "expert_sizes": [16, 32]},
    "decoder": {"embed_dim": [16, 24], "layers": [1, 2], "heads": [2, 4], "cross_heads": [2, 4], "cross_span": [1, 2],
                "experts": [1, 2], "expert_sizes": [16, 32]},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(700, seed=1))
    base = dict(space=str(root / "micro.yaml"), corpus=str(corpus), cache_dir=str(root / "cache"), max_tokens=256, max_len=24,
                warmup=5, lr=3e-3, valid_sentences=30, bleu_sentences=0, progress=False, device="cpu", dropout=0.0)
    sup = root / "sup.pt"
    meta = train(TrainConfig(steps=40, **base), sup, log=lambda m: None)
    arch = SearchSpace.from_dict(MICRO).sample_n(4, seed=3)[-1]
    alone = root / "alone.pt"
    train(TrainConfig(steps=5, arch=arch.to_json(), init_from=str(sup), **base), alone, log=lambda m: None)
    test = write_parallel_dir(root / "x", synthetic_pairs(20, seed=9))
    sources = (test / "train.en").read_text().splitlines()[:12]
    return {"root": root, "sup": str(sup), "alone": str(alone), "arch": arch, "meta": meta, "sources": sources}


def test_export_with_inherited_weights_matches_torch(trained, tmp_path):
    out = export_trained(trained["arch"], trained["sup"], tmp_path / "m")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["source"].startswith("supernet") and (out / "tokenizer.json").is_file()
    model, _ = model_for_arch(trained["sup"], trained["arch"])
    ex = ExportedArch.load(out)  # weights inline: the graphs alone reproduce the trained model
    feeds = example_inputs(trained["arch"], batch=1, src_len=5, past_len=2)
    cross = ex.session("encoder").run(None, {"src": feeds["src"].numpy()})
    states, _ = model.encode(feeds["src"])
    ref = [t for k, v, _ in model.cross_kv(states, None) for t in (k, v)]
    for a, b in zip(cross, ref):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_onnx_translator_equals_torch_decoding(trained, tmp_path, beam):
    out = export_trained(trained["arch"], trained["sup"], tmp_path / "m")
    onnx_out = OnnxTranslator(out).translate(trained["sources"], beam=beam, max_len=24)
    model, meta = model_for_arch(trained["sup"], trained["arch"])
    torch_out = translate(model, None, load_tokenizer(meta), trained["sources"], beam=beam, max_len=24, batch_size=1)
    assert onnx_out == torch_out
    assert sum(bool(s) for s in onnx_out) >= len(onnx_out) // 2  # a trained model says something


def test_translate_cli_from_a_standalone_checkpoint(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "alone"
    assert main(["export", "--checkpoint", trained["alone"], "--out", str(out)]) == 0
    assert "tokenizer.json" in capsys.readouterr().out
    src = tmp_path / "in.txt"
    src.write_text("\n".join(trained["sources"][:3] + [""]) + "\n")
    assert main(["translate", "--model", str(out), "--input", str(src), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["source"] for t in res["translations"]] == trained["sources"][:3] + [""]
    assert res["translations"][-1]["translation"] == ""
    model, meta = model_for_arch(trained["alone"], None)
    want = translate(model, None, load_tokenizer(meta), trained["sources"][:3], max_len=64, batch_size=1)
    assert [t["translation"] for t in res["translations"][:3]] == want


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    tiny_arch = tmp_path / "tiny.json"
    tiny_arch.write_text(SearchSpace.load("tiny").smallest().to_json())
    cases = [
        (["export", str(tiny_arch), "--supernet", trained["sup"], "--out", str(tmp_path / "a")], "outside the space"),
        (["export", str(tiny_arch), "--checkpoint", trained["alone"], "--out", str(tmp_path / "b")], "holds arch"),
        (["export", "--supernet", trained["sup"], "--out", str(tmp_path / "c")], "an ARCH file is needed"),
        (["export", str(tiny_arch), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")], "no such checkpoint"),
        (["export", str(tiny_arch), "--out", str(tmp_path / "e"), "--opset", "3"], "--opset must be >= 14"),
        (["translate", "--model", str(tmp_path / "nope")], "no such directory"),
        (["translate", "--model", str(tmp_path), "--beam", "0"], "--beam must be >= 1"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err, (argv, err)
    # an export of random weights has no tokenizer: translate says so in one line
    rand = tmp_path / "rand"
    assert main(["export", str(tiny_arch), "--out", str(rand)]) == 0
    capsys.readouterr()
    before = _sha(rand / "manifest.json")
    assert main(["translate", "--model", str(rand), "--input", str(tiny_arch)]) == 2
    assert "without trained weights" in capsys.readouterr().err
    assert main(["export", str(tiny_arch), "--supernet", trained["sup"], "--out", str(rand)]) == 2  # exists, no --overwrite
    assert _sha(rand / "manifest.json") == before
    assert Arch.from_json(tiny_arch.read_text())  # the input is untouched
    assert torch.load(trained["sup"], weights_only=True)["kind"] == "supernet"
