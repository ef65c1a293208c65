"""The deployable decoder-only language model: its export with trained weights, and a greedy
generator that runs it with onnxruntime.

An export folder (written by ``moenas.search.deploy.export_trained`` through the shared path of
:mod:`moenas.search.trained_export`) holds:
  prefill.onnx, decode.onnx    the profiler's graphs (:mod:`moenas.profiler.onnx_export_lm`,
                               onnxruntime-genai's tensor names), trained weights inline;
  tokenizer.json               the checkpoint's subword tokenizer;
  manifest.json                the export manifest plus ``weights``, ``tokenizer`` and
                               ``generation``: the special ids as training used them, how a
                               prompt becomes ids, the context length, the stop rule, the
                               KV-cache feeding and each layer's heads and head size;
  generation_config.json       the same in Hugging Face's generation-config fields;
  genai_config.json            onnxruntime-genai's decoder-only layout (the two graphs as its
                               prefill/decode ``pipeline``).

Special ids: training reads every document's ids followed by EOS, all documents as one stream
(``moenas.data.batching.token_stream``), so EOS, the document separator, is the only special id
the model has seen. A prompt is therefore read as the start of a document, after an EOS
(bos_token_id = eos_token_id, as GPT-2's ``<|endoftext|>``); ``<s>`` and ``<pad>`` never occur.

:class:`OnnxGenerator` decodes with :func:`moenas.arch.lm_model.greedy_stream`, the loop the
torch model's :func:`~moenas.arch.lm_model.greedy_generate` uses, so both choose the same
tokens. Batch 1: the graphs take no attention mask, and batch 1 is the latency protocol's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moenas.arch import UserError
from moenas.arch.checks import check_fields, check_range
from moenas.arch.family import DECODER_ONLY
from moenas.arch.lm_model import greedy_stream, stop_reason
from moenas.arch.model import EOS, PAD, UNK
from moenas.arch.protocol import LMProtocol
from moenas.data.tokenizer import SubwordTokenizer
from moenas.profiler.onnx_export import ExportedArch
from moenas.profiler.onnx_export_lm import export_lm

from .train_config import TrainConfig
from .trained_export import TOKENIZER_FILE, Deployment, open_export

# What a client generates unless told otherwise: the decode steps the latency protocol times (tg32).
DEFAULT_MAX_NEW_TOKENS = LMProtocol.decode_steps


def lm_conventions(ex: ExportedArch, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything a client needs to generate with the export, beside the tensor names and shapes
    the manifest lists (``prefill`` / ``decode``). The context length is the checkpoint's
    training block length (positions beyond it were never trained; sinusoidal positions set no
    hard limit); the per-layer heads and head sizes are read from the decode graph's past."""
    context = TrainConfig.from_dict(meta["train_config"]).block_len
    keys = [e for e in ex.manifest["decode"]["inputs"] if e["name"].endswith(".key")]
    return {
        "tokenizer_file": TOKENIZER_FILE,
        "eos_token_id": EOS,
        "bos_token_id": EOS,
        "pad_token_id": PAD,
        "unk_token_id": UNK,
        "special_ids": "training reads each document's ids followed by eos_token_id, all documents as one stream: "
        "EOS, the document separator, is the only special id the model has seen, so a sequence starts after it "
        "(bos_token_id = eos_token_id); <s> (id 1) and <pad> (id 0) never occur, and batch 1 needs no padding",
        "prompt": {
            "add_special_tokens": False,
            "prefix_ids": [EOS],
            "max_ids": context - 1,
            "note": "ids = prefix_ids + tokenizer ids (the prompt read as the start of a document), then only the "
            "last max_ids kept, so that one new token fits in the context; a prompt with no known subword is refused",
        },
        "context_length": context,
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
        "stop": "at eos_token_id (not emitted), after max_new_tokens tokens, or when prompt + continuation reach "
        "context_length tokens",
        "decode": {"skip_special_tokens": True, "search": "greedy: argmax of the logits, the first maximum on ties"},
        "kv_cache": {
            "prefill": "input_ids (1, n) -> logits of the last position and present.%d.key/value of n positions",
            "decode": "input_ids (1, 1) and past_key_values.%d.key/value = the previous call's present.%d.key/value "
            "(batch, heads_i, past_len, head_dim_i) -> logits and present (past_len + 1); the token's position is "
            "past_len (no position_ids or attention_mask input)",
        },
        "layers": [{"heads": e["shape"][1], "head_dim": e["shape"][3]} for e in keys],
        "layers_note": "heads and head_dim may differ per layer (searched archs are heterogeneous); genai_config.json "
        "gives num_attention_heads and head_size only when every layer agrees, null otherwise",
    }


