"""A trained decoder-only language model deployed: export with inherited or standalone weights
(prefill/decode graphs, tokenizer, the conventions of training in the manifest and both client
configs), onnxruntime greedy generation equal to the torch model's, `moenas generate` on
--prompt and stdin, and bad input as one line with exit 2."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from micro_spaces import micro, micro_lm
from toy_corpus import synthetic_pairs, write_parallel_dir
from toy_text import toy_paragraphs, write_text_dir

from moenas.arch import LMArch, SearchSpace
from moenas.arch.lm_model import greedy_generate
from moenas.arch.model import EOS
from moenas.cli import main
from moenas.profiler.onnx_export import ExportedArch
from moenas.search.checkpoint import load_tokenizer, model_for_arch
from moenas.search.deploy import export_trained
from moenas.search.lm_deploy import DEFAULT_MAX_NEW_TOKENS, OnnxGenerator, encode_prompt
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

BLOCK_LEN = 24  # the context length an export records
# Two layers of different heads (4 of size 4, 2 of size 8) and MoE FFNs: a heterogeneous arch.
ARCH = LMArch.from_dict(
    {
        "family": "decoder-only",
        "vocab_size": 128,
        "qkv_dim": 16,
        "top_k": 1,
        "decoder": {
            "embed_dim": 24,
            "layers": [{"heads": 4, "experts": [32, 32, 16]}, {"heads": 2, "experts": [32, 16]}],
        },
    }
)
PROMPTS = ["a small page", "the red folder hides", "no option closes the", "a line"]


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An LM supernet trained for a few steps on toy text, a standalone model of ARCH from it,
    ARCH exported with the supernet's weights, and a one-step translation checkpoint."""
    root = tmp_path_factory.mktemp("lmgen")
    (root / "lm.yaml").write_text(yaml.safe_dump(micro_lm()))
    (root / "mt.yaml").write_text(yaml.safe_dump(micro()))
    base = dict(
        cache_dir=str(root / "cache"),
        block_len=BLOCK_LEN,
        warmup=2,
        lr=3e-3,
        valid_sentences=2,
        bleu_sentences=0,
        progress=False,
        device="cpu",
        dropout=0.0,
    )
    lm = dict(base, space=str(root / "lm.yaml"), corpus=str(write_text_dir(root / "text", toy_paragraphs(200, seed=1))))
    sup = root / "sup.pt"
    train(TrainConfig(steps=12, max_tokens=96, **lm), sup, log=quiet)
    alone = root / "alone.pt"
    train(TrainConfig(steps=1, max_tokens=96, arch=ARCH.to_json(), init_from=str(sup), **lm), alone, log=quiet)
    mt = root / "mt.pt"
    pairs = write_parallel_dir(root / "pairs", synthetic_pairs(120, seed=3))
    train(TrainConfig(steps=1, max_tokens=256, space=str(root / "mt.yaml"), corpus=str(pairs), **base), mt, log=quiet)
    (root / "arch.json").write_text(ARCH.to_json())
    return {
        "root": root,
        "sup": str(sup),
        "alone": str(alone),
        "mt": str(mt),
        "model": export_trained(ARCH, sup, root / "m"),
    }


