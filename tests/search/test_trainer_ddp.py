"""The same `moenas train` under torchrun: 2 CPU processes, gloo, DistributedDataParallel.

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

from toy_corpus import synthetic_pairs, write_parallel_dir


MICRO = {
    "name": "micro", "vocab_size": 97, "qkv_dim": 16, "top_k": [1],
    "encoder": {"embed_dim": [16, 24], "layers": [1, 2], "heads": [2, 4], "experts": [1, 2, 3], "expert_sizes": [16, 32]},
    "decoder": {"embed_dim": [16, 24], "layers": [1, 2], "heads": [2, 4], "cross_heads": [2, 4], "cross_span": [1, 2],
                "experts": [1, 2], "expert_sizes": [16, 32]},
}


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOENAS_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "moenas.cli", "train", "--space", str(tmp_path / "micro.yaml"), "--corpus", str(tmp_path / "corpus"),
           "--max-tokens", "256", "--max-len", "24", "--warmup", "2", "--valid-sentences", "20",
           "--bleu-sentences", "0", "--device", "cpu", "--no-progress", "--sampling", "uniform", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_process_gloo_training_and_resume(tmp_path):
    (tmp_path / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    write_parallel_dir(tmp_path / "corpus", synthetic_pairs(400, seed=2))
    out = tmp_path / "ddp.pt"
    r = torchrun(tmp_path, "--steps", "4", "--out", str(out), "--eval-every", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp.pt.json").read_text())
    assert meta["world_size"] == 2 and meta["steps"] == 4
    assert meta["ddp_params_in_sync"] is True  # every rank holds the same weights after the steps
    ck = torch.load(out, weights_only=True)
    assert len(ck["rng"]["torch"]) == 2  # each rank's dropout stream is saved for an exact resume
    r = torchrun(tmp_path, "--steps", "6", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "ddp.pt.json").read_text())
    assert meta["steps"] == 6 and meta["ddp_params_in_sync"] is True
    assert all(torch.isfinite(torch.tensor(h["val_loss"])) for h in meta["history"])
