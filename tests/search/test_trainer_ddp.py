"""The same `moenas train` under torchrun: 2 CPU processes, gloo, DistributedDataParallel, for a
translation supernet and a language-model one.

Uniform sampling makes every step leave some parameters unused (deeper layers, extra experts)
and others used only through slices; DDP must still all-reduce and keep the ranks identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from micro_spaces import micro, micro_lm
from toy_corpus import synthetic_pairs, write_parallel_dir
from toy_text import toy_paragraphs, write_text_dir

MICRO = micro(top_k=[1])
MICRO_LM = micro_lm(top_k=[1])
# Per family: its space, how its corpus is written, its data flags, what its evaluations report.
FAMILIES = {
    "encoder-decoder": (
        MICRO,
        lambda d: write_parallel_dir(d, synthetic_pairs(400, seed=2)),
        ["--max-tokens", "256", "--max-len", "24", "--bleu-sentences", "0"],
        "val_loss",
    ),
    "decoder-only": (
        MICRO_LM,
        lambda d: write_text_dir(d, toy_paragraphs(200, seed=2)),
        ["--max-tokens", "64", "--block-len", "16"],
        "val_ppl",
    ),
}


def torchrun(tmp_path: Path, family: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOENAS_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "moenas.cli",
        "train",
        "--space",
        str(tmp_path / "micro.yaml"),
        "--corpus",
        str(tmp_path / "corpus"),
        *FAMILIES[family][2],
        "--warmup",
        "2",
        "--valid-sentences",
        "20",
        "--device",
        "cpu",
        "--no-progress",
        "--sampling",
        "uniform",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_two_process_gloo_training_and_resume(tmp_path, family):
    space, write_corpus, _, reported = FAMILIES[family]
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(space))
    write_corpus(tmp_path / "corpus")
    out = tmp_path / "ddp.pt"
    r = torchrun(tmp_path, family, "--steps", "4", "--out", str(out), "--eval-every", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp.pt.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 4 and meta["family"] == family
    assert meta["ddp_params_in_sync"] is True  # every rank holds the same weights after the steps
    ck = torch.load(out, weights_only=True)
    assert len(ck["rng"]["torch"]) == 2  # each rank's dropout stream is saved for an exact resume
    r = torchrun(tmp_path, family, "--steps", "6", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp.pt.json").read_text())
    assert meta["steps"] == 6 and meta["ddp_params_in_sync"] is True
    assert all(torch.isfinite(torch.tensor(h[reported])) for h in meta["history"])
