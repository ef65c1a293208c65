"""Checkpoint I/O: what a training run writes and everything else reads back.

A checkpoint is ``torch.save`` of tensors and primitive containers only (loadable with
``torch.load(weights_only=True)``, so a hostile file runs no code): format and version, kind
(``supernet`` or ``standalone``), the training config, the supernet config or the arch, model
and optimizer state, step, arch-sampler RNG, data position and every rank's torch RNG state
(what makes resume exact). A metadata JSON beside it (``<out>.json``) records the space,
corpus fingerprint, tokenizer path, validation history and versions for people and tools.

Both record the model family (``family``: encoder-decoder translation or decoder-only language
model; a checkpoint written before families existed is encoder-decoder). A reader says which
family it expects (``family=``; translation by default, as every reader expected before), and
a checkpoint of the other is one UserError line, not a shape error deep in ``load_state_dict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moenas.arch import Arch, LMArch, UserError
from moenas.arch.checks import check_fields
from moenas.arch.family import (
    DECODER_ONLY,
    DEFAULT_FAMILY,
    ENCODER_DECODER,
    FamilyRegistry,
    ModelFamily,
    family_named,
    get_family,
)
from moenas.arch.files import atomic_write, atomic_write_text, check_replaceable, json_dict
from moenas.arch.lm_model import CausalLM
from moenas.arch.model import SubTransformer
from moenas.arch.provenance import versions as _versions
from moenas.data.batching import Batch
from moenas.data.tokenizer import SubwordTokenizer

from .supernet import SuperNet, SupernetConfig, extract, model_class, supernet_from_config
from .train_config import TrainConfig
from .train_data import lm_valid_blocks, load_corpus_for, translation_valid_batches

CKPT_FORMAT = "moenas-checkpoint"
CKPT_VERSION = 1
# What every reader indexes without guarding (resume, search's fitness, export, the demo): a
# damaged or hand-made checkpoint is refused by read_checkpoint, not met as a KeyError later.
_REQUIRED = {"kind": str, "model": dict, "meta": dict, "train_config": dict, "step": int}
_OPTIONAL = {"optimizer": dict, "data": dict, "rng": dict, "supernet_config": dict, "arch": str, "family": str}
_BY_KIND = {"supernet": {"supernet_config": dict}, "standalone": {"arch": str}}
_META_REQUIRED = {"corpus_fingerprint": str, "tokenizer": str, "train_config": dict}
_META_OPTIONAL = {"history": list, "space": str, "kind": str, "format": str, "family": str}
# What each family's model is called in messages.
MODEL_NAMES: FamilyRegistry[str] = FamilyRegistry(
    "model name", {ENCODER_DECODER: "translation model", DECODER_ONLY: "language model"}
)


def meta_path(ckpt: str | Path) -> Path:
    p = Path(ckpt)
    return p.with_name(p.name + ".json")


def check_meta_replaceable(ckpt: str | Path) -> None:
    """UserError when the sidecar's name (``X.pt.json``; ``runs/x`` -> ``runs/x.json``) holds a
    file that is not a checkpoint's metadata: a run writes it, and must not replace a user's."""
    check_replaceable(
        meta_path(ckpt), lambda p: (json_dict(p) or {}).get("format") == CKPT_FORMAT, "a moenas checkpoint's metadata"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; UserError when missing, unreadable or not a moenas checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle/EOF errors of a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{p}: not a readable moenas checkpoint ({msg[:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise UserError(f"{p}: not a moenas checkpoint")
    if ck.get("version") != CKPT_VERSION:
        raise UserError(
            f"{p}: checkpoint version {ck.get('version')!r} is not supported (this moenas reads {CKPT_VERSION})"
        )
    check_fields(ck, f"{p} (damaged checkpoint)", _REQUIRED, _OPTIONAL)
    if ck["kind"] not in _BY_KIND:
        raise UserError(f"{p}: unknown checkpoint kind {ck['kind']!r}")
    check_fields(ck, f"{p} (damaged {ck['kind']} checkpoint)", _BY_KIND[ck["kind"]])
    if ck["kind"] == "supernet":
        check_fields(ck["supernet_config"], f"{p} supernet config", {"space": dict, "kind": str})
    check_fields(ck["meta"], f"{p} metadata", _META_REQUIRED, _META_OPTIONAL)
    found = content_family(ck, p)
    if ck.get("family", DEFAULT_FAMILY.name) != found.name:
        raise UserError(f"{p}: damaged checkpoint (family {ck['family']!r} but it holds a {found.name} model)")
    for where, d in (
        ("training config", ck["train_config"]),
        ("metadata's training config", ck["meta"]["train_config"]),
    ):
        try:
            TrainConfig.from_dict(d)  # its own type and range checks
        except (UserError, TypeError) as e:
            raise UserError(f"{p}: damaged checkpoint ({where}: {e})") from None
    return ck


def content_family(ck: dict[str, Any], where: Any) -> ModelFamily:
    """The family of what a checkpoint holds: its supernet space's, or its standalone arch's."""
    if ck["kind"] == "supernet":
        return family_named(ck["supernet_config"]["space"], f"{where}: supernet space")
    try:
        return Arch.from_json(ck["arch"]).family
    except UserError as e:
        raise UserError(f"{where}: damaged checkpoint ({e})") from None


def meta_family(meta: dict[str, Any]) -> ModelFamily:
    """The family a checkpoint's metadata records (encoder-decoder when it records none)."""
    return get_family(meta.get("family", DEFAULT_FAMILY.name))


