"""An export with trained weights, the part every model family shares: writing it (graphs with a
checkpoint's weights inline, the tokenizer, the manifest and the two client configs) and opening
it again for onnxruntime.

What differs per family is a :class:`Deployment`: how its graphs are exported from a trained
model, the decoding conventions the manifest records, and its ``generation_config.json`` /
``genai_config.json``. The translation family's is ``moenas.search.deploy.TRANSLATION``, the
language model's ``moenas.search.lm_deploy.LM_DEPLOYMENT``; ``moenas.search.deploy.export_trained``
picks one by family. Written here once, the rest stays the same for both: the output lock and
folder check before any work, the family check of the checkpoint (a translation checkpoint
given to a language-model arch is one UserError line), the ``weights`` record, the tokenizer
copy, and on reading, the checks that a folder holds a trained export of the expected family.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moenas.arch import UserError
from moenas.arch.arch import AnyArch
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, ModelFamily
from moenas.arch.files import output_lock
from moenas.arch.protocol import Protocol, protocol_for
from moenas.data.tokenizer import SubwordTokenizer
from moenas.profiler.onnx_export import ExportedArch, check_export_dir, manifest_parts

from .checkpoint import MODEL_NAMES, load_tokenizer, model_for_arch, read_checkpoint

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILES = ("generation_config.json", "genai_config.json")
# The command that runs each family's export (named when a folder of the other family is given).
RUN_COMMANDS = {ENCODER_DECODER.name: "moenas translate", DECODER_ONLY.name: "moenas generate"}


@dataclass(frozen=True)
class Deployment:
    """One family's part of an export with trained weights.

    ``export(model, opset)``: the family's graphs with the trained model's weights;
    ``conventions(ex, meta)``: the manifest's ``generation`` entry (every convention a client
    needs beside the tensor names), from the export and the checkpoint's metadata;
    ``generation_config(manifest)`` / ``genai_config(manifest)``: the two client configs, in
    Hugging Face's and onnxruntime-genai's vocabulary."""

    family: ModelFamily
    export: Callable[[Any, int], ExportedArch]
    conventions: Callable[[ExportedArch, dict[str, Any]], dict[str, Any]]
    generation_config: Callable[[dict[str, Any]], dict[str, Any]]
    genai_config: Callable[[dict[str, Any]], dict[str, Any]]


def export_with_weights(
    deployment: Deployment,
    arch: AnyArch | None,
    ckpt: str | Path,
    out_dir: str | Path,
    opset: int,
    overwrite: bool = False,
    protocol: Protocol | None = None,
) -> Path:
    """Export ``arch`` (None: the standalone model of ``ckpt``) with the weights of checkpoint
    ``ckpt`` as ``deployment`` says, into ``out_dir``; ``protocol``: the latency protocol the
    arch was timed under (recorded; default: the family's default one)."""
    protocol = protocol or protocol_for(deployment.family)
    if protocol.family is not deployment.family:
        raise UserError(f"a {protocol.family.name} latency protocol for a {deployment.family.name} export")
    out = Path(out_dir)
    with output_lock(out, "export folder"):
        check_export_dir(out, overwrite)  # refuse before spending time on the export
        kind = read_checkpoint(ckpt)["kind"]
        model, meta = model_for_arch(ckpt, arch, family=deployment.family)
        tok = load_tokenizer(meta)
        ex = deployment.export(model, opset)
        ex.manifest.update(
            {
                "weights": {
                    "source": "supernet (inherited)" if kind == "supernet" else "standalone checkpoint",
                    "checkpoint": str(Path(ckpt).resolve()),
                    "steps": meta.get("steps"),
                    "corpus_fingerprint": meta.get("corpus_fingerprint"),
                },
                "seed": None,  # the weights are trained, not drawn from a seed
                "tokenizer": TOKENIZER_FILE,
                "protocol": protocol.to_dict(),
            }
        )
        ex.manifest["generation"] = deployment.conventions(ex, meta)
        ex.save(out, overwrite=overwrite)
        shutil.copyfile(tok.path, out / TOKENIZER_FILE)
        for name, make in zip(CONFIG_FILES, (deployment.generation_config, deployment.genai_config)):
            (out / name).write_text(json.dumps(make(ex.manifest), indent=2) + "\n")
        return out


@dataclass
class TrainedExport:
    """An export folder opened for running: its arch, manifest, tokenizer and one onnxruntime
    session per graph (keyed by part: ``encoder``/``decoder`` or ``prefill``/``decode``)."""

    arch: AnyArch
    manifest: dict[str, Any]
    tokenizer: SubwordTokenizer
    sessions: dict[str, Any]


def open_export(model_dir: str | Path, family: ModelFamily, threads: int = 0) -> TrainedExport:
    """The export in ``model_dir``, checked to hold trained weights of ``family`` (one UserError
    line otherwise: no folder, no export, random weights, the other family, a damaged graph);
    sessions on the CPU with ``threads`` intra-op threads (0: onnxruntime's default)."""
    import onnxruntime as ort

    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such directory")
    ex = ExportedArch.load(d)
    if ex.arch.family is not family:
        found = ex.arch.family.name
        raise UserError(f"{d}: holds a {MODEL_NAMES[found]} ({found}); run it with {RUN_COMMANDS[found]}")
    if not ex.manifest.get("tokenizer"):
        raise UserError(
            f"{d}: an export without trained weights and tokenizer (export with --supernet or --checkpoint)"
        )
    tokenizer = SubwordTokenizer.load(d / ex.manifest["tokenizer"])
    sessions = {}
    for part in manifest_parts(ex.manifest, str(d)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        try:
            sessions[part] = ex.session(part, opts)
        except Exception as e:  # onnxruntime's own exception types for a truncated or foreign graph
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"{d / ex.manifest[part]['file']}: not a loadable ONNX graph ({reason})") from None
    return TrainedExport(ex.arch, ex.manifest, tokenizer, sessions)
