"""`Arch`: the canonical description of one sub-Transformer, and its stable id.

An Arch is plain data (frozen dataclasses of ints and tuples). Its canonical JSON form
(sorted keys, no whitespace, schema version inside) is what gets hashed into `arch_id`, stored
in profile datasets and passed between tools, so two processes that build the same Arch agree
on its id without sharing any state.

A layer's FFN is ``experts``: a tuple of expert hidden sizes. One entry is a dense FFN; more
entries make a Mixture-of-Experts layer with a router and top-k dispatch.

Two model families (``arch/family.py``) share these pieces: :class:`Arch`, an encoder-decoder
translation model (its JSON has no ``family`` field, as before families existed), and
:class:`LMArch`, a decoder-only causal language model (its JSON says ``"family":
"decoder-only"``). Both live here because they share the layer, stack and parsing helpers and
because :meth:`Arch.from_dict`, what every reader of arch JSON calls, hands an arch of another
family to its class's ``from_dict`` (:data:`ARCH_CLASSES`, where each arch class registers).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

from .checks import parse_json, read_text
from .errors import UserError
from .family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily, family_named

SCHEMA_VERSION = 1
# family name -> its arch class (each registers below): what a dict naming that family parses as
ARCH_CLASSES: FamilyRegistry[type["ArchBase"]] = FamilyRegistry("arch class")


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


class ArchBase:
    """What both families' archs share: canonical JSON, the id, iteration over layers."""

    family: ClassVar[ModelFamily]

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

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
    def from_dict(cls, d: dict[str, Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Parse canonical (or any) JSON text; see ``from_dict``."""
        return cls.from_dict(parse_json(text, "arch JSON"))

    @property
    def layers(self) -> Iterable[tuple[str, int, LayerArch]]:
        raise NotImplementedError

    @property
    def is_dense(self) -> bool:
        return not any(layer.is_moe for _, _, layer in self.layers)


@ARCH_CLASSES.register
@dataclass(frozen=True)
class Arch(ArchBase):
    """A whole encoder-decoder sub-Transformer; see the module docstring."""

    family: ClassVar[ModelFamily] = ENCODER_DECODER  # not a field: its JSON and arch_id stay as they were
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Arch | LMArch":
        """Parse a dict; structural problems raise UserError naming the field path.

        Rejected with or without a space (what no model can be built from, or what a typo
        would silently drop): unknown fields, wrong types, sizes <= 0, ``qkv_dim`` not
        divisible by a head count, a cross span deeper than the encoder.

        Any family's arch: a dict naming another family is parsed by that family's class of
        :data:`ARCH_CLASSES` (``"decoder-only"``: an :class:`LMArch`); ``"encoder-decoder"``, or
        no family, is this class."""
        family = family_named(d, "arch")
        if family is not cls.family:
            return ARCH_CLASSES.for_family(family).from_dict(d)
        d = {k: v for k, v in d.items() if k != "family"}
        _known(d, _ARCH_FIELDS, "arch")
        _check_version(d)
        try:
            arch = cls(
                encoder=_stack_from_dict(d["encoder"], "encoder", decoder=False),
                decoder=_stack_from_dict(d["decoder"], "decoder", decoder=True),
                **_model_fields(d),
            )
        except KeyError as e:
            raise UserError(f"arch is missing the field {e.args[0]!r}") from None
        _check_shape(arch)
        return arch

    # ---- convenience ----------------------------------------------------------------------
    @property
    def layers(self) -> Iterable[tuple[str, int, LayerArch]]:
        """(stack name, index, layer) for every layer, encoder first."""
        for name, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            for i, layer in enumerate(stack.layers):
                yield name, i, layer

    @property
    def max_cross_span(self) -> int:
        return max(layer.cross_span or 1 for layer in self.decoder.layers)


@ARCH_CLASSES.register
@dataclass(frozen=True)
class LMArch(ArchBase):
    """A decoder-only causal language model: token embedding (tied to the output projection),
    ``decoder.layers`` of self-attention (no cross attention) and an FFN each, a final norm.

    The stack is a :class:`StackArch` under the name ``decoder``, so ``arch.decoder.embed_dim``,
    ``arch.decoder.layers`` and :attr:`layers` (("decoder", i, layer)) read as they do for an
    :class:`Arch`, and MoE routing counts are keyed ``decoder.i`` in both families."""

    family: ClassVar[ModelFamily] = DECODER_ONLY
    decoder: StackArch
    top_k: int = 1
    qkv_dim: int = 512
    vocab_size: int = 32000
    schema_version: int = field(default=SCHEMA_VERSION, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "family": self.family.name,
            "vocab_size": self.vocab_size,
            "qkv_dim": self.qkv_dim,
            "top_k": self.top_k,
            "decoder": self.decoder.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LMArch":
        """Parse a dict (``family`` must be ``decoder-only`` or absent); the same checks and
        field-path messages as :meth:`Arch.from_dict`. A layer takes only heads and experts."""
        if family_named(d, "arch", cls.family) is not cls.family:
            raise UserError(f"arch: family {d['family']!r} is not {cls.family.name!r}")
        _known(d, _LM_FIELDS, "arch")
        _check_version(d)
        try:
            arch = cls(decoder=_stack_from_dict(d["decoder"], "decoder", decoder=False), **_model_fields(d))
        except KeyError as e:
            raise UserError(f"arch is missing the field {e.args[0]!r}") from None
        _check_shape(arch)
        return arch

    @property
    def embed_dim(self) -> int:
        return self.decoder.embed_dim

    @property
    def layers(self) -> Iterable[tuple[str, int, LayerArch]]:
        """("decoder", index, layer) for every layer, as :attr:`Arch.layers` names them."""
        for i, layer in enumerate(self.decoder.layers):
            yield "decoder", i, layer


AnyArch = Arch | LMArch

_ARCH_FIELDS = ("schema_version", "vocab_size", "qkv_dim", "top_k", "encoder", "decoder")
_LM_FIELDS = ("schema_version", "family", "vocab_size", "qkv_dim", "top_k", "decoder")
_STACK_FIELDS = ("embed_dim", "layers")
_ENCODER_LAYER_FIELDS = ("heads", "experts")
_DECODER_LAYER_FIELDS = ("heads", "experts", "cross_heads", "cross_span")


def _known(d: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
    """A misspelt field would otherwise be dropped and its default used without a word."""
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(allowed)})")


# Sane bounds without a space: no Transformer has a width, head count or expert size above
# MAX_SIZE (the largest open models use 16-53k) or a vocabulary above MAX_VOCAB; an arch of
# embed_dim 10^9 used to pass `space stats` and end `export` in an allocation traceback.
MAX_SIZE, MAX_VOCAB = 1 << 17, 1 << 21


def _model_fields(d: dict[str, Any]) -> dict[str, int]:
    """The whole-model fields every family shares (top_k, qkv_dim, vocab_size), checked."""
    return {
        "top_k": _int(d.get("top_k", 1), "top_k"),
        "qkv_dim": _int(d.get("qkv_dim", 512), "qkv_dim"),
        "vocab_size": _int(d.get("vocab_size", 32000), "vocab_size", MAX_VOCAB),
    }


def _check_version(d: dict[str, Any]) -> None:
    version = d.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise UserError(f"schema_version: {version!r} is not supported (this moenas reads {SCHEMA_VERSION})")


def _int(v: Any, path: str, high: int = MAX_SIZE) -> int:
    """A positive integer up to ``high``: every count and size of an arch is one."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{path}: expected an integer, got {v!r}")
    if v <= 0:
        raise UserError(f"{path}: must be >= 1, got {v}")
    if v > high:
        raise UserError(f"{path}: {v} is beyond any Transformer's (at most {high})")
    return v


def _check_shape(arch: AnyArch) -> None:
    """What a parsed arch must satisfy for a model to exist: head dims are whole, and a decoder
    layer attends to no more encoder outputs than there are."""
    n_enc = len(arch.encoder.layers) if isinstance(arch, Arch) else 0
    for name, i, layer in arch.layers:
        p = f"{name}.layers[{i}]"
        for field_name in ("heads", "cross_heads"):
            h = getattr(layer, field_name)
            if h is not None and arch.qkv_dim % h:
                raise UserError(f"{p}.{field_name}: qkv_dim {arch.qkv_dim} is not divisible by {h} heads")
        if layer.cross_span is not None and layer.cross_span > n_enc:
            raise UserError(f"{p}.cross_span: {layer.cross_span} exceeds the {n_enc} encoder layer(s)")


def _stack_from_dict(d: Any, path: str, decoder: bool) -> StackArch:
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected an object with embed_dim and layers")
    _known(d, _STACK_FIELDS, path)
    layers_raw = d.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise UserError(f"{path}.layers: expected a non-empty list of layers")
    layers = []
    for i, ld in enumerate(layers_raw):
        lp = f"{path}.layers[{i}]"
        if not isinstance(ld, dict):
            raise UserError(f"{lp}: expected an object")
        _known(ld, _DECODER_LAYER_FIELDS if decoder else _ENCODER_LAYER_FIELDS, lp)
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


def load_arch(path: str | Path) -> AnyArch:
    """Read one arch from a JSON file (or the first line of a JSON-lines file)."""
    return load_archs(path)[0]


def load_archs(path: str | Path) -> list[AnyArch]:
    """Read a JSON file holding one arch, or a JSON-lines file with one arch per line; each
    is an Arch or an LMArch as its ``family`` field says (:meth:`Arch.from_dict`)."""
    p = Path(path)
    text = read_text(p).strip()
    if not text:
        raise UserError(f"{p}: the file is empty")
    try:  # one JSON document (possibly pretty-printed): its arch errors are the file's
        whole = parse_json(text, "arch JSON")
    except UserError as e:
        if "\n" not in text:
            raise UserError(f"{p}: {e}") from None
    else:
        try:
            return [Arch.from_dict(whole)]
        except UserError as e:
            raise UserError(f"{p}: {e}") from None
    archs = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                archs.append(Arch.from_json(line))
            except UserError as e:
                raise UserError(f"{p}:{n}: {e}") from None
    return archs


def save_archs(archs: Iterable[AnyArch], path: str | Path) -> None:
    """Write archs as JSON lines (canonical form, one per line)."""
    Path(path).write_text("".join(a.to_json() + "\n" for a in archs))
