"""The deployable result: export with trained weights (ONNX output = torch output), the
onnxruntime translator (= the torch model's greedy and beam output), `moenas translate`, and
bad input (an arch outside the checkpoint's space, a standalone checkpoint of another arch)."""

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from micro_spaces import micro
from toy_corpus import synthetic_pairs, write_parallel_dir

from moenas.arch import Arch, SearchSpace
from moenas.cli import main
from moenas.profiler.onnx_export import ExportedArch, example_inputs
from moenas.search.checkpoint import load_tokenizer, model_for_arch
from moenas.search.deploy import OnnxTranslator, export_trained
from moenas.search.evaluation import translate
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

MICRO = micro()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(700, seed=1))
    base = dict(
        space=str(root / "micro.yaml"),
        corpus=str(corpus),
        cache_dir=str(root / "cache"),
        max_tokens=256,
        max_len=24,
        warmup=5,
        lr=3e-3,
        valid_sentences=30,
        bleu_sentences=0,
        progress=False,
        device="cpu",
        dropout=0.0,
    )
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
        (
            ["export", str(tiny_arch), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")],
            "no such checkpoint",
        ),
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
    assert (
        main(["export", str(tiny_arch), "--supernet", trained["sup"], "--out", str(rand)]) == 2
    )  # exists, no --overwrite
    assert _sha(rand / "manifest.json") == before
    assert Arch.from_json(tiny_arch.read_text())  # the input is untouched
    assert torch.load(trained["sup"], weights_only=True)["kind"] == "supernet"


def independent_client(model_dir, sentences):
    """Greedy translation that reads only the export's manifest and uses onnxruntime, numpy and
    tokenizers, never moenas: what an application developer would write from the manifest."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    d = __import__("pathlib").Path(model_dir)
    m = json.loads((d / "manifest.json").read_text())
    g, rule = m["generation"], m["generation"]["max_new_tokens"]
    tok = Tokenizer.from_file(str(d / g["tokenizer_file"]))
    enc, dec = (ort.InferenceSession(str(d / m[p]["file"])) for p in ("encoder", "decoder"))
    src_name, token_name = m["encoder"]["inputs"][0]["name"], m["decoder"]["inputs"][0]["name"]
    cross_names = [o["name"] for o in m["encoder"]["outputs"]]
    past = [i for i in m["decoder"]["inputs"] if i["name"].startswith("past_")]
    out_names = [o["name"] for o in m["decoder"]["outputs"]]
    outputs = []
    for text in sentences:
        ids = tok.encode(text, add_special_tokens=g["source"]["add_special_tokens"]).ids[: g["source"]["max_subwords"]]
        src = np.array([ids + ([g["eos_token_id"]] if g["source"]["append_eos"] else [])], dtype=np.int64)
        cross = dict(zip(cross_names, enc.run(None, {src_name: src})))
        cache = {p["name"]: np.zeros((1, p["shape"][1], 0, p["shape"][3]), np.float32) for p in past}
        token, hyp = g["decoder_start_token_id"], []
        for _ in range(min(rule["max_length"], int(rule["max_len_a"] * src.shape[1]) + rule["max_len_b"])):
            res = dict(zip(out_names, dec.run(None, {token_name: np.array([[token]], np.int64), **cross, **cache})))
            cache = {p["name"]: res[p["name"].replace("past_", "present_")] for p in past}
            token = int(res["logits"][0].argmax())
            if token == g["eos_token_id"]:
                break
            hyp.append(token)
        outputs.append(tok.decode(hyp, skip_special_tokens=g["decode"]["skip_special_tokens"]))
    return outputs


def test_an_independent_client_reproduces_moenas_translate_from_the_manifest(trained, tmp_path, capsys):
    out = export_trained(trained["arch"], trained["sup"], tmp_path / "m")
    src = tmp_path / "src.txt"
    src.write_text("\n".join(trained["sources"]) + "\n")
    assert main(["translate", "--model", str(out), "--input", str(src)]) == 0
    ours = capsys.readouterr().out.splitlines()
    assert independent_client(out, trained["sources"]) == ours and any(ours)
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"], gen["decoder_start_token_id"]) == (
        1,
        2,
        0,
        1,
    )
    assert gen["num_beams"] == 5 and gen["max_length"] == 64  # the beam the latency protocol times
    genai = json.loads((out / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["inputs"]["past_key_names"] == "past_%d_k"
    assert genai["model"]["decoder"]["outputs"]["present_value_names"] == "present_%d_v"