def check_family(found: ModelFamily, expected: ModelFamily | None, where: Any) -> None:
    """One UserError line unless ``found`` is ``expected`` (None: any family will do)."""
    if expected is not None and found is not expected:
        raise UserError(
            f"{where}: holds a {MODEL_NAMES.for_family(found)} ({found.name}), not the "
            f"{MODEL_NAMES.for_family(expected)} ({expected.name}) expected here"
        )


def write_checkpoint(state: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    """Atomically write the checkpoint, then its metadata sidecar."""
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    write_meta(meta, out)


def write_meta(meta: dict[str, Any], out: Path) -> None:
    atomic_write_text(meta_path(out), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_state(model: nn.Module, state: dict, ckpt: Any) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{ckpt}: weights do not fit the model ({str(e).splitlines()[0][:160]})") from None


def load_supernet(
    ckpt: str | Path, device: str | torch.device = "cpu", family: ModelFamily | None = ENCODER_DECODER
) -> tuple[SuperNet, dict[str, Any]]:
    """(supernet in eval mode, metadata) from a supernet checkpoint written by ``train``, of
    ``family`` (None: either; a language model's is an LMSuperNet)."""
    ck = read_checkpoint(ckpt)
    check_family(content_family(ck, ckpt), family, ckpt)
    if ck["kind"] != "supernet":
        raise UserError(f"{ckpt}: holds a standalone sub-Transformer, not a supernet (use load_model)")
    try:
        net = supernet_from_config(SupernetConfig.from_dict(ck["supernet_config"]))
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{ckpt}: damaged supernet config ({e})") from None
    load_state(net, ck["model"], ckpt)
    return net.to(device).eval(), dict(ck["meta"])


def load_model(
    ckpt: str | Path, device: str | torch.device = "cpu", family: ModelFamily | None = ENCODER_DECODER
) -> tuple[SubTransformer | CausalLM, dict[str, Any]]:
    """(standalone model in eval mode, metadata) from a standalone checkpoint (``train --arch``)
    of ``family`` (None: either): a SubTransformer, or a CausalLM for a language model."""
    ck = read_checkpoint(ckpt)
    check_family(content_family(ck, ckpt), family, ckpt)
    if ck["kind"] != "standalone":
        raise UserError(f"{ckpt}: holds a supernet; extract an arch with moenas.search.supernet.extract")
    arch = Arch.from_json(ck["arch"])
    model = model_class(arch.family)(arch)
    load_state(model, ck["model"], ckpt)
    return model.to(device).eval(), dict(ck["meta"])


def model_for_arch(
    ckpt: str | Path, arch: Arch | LMArch | None, family: ModelFamily | None = ENCODER_DECODER
) -> tuple[SubTransformer | CausalLM, dict[str, Any]]:
    """A trained standalone model of ``family`` from either kind of checkpoint: ``arch``'s
    inherited weights from a supernet (the arch must lie in its space), or the standalone model
    (``arch`` None or equal to the one it holds)."""
    kind = read_checkpoint(ckpt)["kind"]
    if kind == "supernet":
        if arch is None:
            raise UserError(f"{ckpt}: a supernet checkpoint needs an arch to extract")
        net, meta = load_supernet(ckpt, family=family)
        try:
            net.space.validate(arch)
        except UserError as e:
            raise UserError(f"arch {arch.arch_id} is outside the space {net.space.name!r} of {ckpt}: {e}") from None
        return extract(net, arch), meta
    model, meta = load_model(ckpt, family=family)
    if arch is not None and arch != model.arch:
        raise UserError(f"{ckpt}: holds arch {model.arch.arch_id}, not {arch.arch_id}")
    return model, meta


def load_tokenizer(meta: dict[str, Any]) -> SubwordTokenizer:
    path = meta.get("tokenizer")
    if not isinstance(path, str):
        raise UserError("checkpoint metadata names no tokenizer")
    return SubwordTokenizer.load(path)


def checkpoint_corpus(meta: dict[str, Any]):
    """The corpus a checkpoint was trained on (parallel, or a language model's text), checked
    against its recorded fingerprint."""
    tcfg = TrainConfig.from_dict(meta["train_config"])
    corpus = load_corpus_for(meta_family(meta), tcfg.corpus)
    if corpus.fingerprint != meta["corpus_fingerprint"]:
        raise UserError(
            f"corpus {tcfg.corpus!r} changed since training (fingerprint {corpus.fingerprint} != {meta['corpus_fingerprint']})"
        )
    return corpus


def validation_data(
    meta: dict[str, Any],
    n_sentences: int | None = None,
    max_tokens: int | None = None,
    split: str = "valid",
    corpus=None,
) -> tuple[list[Batch], list[tuple[str, str]]]:
    """The fixed validation subset a checkpoint was evaluated on: (batches, pairs). Reloads the
    corpus (unless the caller passes the one it read with :func:`checkpoint_corpus`) and the
    tokenizer recorded in ``meta``, and checks the corpus fingerprint. Translation only
    (:func:`lm_validation_data` for a language model)."""
    check_family(meta_family(meta), ENCODER_DECODER, "checkpoint metadata")
    tcfg = TrainConfig.from_dict(meta["train_config"])
    if max_tokens:
        tcfg.max_tokens = max_tokens
    corpus = checkpoint_corpus(meta) if corpus is None else corpus
    tok = load_tokenizer(meta)
    pairs = getattr(corpus, split)[: n_sentences or tcfg.valid_sentences]
    return translation_valid_batches(tcfg, tok, pairs), pairs


def lm_validation_data(meta: dict[str, Any], n_blocks: int | None = None, corpus=None) -> torch.Tensor:
    """The fixed validation blocks (n, block_len + 1) a language-model checkpoint was evaluated
    on (the first ``n_blocks``, default its ``valid_sentences``), for
    :func:`moenas.search.evaluation.lm_validation`. Reloads the corpus (fingerprint checked) and
    the tokenizer recorded in ``meta``."""
    check_family(meta_family(meta), DECODER_ONLY, "checkpoint metadata")
    tcfg = TrainConfig.from_dict(meta["train_config"])
    corpus = checkpoint_corpus(meta) if corpus is None else corpus
    return lm_valid_blocks(tcfg, corpus, load_tokenizer(meta), n_blocks)


def versions() -> dict[str, str]:
    """What a checkpoint was trained with."""
    return _versions(("torch", "tokenizers", "moenas"))
