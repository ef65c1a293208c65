"""`Arch`: the canonical description of one sub-Transformer, and its stable id.

An Arch is plain data (frozen dataclasses of ints and tuples). Its canonical JSON form
(sorted keys, no whitespace, schema version inside) is what gets hashed into `arch_id`, stored
in profile datasets and passed between tools, so two processes that build the same Arch agree
on its id without sharing any state.

A layer's FFN is ``experts``: a tuple of expert hidden sizes. One entry is a dense FFN; more
entries make a Mixture-of-Experts layer with a router and top-k dispatch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LayerArch:
    """One encoder or decoder layer.

    heads: self-attention heads (head dim = qkv_dim // heads).
    experts: hidden size of each expert; ``(h,)`` is a dense FFN.
    cross_heads / cross_span: decoder only; cross_span = how many of the last encoder layers'
    outputs the layer attends to, joined along the sequence (HAT's arbitrary enc-dec attention).
    """

    heads: int
    experts: tuple[int, ...]
    cross_heads: int | None = None
    cross_span: int | None = None

    @property
    def is_moe(self) -> bool:
        return len(self.experts) > 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"heads": self.heads, "experts": list(self.experts)}
        if self.cross_heads is not None:
            d["cross_heads"] = self.cross_heads
            d["cross_span"] = self.cross_span
        return d


@dataclass(frozen=True)
class StackArch:
    """The encoder or the decoder: one embedding width and a list of layers."""

    embed_dim: int
    layers: tuple[LayerArch, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Arch:
    """A whole encoder-decoder sub-Transformer; see the module docstring."""

    encoder: StackArch
    decoder: StackArch
    top_k: int = 1
    qkv_dim: int = 512
    vocab_size: int = 32000
    schema_version: int = field(default=SCHEMA_VERSION, compare=False)

    # ---- canonical form -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "vocab_size": self.vocab_size,
            "qkv_dim": self.qkv_dim,
            "top_k": self.top_k,
            "encoder": self.encoder.to_dict(),
            "decoder": self.decoder.to_dict(),
        }

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON (sorted keys, compact) unless ``indent`` asks for a readable form."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @property
    def arch_id(self) -> str:
        """12 hex chars of SHA-256 over the canonical JSON: stable across processes and runs."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Arch":
        """Parse a dict; structural problems raise UserError naming the field path."""
        if not isinstance(d, dict):
            raise UserError(f"arch must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise UserError(f"schema_version: {version!r} is not supported (this moenas reads {SCHEMA_VERSION})")
        try:
            return cls(
                encoder=_stack_from_dict(d["encoder"], "encoder", decoder=False),
                decoder=_stack_from_dict(d["decoder"], "decoder", decoder=True),
                top_k=_int(d.get("top_k", 1), "top_k"),
                qkv_dim=_int(d.get("qkv_dim", 512), "qkv_dim"),
                vocab_size=_int(d.get("vocab_size", 32000), "vocab_size"),
            )
        except KeyError as e:
            raise UserError(f"arch is missing the field {e.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed arch JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(d)

    # ---- convenience ----------------------------------------------------------------------
    @property
    def layers(self) -> Iterable[tuple[str, int, LayerArch]]:
        """(stack name, index, layer) for every layer, encoder first."""
        for name, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, layer in enumerate(stack.layers):
                yield name, i, layer

    @property
    def is_dense(self) -> bool:
        return not any(layer.is_moe for _, _, layer in self.layers)

    @property
    def max_cross_span(self) -> int:
        return max(layer.cross_span or 1 for layer in self.decoder.layers)


def _int(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{path}: expected an integer, got {v!r}")
    return v


def _stack_from_dict(d: Any, path: str, decoder: bool) -> StackArch:
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected an object with embed_dim and layers")
    layers_raw = d.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise UserError(f"{path}.layers: expected a non-empty list of layers")
    layers = []
    for i, ld in enumerate(layers_raw):
        lp = f"{path}.layers[{i}]"
        if not isinstance(ld, dict):
            raise UserError(f"{lp}: expected an object")
        experts = ld.get("experts")
        if not isinstance(experts, list) or not experts:
            raise UserError(f"{lp}.experts: expected a non-empty list of expert hidden sizes")
        layers.append(
            LayerArch(
                heads=_int(ld.get("heads"), f"{lp}.heads"),
                experts=tuple(_int(h, f"{lp}.experts[{j}]") for j, h in enumerate(experts)),
                cross_heads=_int(ld.get("cross_heads"), f"{lp}.cross_heads") if decoder else None,
                cross_span=_int(ld.get("cross_span"), f"{lp}.cross_span") if decoder else None,
            )
        )
    return StackArch(embed_dim=_int(d.get("embed_dim"), f"{path}.embed_dim"), layers=tuple(layers))


def load_arch(path: str | Path) -> Arch:
    """Read one Arch from a JSON file (or the first line of a JSON-lines file)."""
    return load_archs(path)[0]


def load_archs(path: str | Path) -> list[Arch]:
    """Read a JSON file holding one Arch, or a JSON-lines file with one Arch per line."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    text = p.read_text().strip()
    if not text:
        raise UserError(f"{p}: the file is empty")
    try:
        return [Arch.from_json(text)]
    except UserError:
        if "\n" not in text:
            raise
    archs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                archs.append(Arch.from_json(line))
            except UserError as e:
                raise UserError(f"{p}:{n}: {e}") from None
    return archs


def save_archs(archs: Iterable[Arch], path: str | Path) -> None:
    """Write archs as JSON lines (canonical form, one per line)."""
    Path(path).write_text("".join(a.to_json() + "\n" for a in archs))
