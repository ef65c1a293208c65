"""The deployable result: a trained arch as ONNX graphs with its weights and tokenizer, and a
translator that runs them with onnxruntime.

``export_trained(arch, ckpt, out_dir)`` writes into ``out_dir``:
  encoder.onnx, decoder.onnx   the profiler's two graphs (encoder + cross K/V, one incremental
                               decoder step with KV cache), weights inline;
  tokenizer.json               the checkpoint's subword tokenizer;
  manifest.json                the export manifest plus ``weights`` (where they came from:
                               supernet inheritance or a standalone checkpoint) and ``tokenizer``.

:class:`OnnxTranslator` decodes with :func:`moenas.arch.model.beam_search`, the same search the
torch model uses, one sentence at a time (batch 1: the exported graphs carry no source padding
mask, and batch 1 is the latency protocol's setting), so its output equals the torch model's.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from moenas.arch import Arch, UserError
from moenas.arch.model import PAD, beam_search
from moenas.data.tokenizer import SubwordTokenizer
from moenas.arch.files import output_lock
from moenas.profiler.onnx_export import DEFAULT_OPSET, ExportedArch, check_export_dir, export_arch

from .checkpoint import load_tokenizer, model_for_arch, read_checkpoint
from .evaluation import decode_sentences

TOKENIZER_FILE = "tokenizer.json"


def export_trained(arch: Arch | None, ckpt: str | Path, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                   overwrite: bool = False) -> Path:
    """Export ``arch`` with the weights of checkpoint ``ckpt`` (inherited from a supernet, or
    the standalone model it holds; ``arch`` may be None for a standalone checkpoint)."""
    out = Path(out_dir)
    with output_lock(out, "export folder"):
        check_export_dir(out, overwrite)  # refuse before spending time on the export
        return _export_trained(arch, ckpt, out, opset, overwrite)


def _export_trained(arch: Arch | None, ckpt: str | Path, out: Path, opset: int, overwrite: bool) -> Path:
    kind = read_checkpoint(ckpt)["kind"]
    model, meta = model_for_arch(ckpt, arch)
    tok = load_tokenizer(meta)
    ex = export_arch(model.arch, opset=opset, model=model)
    ex.manifest["weights"] = {"source": "supernet (inherited)" if kind == "supernet" else "standalone checkpoint",
                              "checkpoint": str(Path(ckpt).resolve()), "steps": meta.get("steps"),
                              "corpus_fingerprint": meta.get("corpus_fingerprint")}
    ex.manifest["seed"] = None  # the weights are trained, not drawn from a seed
    ex.manifest["tokenizer"] = TOKENIZER_FILE
    ex.save(out, overwrite=overwrite)
    shutil.copyfile(tok.path, out / TOKENIZER_FILE)
    return out


class OnnxTranslator:
    """Translate with an export directory written by :func:`export_trained` (onnxruntime, CPU)."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        import onnxruntime as ort

        d = Path(model_dir)
        ex = ExportedArch.load(d)
        if not ex.manifest.get("tokenizer"):
            raise UserError(f"{d}: an export without trained weights and tokenizer (export with --supernet or --checkpoint)")
        self.arch, self.manifest = ex.arch, ex.manifest
        self.tokenizer = SubwordTokenizer.load(d / ex.manifest["tokenizer"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.encoder, self.decoder = ex.session("encoder", opts), ex.session("decoder", opts)
        self.n_layers = len(self.arch.decoder.layers)

    def _cross(self, src: torch.Tensor) -> list[np.ndarray]:
        return self.encoder.run(None, {"src": src.numpy()})

    def generate(self, src: torch.Tensor, beam: int = 5, max_len: int | None = None) -> list[list[int]]:
        """Same contract as ``SubTransformer.generate``; runs sentence by sentence."""
        out = []
        for row in src:
            ids = row[row.ne(PAD)].unsqueeze(0)  # batch 1: drop the padding
            out += self._generate_one(ids, beam, max_len or int(1.2 * ids.shape[1]) + 10)
        return out

    def _generate_one(self, src: torch.Tensor, beam: int, max_len: int) -> list[list[int]]:
        cross = [np.repeat(c, beam, axis=0) for c in self._cross(src)]
        names = {f"cross_{i // 2}_{'kv'[i % 2]}": c for i, c in enumerate(cross)}
        empty = self._empty_cache(beam)

        def step(tokens: torch.Tensor, cache: list | None):
            feeds: dict[str, Any] = {"tokens": tokens.numpy(), **names}
            for i, (k, v) in enumerate(cache if cache is not None else empty):
                feeds[f"past_{i}_k"], feeds[f"past_{i}_v"] = np.ascontiguousarray(k), np.ascontiguousarray(v)
            logits, *present = self.decoder.run(None, feeds)
            new = [(torch.from_numpy(present[2 * i]), torch.from_numpy(present[2 * i + 1])) for i in range(self.n_layers)]
            return torch.from_numpy(logits), new

        return beam_search(step, 1, beam, max_len, self.arch.vocab_size)

    def _empty_cache(self, beam: int) -> list[tuple[np.ndarray, np.ndarray]]:
        q = self.arch.qkv_dim
        return [(np.zeros((beam, lay.heads, 0, q // lay.heads), np.float32),) * 2 for lay in self.arch.decoder.layers]

    def translate(self, sentences: Sequence[str], beam: int = 1, max_len: int = 64) -> list[str]:
        return decode_sentences(self.generate, self.tokenizer, sentences, beam, max_len, batch_size=1)