def test_export_holds_trained_weights_tokenizer_and_the_training_conventions(trained):
    out = trained["model"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["family"] == "decoder-only" and m["weights"]["source"] == "supernet (inherited)"
    assert m["seed"] is None and m["tokenizer"] == "tokenizer.json" and (out / "tokenizer.json").is_file()
    assert m["protocol"]["family"] == "decoder-only"
    g = m["generation"]
    assert (g["eos_token_id"], g["bos_token_id"], g["pad_token_id"]) == (EOS, EOS, 0)  # EOS separates documents
    assert g["prompt"]["prefix_ids"] == [EOS] and g["prompt"]["max_ids"] == BLOCK_LEN - 1
    assert g["context_length"] == BLOCK_LEN and g["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS == 32
    assert g["layers"] == [{"heads": 4, "head_dim": 4}, {"heads": 2, "head_dim": 8}]
    hf = json.loads((out / "generation_config.json").read_text())
    assert hf == {
        "bos_token_id": EOS,
        "eos_token_id": EOS,
        "pad_token_id": 0,
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": 32,
    }
    genai = json.loads((out / "genai_config.json").read_text())["model"]
    dec = genai["decoder"]
    past = [e["name"] for e in m["decode"]["inputs"][1:]]
    assert past == [dec["inputs"][f"past_{kv}_names"] % i for i in range(2) for kv in ("key", "value")]
    present = [e["name"] for e in m["decode"]["outputs"][1:]]
    assert present == [dec["outputs"][f"present_{kv}_names"] % i for i in range(2) for kv in ("key", "value")]
    assert (dec["num_hidden_layers"], dec["hidden_size"], dec["num_attention_heads"], dec["head_size"]) == (
        2,
        24,
        None,
        None,
    )
    assert [list(s) for s in dec["pipeline"]] == [["prefill"], ["decode"]] and dec["pipeline"][1]["decode"]["inputs"][
        1:
    ] == past
    assert genai["context_length"] == BLOCK_LEN and dec["session_options"]["log_id"] == "onnxruntime-genai"
    # the weights are inline: the saved prefill graph alone reproduces the trained model
    model, _ = model_for_arch(trained["sup"], ARCH, family=ARCH.family)
    ids = torch.randint(4, 128, (1, 9), generator=torch.Generator().manual_seed(0))
    logits, *present_kv = ExportedArch.load(out).session("prefill").run(None, {"input_ids": ids.numpy()})
    ref_logits, cache = model.prefill(ids)
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(present_kv[-1], cache[-1][1].detach().numpy(), atol=1e-5)


def test_onnx_greedy_generation_equals_torch_greedy(trained):
    gen = OnnxGenerator(trained["model"])
    model, meta = model_for_arch(trained["sup"], ARCH, family=ARCH.family)
    tok = load_tokenizer(meta)
    stops = set()
    for text, budget in [(p, n) for p in PROMPTS for n in (3, 40)]:
        prompt = encode_prompt(tok, text, gen.generation)
        res = gen.generate(text, budget)
        assert res.prompt_ids == prompt == [EOS, *tok.encode(text)]
        assert res.ids == greedy_generate(model, prompt, budget, BLOCK_LEN)
        assert len(res.prompt_ids) + len(res.ids) <= BLOCK_LEN and EOS not in res.ids
        assert res.continuation == tok.decode(prompt + res.ids)[len(tok.decode(prompt)) :]
        stops.add(res.stop)
        if res.stop == "context_length":
            assert len(res.prompt_ids) + len(res.ids) == BLOCK_LEN
        assert res.decode_steps == len(res.ids) - (res.stop != "eos")  # the last token is never fed back
    assert "max_new_tokens" in stops and stops - {"max_new_tokens"}  # both budgets were reached
    long = gen.generate("a small page " * 20, 4)  # a prompt beyond the context keeps its last ids
    assert len(long.prompt_ids) == BLOCK_LEN - 1 and long.prompt_ids[-3:] == tok.encode("a small page " * 20)[-3:]


def test_generate_cli_streams_prompts_from_flags_and_stdin(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "alone"
    assert main(["export", "--checkpoint", trained["alone"], "--out", str(out)]) == 0
    assert "genai_config.json" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["weights"]["source"] == "standalone checkpoint"
    gen = OnnxGenerator(out)
    want = [gen.generate(p, 6) for p in PROMPTS[:2]]
    assert (
        main(["generate", "--model", str(out), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--max-new-tokens", "6"])
        == 0
    )
    cap = capsys.readouterr()
    assert cap.out.splitlines() == [w.prompt + w.continuation for w in want]
    assert "pp " in cap.err and "tokens/s" in cap.err and cap.err.count("\n") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n"))
    assert main(["generate", "--model", str(out), "--max-new-tokens", "6", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["prompt"], r["continuation"], r["ids"]) for r in rows] == [
        (w.prompt, w.continuation, w.ids) for w in want
    ]
    model, _ = model_for_arch(trained["alone"], None, family=ARCH.family)
    assert rows[0]["ids"] == greedy_generate(model, rows[0]["prompt_ids"], 6, BLOCK_LEN)
    r = rows[0]
    assert r["n_prompt"] == len(r["prompt_ids"]) and r["n_gen"] == len(r["ids"]) and r["prefill_ms"] > 0
    assert r["pp_tokens_per_s"] > 0 and {"decode_ms_per_token", "tg_tokens_per_s", "stop", "arch_id"} <= set(r)


def test_bad_input_is_one_line(trained, tmp_path, capsys, monkeypatch):
    model = str(trained["model"])
    tiny = tmp_path / "tiny.json"
    tiny.write_text(SearchSpace.load("tiny").smallest().to_json())
    assert main(["export", str(tiny), "--out", str(tmp_path / "mt")]) == 0  # a translation export
    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    (damaged / "prefill.onnx").write_bytes((damaged / "prefill.onnx").read_bytes()[:200])
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "manifest.json").write_text("{")
    assert main(["export", str(trained["root"] / "arch.json"), "--out", str(tmp_path / "rand")]) == 0
    own = tmp_path / "own"  # a folder with a genai_config.json of one's own: never replaced
    own.mkdir()
    (own / "genai_config.json").write_text("{}")
    capsys.readouterr()
    arch = str(trained["root"] / "arch.json")
    cases = [
        (["generate", "--model", model, "--prompt", "жжж ©"], "no word of it is in the model's vocabulary"),
        (["generate", "--model", model, "--prompt", ""], "no word of it"),
        (
            ["generate", "--model", model, "--prompt", "a line", "--max-new-tokens", "0"],
            "--max-new-tokens must be >= 1",
        ),
        (
            ["generate", "--model", model, "--prompt", "a line", "--max-new-tokens", "-2"],
            "--max-new-tokens must be >= 1",
        ),
        (
            ["generate", "--model", str(tmp_path / "mt"), "--prompt", "a"],
            "holds a translation model (encoder-decoder); run it with moenas translate",
        ),
        (["translate", "--model", model], "holds a language model (decoder-only); run it with moenas generate"),
        (["generate", "--model", str(tmp_path / "rand"), "--prompt", "a"], "without trained weights and tokenizer"),
        (["generate", "--model", str(tmp_path / "none"), "--prompt", "a"], "no such directory"),
        (["generate", "--model", str(tmp_path), "--prompt", "a"], "no manifest.json"),
        (["generate", "--model", str(damaged), "--prompt", "a"], "prefill.onnx: not a loadable ONNX graph"),
        (["generate", "--model", str(broken), "--prompt", "a"], "malformed"),
        (["export", arch, "--supernet", trained["mt"], "--out", str(tmp_path / "x")], "holds a translation model"),
        (["export", arch, "--checkpoint", trained["mt"], "--out", str(tmp_path / "y")], "holds a translation model"),
        (["export", str(tiny), "--supernet", trained["sup"], "--out", str(tmp_path / "z")], "holds a language model"),
        (["export", arch, "--supernet", trained["sup"], "--out", str(own)], "is not part of a moenas export"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        cap = capsys.readouterr()
        assert cap.err.count("\n") == 1 and msg in cap.err and cap.out == "", (argv, cap)
    for stdin in ("", "\n  \n"):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(["generate", "--model", model]) == 2
        assert "standard input holds no prompt" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a line\nжжж\n"))  # checked before the first is generated
    assert main(["generate", "--model", model]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert not any((tmp_path / d).exists() for d in "xyz") and (own / "genai_config.json").read_text() == "{}"
