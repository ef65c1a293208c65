"""Encoder-decoder training is what it was before the decoder-only family could be trained: a
seeded run's per-step losses, validation history (loss and BLEU) and checkpoint contents (weights,
optimizer state, sampler, data position, RNG states) equal ``fixtures/encdec_training.json``,
recorded before that change (bit for bit; floats as their repr, tensors as SHA-256 of their bytes).

Recorded with one torch thread on this project's 2-core machine; other torch versions or CPU
instruction sets may round differently, so the test skips where they differ from the recording.

Re-record (only for a change meant to alter training): ``python tests/search/test_encdec_training_unchanged.py``."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "helpers"))
from micro_spaces import micro
from toy_corpus import synthetic_pairs, write_parallel_dir  # noqa: E402

from moenas.search.checkpoint import read_checkpoint  # noqa: E402
from moenas.search.train_config import TrainConfig  # noqa: E402
from moenas.search.trainer import Trainer, train  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "encdec_training.json"
MICRO = micro()
RUNS = {
    "slice-uniform": dict(steps=6, eval_every=3, bleu_sentences=4),
    "mos-sandwich": dict(steps=4, supernet="mos", sampling="sandwich", mos_mode="neuron", eval_every=2),
    "standalone": dict(
        steps=3,
        arch='{"decoder":{"embed_dim":16,"layers":[{"cross_heads":2,"cross_span":1,'
        '"experts":[16,32],"heads":4}]},"encoder":{"embed_dim":24,"layers":[{"experts":[32],"heads":2}]},'
        '"qkv_dim":16,"schema_version":1,"top_k":1,"vocab_size":97}',
    ),
}


def _digest(x) -> object:
    """Tensors as the SHA-256 of their bytes, containers recursively, other values as they are."""
    if isinstance(x, torch.Tensor):
        t = x.detach().contiguous().cpu()
        return (
            f"{t.dtype}{tuple(t.shape)}:"
            + hashlib.sha256(
                t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
            ).hexdigest()
        )
    if isinstance(x, dict):
        return {str(k): _digest(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_digest(v) for v in x]
    return repr(x) if isinstance(x, float) else x


def _sha(x: object) -> str:
    """One SHA-256 over a digest's canonical JSON (the fixture stays small)."""
    return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()


_PATHS = ("space", "corpus", "cache_dir")  # where this run's temporary files were


def _quiet(msg: str) -> None:
    pass


def record(root: Path) -> dict:
    """Every value the fixture holds, from runs made in ``root`` (a fresh folder)."""
    torch.set_num_threads(1)
    space = root / "micro.yaml"
    space.write_text(yaml.safe_dump(MICRO))
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(300, seed=1))
    out: dict = {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    for name, kw in RUNS.items():
        cfg = TrainConfig(
            space=str(space),
            corpus=str(corpus),
            cache_dir=str(root / "cache"),
            max_tokens=256,
            max_len=24,
            warmup=2,
            lr=3e-3,
            valid_sentences=20,
            progress=False,
            device="cpu",
            **{"bleu_sentences": 0, **kw},
        )
        trainer = Trainer(cfg, root / f"{name}-steps.pt", None, 0, 1, torch.device("cpu"), _quiet)
        losses = [repr(trainer.step()[0]) for _ in range(cfg.steps)]
        ckpt = root / f"{name}.pt"
        meta = train(cfg, ckpt, log=_quiet)
        ck = read_checkpoint(ckpt)
        out[name] = {
            "step_losses": losses,
            "history": _digest(meta["history"]),
            "checkpoint": {
                k: _sha(_digest(ck[k]))
                for k in ("model", "optimizer", "step", "sampler", "data", "rng", "kind", "supernet_config", "arch")
            },
            "train_config": {k: v for k, v in ck["train_config"].items() if k not in _PATHS},
        }
    return out


@pytest.mark.skipif(not FIXTURE.is_file(), reason="fixture not recorded")
def test_encoder_decoder_training_is_bit_identical(tmp_path):
    want = json.loads(FIXTURE.read_text())
    if (want["torch"], want["cpu"]) != (torch.__version__, torch.backends.cpu.get_cpu_capability()):
        pytest.skip(f"recorded with torch {want['torch']} on {want['cpu']}")
    got = record(tmp_path)
    for name in RUNS:
        for key in ("step_losses", "history", "checkpoint"):
            assert got[name][key] == want[name][key], (name, key)
        # settings added later may join the stored config; the recorded ones keep their values
        assert {k: got[name]["train_config"][k] for k in want[name]["train_config"]} == want[name]["train_config"]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        FIXTURE.write_text(json.dumps(record(Path(d)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