def lm_generation_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face's generation_config.json fields (greedy; max_new_tokens: the default budget;
    Hugging Face's max_length would be overridden by it, the context length is in the manifest
    and genai_config.json)."""
    g = manifest["generation"]
    return {
        "bos_token_id": g["bos_token_id"],
        "eos_token_id": g["eos_token_id"],
        "pad_token_id": g["pad_token_id"],
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": g["max_new_tokens"],
    }


def _same(layers: list[dict[str, int]], key: str) -> int | None:
    """``key``'s value when every layer has the same, else None (a heterogeneous arch)."""
    values = {lay[key] for lay in layers}
    return values.pop() if len(values) == 1 else None


def lm_genai_config(manifest: dict[str, Any]) -> dict[str, Any]:
    """onnxruntime-genai's decoder-only genai_config.json layout: the tensor names, the model
    sizes and the two graphs as its ``pipeline`` stages (prefill on the prompt, decode on each
    new token). The model type is moenas' own: the graphs take no attention_mask and their
    layers may differ in heads and head size, which onnxruntime-genai's KV-cache allocation
    does not allow, so the file states the names in that tool's vocabulary rather than being
    a drop-in model for it."""
    g, arch = manifest["generation"], manifest["arch"]

    def stage(part: str, prompt: bool) -> dict[str, Any]:
        m = manifest[part]
        return {
            part: {
                "filename": m["file"],
                "inputs": [e["name"] for e in m["inputs"]],
                "outputs": [e["name"] for e in m["outputs"]],
                "run_on_prompt": prompt,
                "run_on_token_gen": not prompt,
            }
        }

    heads = _same(g["layers"], "heads")
    return {
        "model": {
            "type": "moenas-decoder-only",
            "vocab_size": arch["vocab_size"],
            "bos_token_id": g["bos_token_id"],
            "eos_token_id": g["eos_token_id"],
            "pad_token_id": g["pad_token_id"],
            "context_length": g["context_length"],
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "hidden_size": arch["decoder"]["embed_dim"],
                "num_hidden_layers": len(g["layers"]),
                "num_attention_heads": heads,
                "num_key_value_heads": heads,
                "head_size": _same(g["layers"], "head_dim"),
                "inputs": {
                    "input_ids": "input_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "pipeline": [stage("prefill", True), stage("decode", False)],
            },
        },
        "search": {
            "do_sample": False,
            "num_beams": 1,
            "min_length": 0,
            "max_length": g["context_length"],
            "past_present_share_buffer": False,
        },
    }


LM_DEPLOYMENT = Deployment(
    DECODER_ONLY,
    export=lambda model, opset: export_lm(model.arch, opset=opset, model=model),
    conventions=lm_conventions,
    generation_config=lm_generation_config,
    genai_config=lm_genai_config,
)


def encode_prompt(tokenizer: SubwordTokenizer, text: str, generation: dict[str, Any]) -> list[int]:
    """The ids a prompt is fed as, by the manifest's ``generation`` conventions (prefix, then
    the last ``max_ids``); UserError when no subword of ``text`` is known (it tokenizes to
    nothing, or to ``<unk>`` and spaces only): the model would continue an empty document."""
    ids = tokenizer.encode(text)
    if not tokenizer.decode(ids).strip():
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UserError(f"prompt {shown!r}: no word of it is in the model's vocabulary (it tokenizes to <unk> only)")
    p = generation["prompt"]
    return (list(p["prefix_ids"]) + ids)[-p["max_ids"] :]


@dataclass
class Generation:
    """One prompt's greedy continuation and its timing (seconds; the rates as llama-bench
    names them: pp = prompt processing, the prefill; tg = text generation, the decode steps).
    ``decode_steps``: decode-graph calls (the first token comes from the prefill)."""

    prompt: str
    continuation: str
    prompt_ids: list[int]
    ids: list[int]
    stop: str
    prefill_s: float
    decode_s: float
    decode_steps: int

    @property
    def pp_tokens_per_s(self) -> float:
        return len(self.prompt_ids) / self.prefill_s

    @property
    def tg_tokens_per_s(self) -> float | None:
        return self.decode_steps / self.decode_s if self.decode_steps else None

    def to_dict(self) -> dict[str, Any]:
        steps = self.decode_steps
        return {
            "prompt": self.prompt,
            "continuation": self.continuation,
            "prompt_ids": self.prompt_ids,
            "ids": self.ids,
            "stop": self.stop,
            "n_prompt": len(self.prompt_ids),
            "n_gen": len(self.ids),
            "prefill_ms": round(1000 * self.prefill_s, 3),
            "decode_ms_per_token": round(1000 * self.decode_s / steps, 3) if steps else None,
            "pp_tokens_per_s": round(self.pp_tokens_per_s, 1),
            "tg_tokens_per_s": round(self.tg_tokens_per_s, 1) if steps else None,
        }


