"""Export one LMArch (a decoder-only causal language model) to two ONNX graphs, with
onnxruntime-genai's tensor names.

prefill.onnx
    input_ids (batch, seq) int64  ->  logits (batch, vocab) float32 of the LAST position, and
    present.{i}.key / present.{i}.value (batch, heads_i, seq, head_dim_i) float32 for every
    layer i: ``CausalLM.prefill`` (the prompt in one causal pass).
decode.onnx
    input_ids (batch, 1) int64, past_key_values.{i}.key / past_key_values.{i}.value (batch,
    heads_i, past_len, head_dim_i) float32  ->  logits (batch, vocab) and present.{i}.key/value
    (batch, heads_i, past_len + 1, head_dim_i): ``CausalLM.step`` (one token on the cache).

Positions: the prompt holds positions 0 .. seq-1; a decode step's token is at position
past_len, which the graph reads from the shape of ``past_key_values.0.key`` (a Shape op), so
there is no ``position_ids`` input: a client feeds back exactly the ``present`` tensors of the
call before. Batch, seq and past_len are dynamic. The MoE layers keep their real dispatch (only
the rows routed to an expert run through it), as in :mod:`moenas.profiler.onnx_export`, whose
:func:`~moenas.profiler.onnx_export.export_graphs` and
:class:`~moenas.profiler.onnx_export.ExportedArch` this module shares; the manifest also names
the family and the latency protocol the graphs are timed under.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from moenas.arch.arch import AnyArch, LMArch
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry
from moenas.arch.lm_model import CausalLM, build_lm_model
from moenas.arch.protocol import LMProtocol

from .onnx_export import DEFAULT_OPSET, ExportedArch, check_method, export_arch, export_graphs

PARTS = DECODER_ONLY.components  # ("prefill", "decode"): one graph per timed component


class PrefillGraph(nn.Module):
    """input_ids (B, L) -> (last logits (B, V), present k_0, v_0, k_1, v_1, ...)."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, cache = self.model.prefill(input_ids)
        return (logits, *(t for kv in cache for t in kv))


class DecodeStepGraph(nn.Module):
    """(input_ids (B, 1), past k_0, v_0, ...) -> (logits (B, V), present k_0, v_0, ...)."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, new = self.model.step(input_ids, cache)
        return (logits, *(t for kv in new for t in kv))


@contextmanager
def _layer_scopes(model: CausalLM) -> Iterator[None]:
    """While exporting, each layer's ``block`` goes through the module call, so the tracer
    records the layer's scope and node names say which layer they belong to
    (``/layers.0/ffn/experts.1/fc1/Gemm``, as the encoder-decoder graphs' do): CausalLM
    runs its layers through ``block`` directly, and the tracer would name every layer's nodes
    alike (``/ffn/experts.1/fc1_1/Gemm``)."""
    for layer in model.layers:
        layer.forward = layer.block  # instance attributes, removed again below
        layer.block = layer.__call__
    try:
        yield
    finally:
        for layer in model.layers:
            del layer.block, layer.forward


def _ids(seq: str | int) -> dict[str, Any]:
    return {"name": "input_ids", "dtype": "int64", "shape": ["batch", seq]}


def _cache(arch: LMArch, prefix: str, length: str) -> list[dict[str, Any]]:
    """One key and one value entry per layer: (batch, heads_i, length, qkv_dim / heads_i)."""
    return [
        {
            "name": f"{prefix}.{i}.{kind}",
            "dtype": "float32",
            "shape": ["batch", layer.heads, length, arch.qkv_dim // layer.heads],
        }
        for i, layer in enumerate(arch.decoder.layers)
        for kind in ("key", "value")
    ]


def io_spec(arch: LMArch) -> dict[str, Any]:
    """Input/output names and symbolic shapes of both graphs (what the manifest records)."""
    logits = {"name": "logits", "dtype": "float32", "shape": ["batch", arch.vocab_size]}
    return {
        "prefill": {"inputs": [_ids("seq")], "outputs": [logits, *_cache(arch, "present", "seq")]},
        "decode": {
            "inputs": [_ids(1), *_cache(arch, "past_key_values", "past_len")],
            "outputs": [logits, *_cache(arch, "present", "past_len_plus_1")],
        },
    }


def example_inputs(
    arch: LMArch, part: str, batch: int = 2, seq: int = 7, past_len: int = 3, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random feeds of ``part`` ('prefill': a (batch, seq) prompt; 'decode': one token per row
    and a random cache of ``past_len`` positions), for tracing and tests."""
    g = torch.Generator().manual_seed(seed)
    if part == "prefill":
        return {"input_ids": torch.randint(4, arch.vocab_size, (batch, seq), generator=g)}
    feeds = {"input_ids": torch.randint(4, arch.vocab_size, (batch, 1), generator=g)}
    for e in _cache(arch, "past_key_values", "past_len"):
        _, heads, _, head_dim = e["shape"]
        feeds[e["name"]] = torch.randn(batch, heads, past_len, head_dim, generator=g)
    return feeds


def export_lm(
    arch: LMArch,
    seed: int = 0,
    method: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    model: CausalLM | None = None,
    protocol: LMProtocol | None = None,
) -> ExportedArch:
    """Export ``arch`` (weights from ``build_lm_model(arch, seed)`` unless ``model`` is given);
    the manifest records ``protocol`` (the default LMProtocol when None)."""
    check_method(method)
    model = (model or build_lm_model(arch, seed)).eval()
    modules = {"prefill": PrefillGraph(model), "decode": DecodeStepGraph(model)}
    with _layer_scopes(model):
        ex = export_graphs(
            arch, modules, io_spec(arch), {p: example_inputs(arch, p) for p in PARTS}, seed, method, opset
        )
    ex.manifest.update(
        {
            "family": DECODER_ONLY.name,
            "protocol": (protocol or LMProtocol()).to_dict(),
            "tensor_names": "onnxruntime-genai (input_ids, past_key_values.%d.key/value, logits, present.%d.key/value)",
            "positions": "prompt token j at position j; a decode step's token at past_len, read from the shape "
            "of past_key_values.0.key (no position_ids input)",
        }
    )
    return ex


# Each family's export function: ``exporter(arch, seed=, method=, opset=)`` -> its graphs.
EXPORTERS: FamilyRegistry[Callable[..., ExportedArch]] = FamilyRegistry(
    "ONNX export", {ENCODER_DECODER: export_arch, DECODER_ONLY: export_lm}
)


def exporter_for(arch: AnyArch) -> Callable[..., ExportedArch]:
    """The export function of ``arch``'s family (:func:`export_lm` or
    :func:`~moenas.profiler.onnx_export.export_arch`), e.g. for ``export_to_dir(exporter=...)``."""
    return EXPORTERS.for_family(arch.family)
