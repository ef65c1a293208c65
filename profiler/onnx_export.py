"""Export one Arch to two ONNX graphs: the encoder and one incremental decoder step.

encoder.onnx
    src (batch, src_len) int64  ->  cross_{i}_k, cross_{i}_v for every decoder layer i,
    each (batch, cross_heads_i, cross_span_i * src_len, qkv_dim / cross_heads_i) float32.
    It runs ``encode`` and ``cross_kv`` (the cross-attention keys/values are computed once per
    sentence, as fairseq caches them).
decoder.onnx
    tokens (batch, 1) int64, cross_{i}_k/v (as above), past_{i}_k/v (batch, heads_i, past_len,
    head_dim) float32  ->  logits (batch, vocab) and present_{i}_k/v (batch, heads_i,
    past_len + 1, head_dim). ``past_len`` may be 0 (the first step).

Batch, source length and past length are dynamic. The MoE layers keep their real dispatch: for
each expert the exported graph gathers the token rows routed to it (NonZero + Gather), runs
the expert on those rows only and scatters them back, so an expert that receives no token runs
on an empty tensor and the work scales with T*k routed rows, not T*E.

Two exporters are supported: ``torchscript`` (``torch.onnx.export(dynamo=False)``, the
default: ~10x faster to export on CPU and exact to ~1e-6) and ``dynamo``
(``torch.export`` based). The TorchScript path exports without parameters and without the
exporter's constant folding, then declares the weights as external-data initializers that
sessions receive straight from the torch tensors' memory (``ExportedArch.session``): no
protobuf copy of ~300 MB of weights per automoe-wmt graph, and onnxruntime folds the same
constants at session creation (identical optimized graphs, checked). ``manifest.json`` next to the graphs records the names, shapes,
arch, seed, exporter, opset and software versions.

A decoder-only language model (``LMArch``) exports to ``prefill.onnx`` and ``decode.onnx``
(:mod:`moenas.profiler.onnx_export_lm`) through the same :func:`export_graphs` and
:class:`ExportedArch`.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from moenas.arch import Arch, UserError
from moenas.arch.arch import AnyArch
from moenas.arch.checks import check_fields, read_json
from moenas.arch.family import family_named
from moenas.arch.files import atomic_write_text, check_replaceable, json_dict, output_lock
from moenas.arch.model import SubTransformer, build_model
from moenas.arch.provenance import versions

MANIFEST = "manifest.json"
FORMAT = "moenas-onnx-export"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
# all an export of any family may write (the last three: with trained weights, moenas.search.trained_export)
EXPORT_FILES = (
    "encoder.onnx",
    "decoder.onnx",
    "prefill.onnx",
    "decode.onnx",
    MANIFEST,
    "tokenizer.json",
    "generation_config.json",
    "genai_config.json",
)


def check_export_dir(out: str | Path, overwrite: bool = False) -> None:
    """UserError unless ``out`` may receive an export: it holds none (or ``overwrite``), and
    no file of an export's name that an export did not write (``--out`` naming a folder of
    one's own ONNX files is refused even with --overwrite)."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UserError(f"{d} exists and is not a directory")
    if (json_dict(d / MANIFEST) or {}).get("format") != FORMAT:
        for name in EXPORT_FILES:
            check_replaceable(d / name, lambda p: False, "part of a moenas export (the folder holds no export)")
    elif not overwrite:
        raise UserError(f"{d} already holds an export; pass --overwrite to replace it")


METHODS = ("torchscript", "dynamo")


# ---- wrappers with flat tensor inputs/outputs -----------------------------------------------
class EncoderGraph(nn.Module):
    """src -> flat (k_0, v_0, k_1, v_1, ...) cross keys/values, one pair per decoder layer."""

    def __init__(self, model: SubTransformer):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states, _ = self.model.encode(src)
        return tuple(t for k, v, _ in self.model.cross_kv(states, None) for t in (k, v))