class _TextStream:
    """Incremental detokenization: the text each new token adds, found by decoding the prompt
    and the continuation together (the tokenizer drops the leading space of a text's first
    word, so a continuation decoded alone would lose the space after the prompt)."""

    def __init__(self, tokenizer: SubwordTokenizer, prompt_ids: list[int], sink: Callable[[str], None] | None):
        self.tokenizer, self.prompt_ids, self.sink = tokenizer, prompt_ids, sink
        self.base = self.shown = tokenizer.decode(prompt_ids)

    def update(self, new_ids: list[int]) -> str:
        """Pass the text added since the last call to the sink; the whole text so far."""
        text = self.tokenizer.decode(self.prompt_ids + new_ids)
        if text.startswith(self.shown) and len(text) > len(self.shown):
            if self.sink is not None:
                self.sink(text[len(self.shown) :])
            self.shown = text
        return text

    def continuation(self, new_ids: list[int]) -> str:
        text = self.update(new_ids)
        return text[len(self.base) :] if text.startswith(self.base) else self.tokenizer.decode(new_ids)


class OnnxGenerator:
    """Greedy generation with an export directory of a trained language model (onnxruntime, CPU)."""

    def __init__(self, model_dir: str | Path, threads: int = 0):
        t = open_export(model_dir, DECODER_ONLY, threads)
        self.arch, self.manifest, self.tokenizer = t.arch, t.manifest, t.tokenizer
        where = f"{model_dir}/manifest.json generation"
        self.generation = check_fields(
            t.manifest.get("generation"), where, {"context_length": int, "eos_token_id": int, "prompt": dict}
        )
        check_fields(self.generation["prompt"], f"{where} prompt", {"prefix_ids": list, "max_ids": int})
        self.context_length = self.generation["context_length"]
        self.prefill, self.decode = t.sessions["prefill"], t.sessions["decode"]
        self.ids_name = t.manifest["prefill"]["inputs"][0]["name"]
        self.past_names = [e["name"] for e in t.manifest["decode"]["inputs"][1:]]

    def encode(self, text: str) -> list[int]:
        """The prompt's ids as the manifest says a client feeds them (:func:`encode_prompt`)."""
        return encode_prompt(self.tokenizer, text, self.generation)

    def generate(
        self, text: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, on_text: Callable[[str], None] | None = None
    ) -> Generation:
        """Greedy continuation of ``text``; ``on_text`` receives each piece of text as its token
        is chosen (streaming). The times are the graphs' runs alone, without detokenization."""
        check_range("max_new_tokens", max_new_tokens, 1, integer=True)
        prompt = self.encode(text)
        clock = {"prefill": 0.0, "decode": 0.0, "steps": 0}

        def prefill(ids: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
            t0 = time.perf_counter()
            logits, *present = self.prefill.run(None, {self.ids_name: np.array([ids], dtype=np.int64)})
            clock["prefill"] += time.perf_counter() - t0
            return logits, present

        def step(token: int, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
            feeds = {self.ids_name: np.array([[token]], dtype=np.int64), **dict(zip(self.past_names, past))}
            t0 = time.perf_counter()
            logits, *present = self.decode.run(None, feeds)
            clock["decode"] += time.perf_counter() - t0
            clock["steps"] += 1
            return logits, present

        stream, new = _TextStream(self.tokenizer, prompt, on_text), []
        eos = self.generation["eos_token_id"]
        for token in greedy_stream(prefill, step, prompt, max_new_tokens, self.context_length, eos):
            new.append(token)
            stream.update(new)
        return Generation(
            text,
            stream.continuation(new),
            prompt,
            new,
            stop_reason(len(prompt), len(new), max_new_tokens, self.context_length),
            clock["prefill"],
            clock["decode"],
            int(clock["steps"]),
        )
