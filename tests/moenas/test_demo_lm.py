"""`moenas demo --space lm-tiny` end to end at micro sizes: the shipped language-model predictor
transferred to this CPU (its decode target), a supernet, the search under a decode ms/token
budget with its dense baseline, the finalists measured, perplexity and continuations in the
report, the answer exported and continued by onnxruntime with its timings; a rerun reuses every
stage. And the preset's selection by --space / --scale, with contradictions in one line."""

import json
import os

import pytest
from demo_flags import demo_flags
from toy_text import toy_paragraphs, write_text_dir

from moenas.arch import UserError
from moenas.cli import main
from moenas.search.pipeline import SCALES, DemoConfig, scale_for

MICRO = ["--space", "lm-tiny", *demo_flags(population=4, valid_sentences=8, search_workers=1)]


@pytest.mark.slow
def test_lm_demo_end_to_end_and_rerun(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOENAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # training uses every core: one, as every test runs
    corpus = write_text_dir(tmp_path / "text", toy_paragraphs(1500, seed=1))
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--corpus", str(corpus), *MICRO, "--json"]
    rc = main(argv)
    s = json.loads(capsys.readouterr().out)
    fin, picks, f = s["final"], s["picks"], s["facts"]
    assert rc == (0 if fin["winner"] else 1)  # 1 only when no finalist met the budget when measured
    assert s["family"] == "decoder-only" and s["config"]["scale"] == "lm-tiny"
    assert f["predictor"]["path"].startswith("transfer from lm-tiny-cpu-ort") and f["predictor"]["n_holdout"] == 2
    assert "--target decode" in f["fit_command"] and "--max-decode-ms-per-token" in f["search_command"]
    assert f["protocol"]["decode_steps"] == 32 and f["budget_ms"] > 0
    assert {k: set(v) for k, v in f["supernet"].items()} == {
        "largest": {"arch_id", "val_loss", "perplexity"},
        "smallest": {"arch_id", "val_loss", "perplexity"},
    }
    for role in [r for r in ("searched", "dense") if fin[r]]:
        p = picks[role]
        assert p["perplexity"] > 1 and p["unit"] == "ms/token" and p["samples"][0]["prompt"]
        assert p["timings"]["prefill"] > 0 and p["timings"]["decode_per_token"] > 0
    readme = (out / "README.md").read_text()
    assert "| perplexity | prefill ms | decode ms/token | tokens/s |" in readme
    assert "batch 1, prompt 128 tokens, 32 greedy decode steps" in readme and "perplexity" in readme
    assert "## Continuations" in readme and "BLEU" not in readme
    if fin["winner"]:
        assert readme.splitlines()[2].startswith("**Answer.** Deploy")
        dep = f["deploy"]
        assert (out / "model" / "decode.onnx").is_file() and dep["samples"] and dep["tokens_per_s"] > 0
        assert dep["prefill_ms"] > 0 and dep["decode_ms_per_token"] > 0 and dep["command"].startswith("moenas generate")
        assert "Continuations by the exported model (onnxruntime" in readme and dep["samples"][0]["output"] in readme
        if fin["searched"] and fin["dense"] and fin["searched"] != fin["dense"]:
            assert "**Amdahl bound.**" in readme
    # a rerun reuses every stage's output and gives the same answer
    rc2 = main(argv)
    s2 = json.loads(capsys.readouterr().out)
    assert rc2 == rc and s2["final"] == fin
    assert "train_tokens_per_s" not in s2["facts"]  # the supernet was not trained again


def test_the_preset_follows_space_or_scale(tmp_path):
    assert scale_for(None, None) == "tiny" and scale_for("wmt", None) == "wmt"
    assert scale_for(None, "lm-tiny") == scale_for("lm-tiny", "lm-tiny") == "lm-tiny"
    cfg = DemoConfig.for_scale(scale_for(None, "lm-tiny"), out=tmp_path)
    assert (cfg.space, cfg.sampling, cfg.train_sandwich_random, cfg.valid_sentences) == ("lm-tiny", "sandwich", 1, 60)
    assert cfg.kind.target == "decode" and DemoConfig.for_scale("tiny").kind.target == "total"
    assert all(preset["space"] for preset in SCALES.values())
    with pytest.raises(UserError, match="--space lm-small: no demo preset runs it"):
        scale_for(None, "lm-small")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--space", "lm-tiny", "--scale", "wmt"], "--scale wmt and --space lm-tiny disagree"),
        (["--space", "lm-tiny", "--max-latency-ms", "5"], "--max-latency-ms: the demo of space 'lm-tiny' budgets"),
        (["--max-decode-ms-per-token", "1"], "--max-decode-ms-per-token: the demo of space 'tiny' budgets"),
        (["--space", "lm-tiny", "--max-decode-ms-per-token", "0"], "--max-decode-ms-per-token must be > 0"),
        (["--space", "lm-tiny", "--train-sandwich-random", "-1"], "--train-sandwich-random must be >= 0"),
        (["--space", "lm-tiny", "--corpus", "gettext"], "a language model reads 'default'"),
        (["--scale", "huge"], "unknown scale 'huge'"),
    ],
)
def test_bad_lm_demo_settings_are_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_a_folder_holding_another_spaces_demo_is_refused(tmp_path, capsys):
    """`moenas demo` then `moenas demo --space lm-tiny --out` the same folder: the language-model
    demo would reuse the translation demo's predictor and supernet, so it stops in one line."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"config": {"space": "tiny"}, "facts": {}}))
    assert main(["demo", "--out", str(out), "--space", "lm-tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a demo of space 'tiny' (demo.json)" in err, err
    assert DemoConfig.for_scale("lm-tiny").out.name == "demo-lm"  # the default folder is not the translation demo's