class DecoderStepGraph(nn.Module):
    """(tokens, cross k/v ..., past k/v ...) -> (logits, present k/v ...)."""

    def __init__(self, model: SubTransformer):
        super().__init__()
        self.model = model
        self.n = len(model.dec_layers)

    def forward(self, tokens: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.n
        cross = [(flat[2 * i], flat[2 * i + 1], None) for i in range(n)]
        cache = [(flat[2 * n + 2 * i], flat[2 * n + 2 * i + 1]) for i in range(n)]
        logits, new = self.model.step(tokens, cache, cross)
        return (logits, *(t for kv in new for t in kv))


# ---- names and shapes -----------------------------------------------------------------------
def io_spec(arch: Arch) -> dict[str, Any]:
    """Input/output names and symbolic shapes of both graphs (what the manifest records)."""
    q = arch.qkv_dim
    enc_out, dec_in_past, dec_out = [], [], []
    for i, layer in enumerate(arch.decoder.layers):
        ch = layer.cross_heads or layer.heads
        for kv in "kv":
            enc_out.append(
                {"name": f"cross_{i}_{kv}", "dtype": "float32", "shape": ["batch", ch, f"mem_len_{i}", q // ch]}
            )
            dec_in_past.append(
                {
                    "name": f"past_{i}_{kv}",
                    "dtype": "float32",
                    "shape": ["batch", layer.heads, "past_len", q // layer.heads],
                }
            )
            dec_out.append(
                {
                    "name": f"present_{i}_{kv}",
                    "dtype": "float32",
                    "shape": ["batch", layer.heads, "past_len_plus_1", q // layer.heads],
                }
            )
    return {
        "encoder": {"inputs": [{"name": "src", "dtype": "int64", "shape": ["batch", "src_len"]}], "outputs": enc_out},
        "decoder": {
            "inputs": [{"name": "tokens", "dtype": "int64", "shape": ["batch", 1]}] + enc_out + dec_in_past,
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", arch.vocab_size]}] + dec_out,
        },
        # mem_len_i = cross_span_i * src_len
        "cross_span": [layer.cross_span or 1 for layer in arch.decoder.layers],
    }


def example_inputs(
    arch: Arch, batch: int = 2, src_len: int = 7, past_len: int = 3, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of the right shapes (used for tracing and in tests)."""
    g = torch.Generator().manual_seed(seed)
    q = arch.qkv_dim
    feeds: dict[str, torch.Tensor] = {
        "src": torch.randint(4, arch.vocab_size, (batch, src_len), generator=g),
        "tokens": torch.randint(4, arch.vocab_size, (batch, 1), generator=g),
    }
    for i, layer in enumerate(arch.decoder.layers):
        ch = layer.cross_heads or layer.heads
        span = layer.cross_span or 1
        for kv in "kv":
            feeds[f"cross_{i}_{kv}"] = torch.randn(batch, ch, span * src_len, q // ch, generator=g)
            feeds[f"past_{i}_{kv}"] = torch.randn(batch, layer.heads, past_len, q // layer.heads, generator=g)
    return feeds


def _versions() -> dict[str, str]:
    return versions(("torch", "onnx", "onnxruntime", "onnxscript", "moenas"), python=False, missing=None)


# ---- export -----------------------------------------------------------------------------------
@dataclass
class ExportedArch:
    """Both graphs plus the manifest; nothing touches disk until :meth:`save`.

    The graphs are keyed by part, the components of the arch's family in run order
    (encoder-decoder: ``encoder``, ``decoder``; decoder-only: ``prefill``, ``decode``, see
    :mod:`moenas.profiler.onnx_export_lm`); part ``p`` is saved as ``manifest[p]["file"]``.

    ``graphs[part]`` is a serialized ONNX model. On the fast path (TorchScript export) its
    weights are initializers marked as external data, and the arrays live in ``weights``
    (shared with the torch model, no copy). :meth:`session` hands them to onnxruntime
    through ``SessionOptions.add_external_initializers``, so no protobuf ever holds the weights.
    :attr:`encoder` / :attr:`decoder` give self-contained model bytes (weights inline) for
    saving or for any other consumer."""

    arch: AnyArch
    graphs: dict[str, bytes]
    weights: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    _full: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def encoder(self) -> bytes:
        return self.model_bytes("encoder")

    @property
    def decoder(self) -> bytes:
        return self.model_bytes("decoder")

    def model_bytes(self, part: str) -> bytes:
        """Self-contained ONNX bytes of ``part`` (one of :attr:`graphs`)."""
        if part not in self._full:
            external = _external_names(self.graphs[part], self.weights)
            if not external:
                self._full[part] = self.graphs[part]
            else:
                import onnx

                proto = onnx.load_from_string(self.graphs[part])
                for init in proto.graph.initializer:
                    if init.name in external:
                        init.ClearField("external_data")
                        init.data_location = onnx.TensorProto.DEFAULT
                        init.raw_data = self.weights[init.name].tobytes()
                self._full[part] = proto.SerializeToString()
        return self._full[part]

    def session(self, part: str, options=None, providers=None):
        """An onnxruntime InferenceSession for ``part`` (weights supplied from memory)."""
        import onnxruntime as ort

        options = options or ort.SessionOptions()
        names = sorted(_external_names(self.graphs[part], self.weights))
        values = [ort.OrtValue.ortvalue_from_numpy(self.weights[n]) for n in names]
        if names:
            options.add_external_initializers(names, values)
        sess = ort.InferenceSession(self.graphs[part], options, providers=providers or ["CPUExecutionProvider"])
        sess._moenas_weights = values  # keep the shared buffers alive as long as the session
        return sess

    def save(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        out = Path(out_dir)
        check_export_dir(out, overwrite)
        out.mkdir(parents=True, exist_ok=True)
        # the graphs go to temporary names first and are renamed together, the manifest last: a
        # kill while hundreds of MB are written leaves no half export, which the next run could
        # not tell from someone's own ONNX files (and would refuse to replace)
        tmps = [
            (out / f".{name}.{os.getpid()}.tmp", out / name, self.model_bytes(part))
            for part, name in self.files().items()
        ]
        try:
            for tmp, _, blob in tmps:
                tmp.write_bytes(blob)
            for tmp, dst, _ in tmps:
                os.replace(tmp, dst)
        finally:
            for tmp, _, _ in tmps:
                tmp.unlink(missing_ok=True)
        atomic_write_text(out / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        return out

    def files(self) -> dict[str, str]:
        """part -> the file name it is saved under, in run order."""
        return {part: self.manifest.get(part, {}).get("file", f"{part}.onnx") for part in self.graphs}

    @classmethod
    def load(cls, out_dir: str | Path) -> "ExportedArch":
        d = Path(out_dir)
        if not (d / MANIFEST).is_file():
            raise UserError(f"{d}: no {MANIFEST} (not a moenas export)")
        manifest = read_json(d / MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UserError(f"{d}: not a moenas export")
        parts = manifest_parts(manifest, str(d / MANIFEST))
        check_fields(manifest, str(d / MANIFEST), {"arch": dict, **{p: dict for p in parts}}, {"tokenizer": str})
        for part in parts:
            check_fields(manifest[part], f"{d / MANIFEST} {part}", {"file": str})
        arch = Arch.from_dict(manifest["arch"])
        graphs = {p: (d / manifest[p]["file"]).read_bytes() for p in parts}
        return cls(arch, graphs, {}, manifest)


def manifest_parts(manifest: dict[str, Any], where: str) -> tuple[str, ...]:
    """The graphs an export's manifest lists, in run order: one per component of the family it
    names (no family: encoder-decoder's ``encoder``, ``decoder``)."""
    return family_named(manifest, where).components


def _external_names(graph: bytes, weights: dict[str, Any]) -> set[str]:
    """Names of ``graph``'s initializers whose data is in ``weights`` (cheap: the weightless
    graph is small)."""
    if not weights:
        return set()
    import onnx

    proto = onnx.load_from_string(graph)
    return {
        i.name for i in proto.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL and i.name in weights
    }


def _export_one(
    module: nn.Module,
    args: tuple,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    method: str,
    opset: int,
    weights: dict[str, Any],
) -> bytes:
    """Serialized graph of ``module``. TorchScript path: exported without parameters (they
    become graph inputs named like ``model.enc_layers.0.attn.q_proj.weight``), which are then
    turned into external-data initializers whose arrays go into ``weights``."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "torchscript":
            f = io.BytesIO()
            torch.onnx.export(
                module,
                args,
                f,
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=False,
                export_params=False,
            )
            proto = onnx.load_from_string(f.getvalue())
            params = {n: p.detach() for n, p in module.named_parameters()}
            keep = []
            for inp in proto.graph.input:
                if inp.name in input_names:
                    keep.append(inp)
                    continue
                if inp.name not in params:
                    raise RuntimeError(f"export: unexpected graph input {inp.name!r}")
                arr = params[inp.name].contiguous().numpy()
                if arr.dtype != np.float32:
                    raise RuntimeError(f"export: parameter {inp.name} is {arr.dtype}, expected float32")
                weights[inp.name] = arr
                tp = onnx.TensorProto(
                    name=inp.name,
                    data_type=onnx.TensorProto.FLOAT,
                    dims=list(arr.shape),
                    data_location=onnx.TensorProto.EXTERNAL,
                )
                entry = tp.external_data.add()
                entry.key, entry.value = "location", "moenas-in-memory"
                proto.graph.initializer.append(tp)
            del proto.graph.input[:]
            proto.graph.input.extend(keep)
            return proto.SerializeToString()
        # dynamo: every axis named in dynamic_axes becomes Dim.AUTO
        auto = torch.export.Dim.AUTO
        shapes = tuple({ax: auto for ax in dynamic_axes.get(name, {})} for name in input_names[: len(args)])
        if len(args) > 1:  # forward(tokens, *flat): dynamic_shapes mirrors the call signature
            shapes = (shapes[0], shapes[1:])
        prog = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=shapes,
            opset_version=max(opset, 18),
            optimize=True,
            verbose=False,
        )
        return onnx.ModelProto.SerializeToString(prog.model_proto)


def check_method(method: str) -> None:
    """UserError unless ``method`` is an exporter this module knows (:data:`METHODS`)."""
    if method not in METHODS:
        raise UserError(f"unknown export method {method!r} (choose from {', '.join(METHODS)})")


def _axes(entries: list[dict]) -> dict[str, dict[int, str]]:
    """name -> {axis: symbol} for every symbolic (string) dimension of the spec ``entries``."""
    return {e["name"]: {i: d for i, d in enumerate(e["shape"]) if isinstance(d, str)} for e in entries}


def export_graphs(
    arch: AnyArch,
    modules: dict[str, nn.Module],
    spec: dict[str, Any],
    feeds: dict[str, dict[str, torch.Tensor]],
    seed: int,
    method: str,
    opset: int,
) -> ExportedArch:
    """Export each part's wrapper module (flat tensor inputs/outputs named as ``spec[part]``
    lists them, traced on ``feeds[part]``, the spec's string dimensions dynamic) into one
    :class:`ExportedArch` whose manifest records names, shapes, seed, exporter and versions;
    part ``p`` is saved as ``p.onnx``. Shared by every family's export."""
    weights: dict[str, Any] = {}
    graphs = {}
    with torch.no_grad():
        for part, module in modules.items():
            ins = [e["name"] for e in spec[part]["inputs"]]
            outs = [e["name"] for e in spec[part]["outputs"]]
            graphs[part] = _export_one(
                module,
                tuple(feeds[part][n] for n in ins),
                ins,
                outs,
                _axes(spec[part]["inputs"] + spec[part]["outputs"]),
                method,
                opset,
                weights,
            )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch_id": arch.arch_id,
        "arch": arch.to_dict(),
        "seed": seed,
        "method": method,
        "opset": opset if method == "torchscript" else max(opset, 18),
        "versions": _versions(),
        **{part: {"file": f"{part}.onnx", **spec[part]} for part in modules},
    }
    return ExportedArch(arch, graphs, weights, manifest)


def export_arch(
    arch: Arch,
    seed: int = 0,
    method: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    model: SubTransformer | None = None,
) -> ExportedArch:
    """Export ``arch`` (weights from ``build_model(arch, seed)`` unless ``model`` is given)."""
    check_method(method)
    model = (model or build_model(arch, seed)).eval()
    spec = io_spec(arch)
    feeds = example_inputs(arch)
    ex = export_graphs(
        arch,
        {"encoder": EncoderGraph(model), "decoder": DecoderStepGraph(model)},
        spec,
        {"encoder": feeds, "decoder": feeds},
        seed,
        method,
        opset,
    )
    ex.manifest["cross_span"] = spec["cross_span"]
    return ex


def export_to_dir(
    arch: AnyArch,
    out_dir: str | Path,
    seed: int = 0,
    method: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    exporter: Callable[..., ExportedArch] = export_arch,
) -> Path:
    """Export and write the graphs (``encoder.onnx``, ``decoder.onnx`` from :func:`export_arch`;
    another family's from its ``exporter``, e.g. :func:`~moenas.profiler.onnx_export_lm.exporter_for`)
    and ``manifest.json`` into ``out_dir``."""
    out = Path(out_dir)
    with output_lock(out, "export folder"):
        check_export_dir(out, overwrite)  # refuse before spending time on the export
        return exporter(arch, seed=seed, method=method, opset=opset).save(out, overwrite=overwrite)
