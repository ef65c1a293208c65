"""The deployable result: a trained arch as ONNX graphs with its weights and tokenizer, and a
translator that runs them with onnxruntime.

``export_trained(arch, ckpt, out_dir)`` exports an arch of either family through the shared
path of :mod:`moenas.search.trained_export`. A translation model's folder holds:
  encoder.onnx, decoder.onnx   the profiler's two graphs (encoder + cross K/V, one incremental
                               decoder step with KV cache), weights inline;
  tokenizer.json               the checkpoint's subword tokenizer;
  manifest.json                the export manifest plus ``weights`` (where they came from:
                               supernet inheritance or a standalone checkpoint), ``tokenizer`` and
                               ``generation``: every convention a client needs (special ids, the
                               source's EOS, start token, stop and length rules, the timed beam);
  generation_config.json       the same in Hugging Face's generation-config fields;
  genai_config.json            the graphs' tensor names in onnxruntime-genai's layout.
A language model's holds prefill.onnx and decode.onnx instead, with its own conventions
(:mod:`moenas.search.lm_deploy`, whose ``OnnxGenerator`` runs it).

:class:`OnnxTranslator` decodes with :func:`moenas.arch.model.beam_search`, the same search the
torch model uses, one sentence at a time (batch 1: the exported graphs carry no source padding
mask, and batch 1 is the latency protocol's setting), so its output equals the torch model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from moenas.arch.arch import AnyArch
from moenas.arch.family import ENCODER_DECODER, FamilyRegistry
from moenas.arch.model import BOS, EOS, MAX_LEN_A, MAX_LEN_B, MAX_LENGTH, PAD, UNK, beam_search, max_new_tokens
from moenas.arch.protocol import Protocol
from moenas.profiler.onnx_export import DEFAULT_OPSET, export_arch

from .checkpoint import content_family, read_checkpoint
from .evaluation import decode_sentences
from .lm_deploy import LM_DEPLOYMENT
from .trained_export import TOKENIZER_FILE, Deployment, export_with_weights, open_export


def export_trained(
    arch: AnyArch | None,
    ckpt: str | Path,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    protocol: Protocol | None = None,
) -> Path:
    """Export ``arch`` with the weights of checkpoint ``ckpt`` (inherited from a supernet, or
    the standalone model it holds; ``arch`` may be None for a standalone checkpoint), as its
    family deploys: the arch's family, or without an arch, the checkpoint's. A checkpoint of
    the other family is one UserError line. ``protocol``: the latency protocol the arch was
    timed under (recorded; default: the family's default one)."""
    family = content_family(read_checkpoint(ckpt), ckpt) if arch is None else arch.family
    return export_with_weights(DEPLOYMENTS.for_family(family), arch, ckpt, out_dir, opset, overwrite, protocol)


def generation_conventions(manifest: dict[str, Any]) -> dict[str, Any]:
    """Everything a client needs to translate with the export, beside the tensor names and shapes
    the manifest already lists (``encoder`` / ``decoder``): special ids, the source's EOS, the
    decoder's start token and stop rule, the length rule, and the beam the latency was timed with."""
    protocol = manifest.get("protocol") or {}
    return {
        "tokenizer_file": TOKENIZER_FILE,
        "pad_token_id": PAD,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "unk_token_id": UNK,
        "source": {
            "add_special_tokens": False,
            "max_subwords": MAX_LENGTH - 1,
            "append_eos": True,
            "note": "ids = tokenizer ids truncated to max_subwords, then eos_token_id appended; batch 1 (no padding mask)",
        },
        "decoder_start_token_id": BOS,
        "stop": "at eos_token_id (not emitted) or after max_new_tokens steps",
        "max_new_tokens": {
            "rule": "min(max_length, floor(max_len_a * S) + max_len_b), S = source ids with EOS",
            "max_length": MAX_LENGTH,
            "max_len_a": MAX_LEN_A,
            "max_len_b": MAX_LEN_B,
        },
        "decode": {"skip_special_tokens": True},
        "kv_cache": {
            "past": "past_%d_k / past_%d_v, (batch, heads, past_len, head_dim), past_len 0 at the first step",
            "present": "present_%d_k / present_%d_v (past_len + 1)",
            "cross": "cross_%d_k / cross_%d_v from the encoder",
        },
        "latency_beam": protocol.get("beam"),
    }


def generation_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's generation_config.json fields for the export (num_beams: the latency
    protocol's beam, the decoding that was timed; max_length: the cap of the length rule)."""
    g = manifest["generation"]
    return {
        "bos_token_id": g["bos_token_id"],
        "eos_token_id": g["eos_token_id"],
        "pad_token_id": g["pad_token_id"],
        "decoder_start_token_id": g["decoder_start_token_id"],
        "num_beams": g["latency_beam"] or 1,
        "max_length": MAX_LENGTH,
        "early_stopping": True,
        "length_penalty": 1.0,
    }


def genai_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """onnxruntime-genai's genai_config.json layout naming the graphs, their inputs and outputs,
    and the past/present KV name patterns (the encoder-decoder graphs are not a genai model
    type; the file states the names in that tool's vocabulary)."""
    g = manifest["generation"]
    return {
        "model": {
            "type": "moenas-encoder-decoder",
            "vocab_size": manifest["arch"]["vocab_size"],
            "bos_token_id": g["bos_token_id"],
            "eos_token_id": g["eos_token_id"],
            "pad_token_id": g["pad_token_id"],
            "decoder_start_token_id": g["decoder_start_token_id"],
            "context_length": MAX_LENGTH,
            "encoder": {
                "filename": manifest["encoder"]["file"],
                "inputs": {"input_ids": "src"},
                "outputs": {"cross_present_key_names": "cross_%d_k", "cross_present_value_names": "cross_%d_v"},
            },
            "decoder": {
                "filename": manifest["decoder"]["file"],
                "inputs": {
                    "input_ids": "tokens",
                    "past_key_names": "past_%d_k",
                    "past_value_names": "past_%d_v",
                    "cross_past_key_names": "cross_%d_k",
                    "cross_past_value_names": "cross_%d_v",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present_%d_k",
                    "present_value_names": "present_%d_v",
                },
            },
        },
        "search": {"num_beams": g["latency_beam"] or 1, "max_length": MAX_LENGTH, "do_sample": False},
    }


TRANSLATION = Deployment(
    ENCODER_DECODER,
    export=lambda model, opset: export_arch(model.arch, opset=opset, model=model),
    conventions=lambda ex, meta: generation_conventions(ex.manifest),
    generation_config=generation_config,
    genai_config=genai_config,
)
# How each family deploys: its Deployment, registered under the family it declares.
DEPLOYMENTS: FamilyRegistry[Deployment] = FamilyRegistry("deployment", (TRANSLATION, LM_DEPLOYMENT))


class OnnxTranslator:
    """Translate with an export directory written by :func:`export_trained` (onnxruntime, CPU)."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        t = open_export(model_dir, ENCODER_DECODER, threads)
        self.arch, self.manifest, self.tokenizer = t.arch, t.manifest, t.tokenizer
        self.encoder, self.decoder = t.sessions["encoder"], t.sessions["decoder"]
        self.n_layers = len(self.arch.decoder.layers)

    def _cross(self, src: torch.Tensor) -> list[np.ndarray]:
        return self.encoder.run(None, {"src": src.numpy()})

    def generate(self, src: torch.Tensor, beam: int = 5, max_len: int | None = None) -> list[list[int]]:
        """Same contract as ``SubTransformer.generate``; runs sentence by sentence."""
        out = []
        for row in src:
            ids = row[row.ne(PAD)].unsqueeze(0)  # batch 1: drop the padding
            out += self._generate_one(ids, beam, max_len or max_new_tokens(ids.shape[1]))
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
            new = [
                (torch.from_numpy(present[2 * i]), torch.from_numpy(present[2 * i + 1])) for i in range(self.n_layers)
            ]
            return torch.from_numpy(logits), new

        return beam_search(step, 1, beam, max_len, self.arch.vocab_size)

    def _empty_cache(self, beam: int) -> list[tuple[np.ndarray, np.ndarray]]:
        q = self.arch.qkv_dim
        return [(np.zeros((beam, lay.heads, 0, q // lay.heads), np.float32),) * 2 for lay in self.arch.decoder.layers]

    def translate(self, sentences: Sequence[str], beam: int = 1, max_len: int = 64) -> list[str]:
        return decode_sentences(self.generate, self.tokenizer, sentences, beam, max_len, batch_size=1)
