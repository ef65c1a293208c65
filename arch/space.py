"""`SearchSpace`: the allowed values of every gene, and the operations evolution needs on them.

A space is a YAML file (see ``arch/spaces/``). Genes are: top-k; per stack the embedding width
and the layer count; per layer the head counts, (decoder) cross span, the number of experts
and, independently per expert, its hidden size. Sampling is uniform per gene, as in HAT and
AutoMoE. Mutation and crossover act on the same genes and always return archs that
:meth:`SearchSpace.validate` accepts, which the property tests check.

A YAML with ``family: decoder-only`` is an :class:`LMSearchSpace` (one ``decoder`` stack
without cross attention; its archs are :class:`~moenas.arch.arch.LMArch`); one without a
family, or ``family: encoder-decoder``, a :class:`SearchSpace`. Both do to each stack what the
per-stack functions below do (sampling, extremes, validation, mutation, crossover, encoding),
and share the family-independent rest through :class:`SpaceBase`. :func:`load_space` (and
``SearchSpace.load``) returns the class the YAML's family names (:data:`SPACE_CLASSES`, where
each space class registers).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np
import yaml

from .arch import Arch, ArchBase, LayerArch, LMArch, StackArch
from .checks import read_text
from .errors import UserError
from .family import DECODER_ONLY, DEFAULT_FAMILY, ENCODER_DECODER, FamilyRegistry, ModelFamily, family_named

SPACES_DIR = Path(__file__).parent / "spaces"
MAX_SAMPLE = 1_000_000  # archs per sampling call: ~2 minutes at ~125 us each (tiny space, one core)
Rng = random.Random
# family name -> its space class (each registers below): what a YAML naming that family loads as
SPACE_CLASSES: FamilyRegistry[type["SpaceBase"]] = FamilyRegistry("search space class")


def _rng(seed_or_rng: int | Rng | None) -> Rng:
    return seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)


def shipped_spaces() -> list[str]:
    """Every shipped space's name, of any family."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class StackSpace:
    """Allowed values for the encoder or the decoder (cross_* only for the decoder)."""

    embed_dim: tuple[int, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    experts: tuple[int, ...]
    expert_sizes: tuple[int, ...]
    cross_heads: tuple[int, ...] | None = None
    cross_span: tuple[int, ...] | None = None

    @property
    def is_decoder(self) -> bool:
        return self.cross_heads is not None

    def layer_count(self, max_span: int | None) -> int:
        """Distinct layers this stack allows (spans capped at ``max_span``)."""
        ffn = sum(len(self.expert_sizes) ** m for m in self.experts)
        n = len(self.heads) * ffn
        if self.is_decoder:
            n *= len(self.cross_heads) * len(_spans(self.cross_span, max_span))
        return n


def _spans(allowed: Sequence[int], max_span: int | None) -> list[int]:
    return [s for s in allowed if max_span is None or s <= max_span]


# ---- one stack: what every family's space does to each of its stacks ---------------------------
# ``max_span``: the encoder depth a decoder stack's cross spans may not exceed (None: no cap, and
# for stacks without cross attention). Each function draws from ``r`` in one fixed order: the
# samples, mutations and crossovers of a seed are part of what a space promises.


def sample_layer(sp: StackSpace, r: Rng, max_span: int | None) -> LayerArch:
    """One layer, uniform per gene: heads, expert count, each expert's size (then cross genes)."""
    heads = r.choice(sp.heads)
    experts = tuple(r.choice(sp.expert_sizes) for _ in range(r.choice(sp.experts)))
    if not sp.is_decoder:
        return LayerArch(heads=heads, experts=experts)
    return LayerArch(
        heads=heads,
        experts=experts,
        cross_heads=r.choice(sp.cross_heads),
        cross_span=r.choice(_spans(sp.cross_span, max_span)),
    )


def sample_stack(sp: StackSpace, r: Rng, max_span: int | None) -> StackArch:
    """One stack: its depth, its width, then each layer."""
    n = r.choice(sp.layers)
    return StackArch(embed_dim=r.choice(sp.embed_dim), layers=tuple(sample_layer(sp, r, max_span) for _ in range(n)))


def extreme_stack(sp: StackSpace, pick: Callable[[Sequence[int]], int], max_span: int | None) -> StackArch:
    """Every gene of the stack at ``pick`` (min or max) of its allowed values."""
    layer = LayerArch(
        heads=pick(sp.heads),
        experts=(pick(sp.expert_sizes),) * pick(sp.experts),
        cross_heads=pick(sp.cross_heads) if sp.is_decoder else None,
        cross_span=pick(_spans(sp.cross_span, max_span)) if sp.is_decoder else None,
    )
    return StackArch(embed_dim=pick(sp.embed_dim), layers=(layer,) * pick(sp.layers))


def not_allowed(path: str, value: Any, allowed: Sequence[Any]) -> list[str]:
    """``["PATH: VALUE is not allowed (allowed: ...)"]`` unless ``value`` is allowed."""
    if value in allowed:
        return []
    return [f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})"]


def stack_violations(name: str, stack: StackArch, sp: StackSpace, max_span: int | None) -> list[str]:
    """Every way one stack leaves ``sp``, each naming the field path (``name.layers[i]...``)."""
    out = not_allowed(f"{name}.embed_dim", stack.embed_dim, sp.embed_dim)
    out += not_allowed(f"{name}.layers (count)", len(stack.layers), sp.layers)
    for i, layer in enumerate(stack.layers):
        p = f"{name}.layers[{i}]"
        out += not_allowed(f"{p}.heads", layer.heads, sp.heads)
        out += not_allowed(f"{p}.experts (count)", len(layer.experts), sp.experts)
        for j, h in enumerate(layer.experts):
            out += not_allowed(f"{p}.experts[{j}]", h, sp.expert_sizes)
        if sp.is_decoder:
            out += not_allowed(f"{p}.cross_heads", layer.cross_heads, sp.cross_heads)
            out += not_allowed(f"{p}.cross_span", layer.cross_span, _spans(sp.cross_span, max_span))
        elif layer.cross_heads is not None or layer.cross_span is not None:
            out.append(f"{p}: {name} layers take no cross_heads/cross_span")
    return out


def _maybe(r: Rng, prob: float, value: Any, allowed: Sequence[Any]) -> Any:
    """``value``, or with probability ``prob`` a fresh draw from ``allowed``."""
    return r.choice(allowed) if r.random() < prob else value


def mutate_stack(st: StackArch, sp: StackSpace, r: Rng, prob: float, max_span: int | None) -> StackArch:
    """Resample each gene of one stack with probability ``prob`` (see :meth:`SearchSpace.mutate`)."""
    embed = _maybe(r, prob, st.embed_dim, sp.embed_dim)
    n = _maybe(r, prob, len(st.layers), sp.layers)
    layers = []
    for i in range(n):
        if i >= len(st.layers):
            layers.append(sample_layer(sp, r, max_span))
            continue
        old = st.layers[i]
        m = _maybe(r, prob, len(old.experts), sp.experts)
        sizes = list(old.experts[:m]) + [r.choice(sp.expert_sizes) for _ in range(m - len(old.experts))]
        sizes = [_maybe(r, prob, h, sp.expert_sizes) for h in sizes]
        layer = LayerArch(heads=_maybe(r, prob, old.heads, sp.heads), experts=tuple(sizes))
        if sp.is_decoder:
            spans = _spans(sp.cross_span, max_span)
            span = _maybe(r, prob, old.cross_span, spans)
            layer = LayerArch(
                layer.heads,
                layer.experts,
                _maybe(r, prob, old.cross_heads, sp.cross_heads),
                span if span in spans else r.choice(spans),
            )
        layers.append(layer)
    return StackArch(embed, tuple(layers))


def _pick(r: Rng, x: Any, y: Any) -> Any:
    return x if r.random() < 0.5 else y


def _slot(r: Rng, xs: Sequence[Any], ys: Sequence[Any], i: int) -> Any:
    """Slot ``i`` from either parent, or from the one parent that has it."""
    if i < len(xs) and i < len(ys):
        return _pick(r, xs[i], ys[i])
    return xs[i] if i < len(xs) else ys[i]


def crossover_stack(sa: StackArch, sb: StackArch, sp: StackSpace, r: Rng, max_span: int | None) -> StackArch:
    """Uniform crossover of one stack (see :meth:`SearchSpace.crossover`)."""
    n = _pick(r, len(sa.layers), len(sb.layers))
    layers = []
    for i in range(n):
        if i >= len(sa.layers) or i >= len(sb.layers):
            layers.append(_slot(r, sa.layers, sb.layers, i))
            continue
        la, lb = sa.layers[i], sb.layers[i]
        m = _pick(r, len(la.experts), len(lb.experts))
        sizes = tuple(_slot(r, la.experts, lb.experts, j) for j in range(m))
        layer = LayerArch(_pick(r, la.heads, lb.heads), sizes)
        if sp.is_decoder:
            layer = LayerArch(
                layer.heads, sizes, _pick(r, la.cross_heads, lb.cross_heads), _pick(r, la.cross_span, lb.cross_span)
            )
        layers.append(layer)
    if sp.is_decoder:  # a span from a deeper parent's encoder may not fit this child's
        spans = _spans(sp.cross_span, max_span)
        layers = [
            lay if lay.cross_span in spans else LayerArch(lay.heads, lay.experts, lay.cross_heads, max(spans))
            for lay in layers
        ]
    return StackArch(_pick(r, sa.embed_dim, sb.embed_dim), tuple(layers))


def stack_size(sp: StackSpace, max_span: int | None, depths: Sequence[int] | None = None) -> int:
    """Distinct stacks of ``sp`` (of the given depths; default: every allowed depth)."""
    per_layer = sp.layer_count(max_span)
    return len(sp.embed_dim) * sum(per_layer**n for n in (sp.layers if depths is None else depths))


def stack_feature_names(name: str, sp: StackSpace) -> list[str]:
    """Names of :func:`encode_stack`'s columns, e.g. ``dec.embed_dim``, ``dec0.expert1``."""
    names = [f"{name}.embed_dim", f"{name}.layers"]
    for i in range(max(sp.layers)):
        names += [f"{name}{i}.heads"]
        if sp.is_decoder:
            names += [f"{name}{i}.cross_heads", f"{name}{i}.cross_span"]
        names += [f"{name}{i}.n_experts"] + [f"{name}{i}.expert{j}" for j in range(max(sp.experts))]
    return names


def encode_stack(st: StackArch, sp: StackSpace) -> list[float]:
    """One stack as a fixed-length row: absent layers and expert slots are 0."""
    row: list[float] = [st.embed_dim, len(st.layers)]
    max_e = max(sp.experts)
    for i in range(max(sp.layers)):
        layer = st.layers[i] if i < len(st.layers) else None
        width = 1 + (2 if sp.is_decoder else 0) + 1 + max_e
        if layer is None:
            row += [0.0] * width
            continue
        row += [layer.heads]
        if sp.is_decoder:
            row += [layer.cross_heads, layer.cross_span]
        sizes = list(layer.experts[:max_e]) + [0] * (max_e - len(layer.experts))
        row += [len(layer.experts)] + sizes
    return row


# ---- reading a space ----------------------------------------------------------------------------


def _read_yaml(name_or_path: str | Path) -> tuple[Any, str]:
    """The parsed YAML of a shipped space (by name) or a file, and where it came from."""
    p = Path(name_or_path)
    if not p.suffix:
        p = SPACES_DIR / f"{name_or_path}.yaml"
        if not p.is_file():
            raise UserError(
                f"unknown space {name_or_path!r} (shipped: {', '.join(shipped_spaces())}; or give a YAML file)"
            )
    if not p.is_file():
        raise UserError(f"{p}: no such space file")
    text = read_text(p)
    try:
        return yaml.safe_load(text), str(p)
    except yaml.YAMLError as e:
        raise UserError(f"{p}: malformed YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{p}: malformed YAML (nested too deeply)") from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise UserError(f"{p}: malformed YAML ({str(e).split(':', 1)[0]})") from None


def _ints(v: Any, path: str, source: str) -> tuple[int, ...]:
    vals = v if isinstance(v, list) else [v]
    if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in vals):
        raise UserError(f"{source}: {path} must be a positive integer or a non-empty list of them")
    return tuple(vals)


def _model_genes(d: dict[str, Any], source: str) -> dict[str, Any]:
    """The whole-model keys every family's space has: name, vocabulary, qkv width, top-k choices
    (KeyError for a missing one: the caller names it)."""
    return {
        "name": str(d["name"]),
        "vocab_size": _ints(d["vocab_size"], "vocab_size", source)[0],
        "qkv_dim": _ints(d["qkv_dim"], "qkv_dim", source)[0],
        "top_k": _ints(d.get("top_k", [1]), "top_k", source),
    }


def _stack_space(sd: Any, path: str, decoder: bool, source: str) -> StackSpace:
    """One stack's genes (``decoder``: with cross-attention genes)."""
    if not isinstance(sd, dict):
        raise UserError(f"{source}: {path} must be a mapping")
    keys = ["embed_dim", "layers", "heads", "experts", "expert_sizes"]
    keys += ["cross_heads", "cross_span"] if decoder else []
    missing = [k for k in keys if k not in sd]
    if missing:
        raise UserError(f"{source}: {path} lacks {', '.join(missing)}")
    return StackSpace(**{k: _ints(sd[k], f"{path}.{k}", source) for k in keys})


def _check_heads(space: "AnySpace", stacks: Sequence[StackSpace], source: str) -> None:
    for st in stacks:
        for h in st.heads + (st.cross_heads or ()):
            if space.qkv_dim % h:
                raise UserError(f"{source}: qkv_dim {space.qkv_dim} is not divisible by {h} heads")


def load_space(name_or_path: str | Path) -> "AnySpace":
    """A shipped space by name (``tiny``, ``hat-wmt``, ``automoe-wmt``, ``lm-tiny``,
    ``lm-small``) or a YAML path, of the class its ``family`` names."""
    d, source = _read_yaml(name_or_path)
    return space_from_dict(d, source)


def space_from_dict(d: Any, source: str = "space") -> "AnySpace":
    """A space of any family from its mapping (what the YAML holds, or ``to_dict``): the class
    :data:`SPACE_CLASSES` registers for the family it names (none: encoder-decoder)."""
    return SPACE_CLASSES.for_family(family_named(d, source)).from_dict(d, source)


def _plain(x: Any) -> Any:
    """Tuples as lists, recursively, and no None (an absent gene): what YAML and JSON hold."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if v is not None}
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else x


class SpaceBase:
    """What every family's space does the same way, given its ``sample``, ``size``,
    ``violations``, ``feature_names`` and ``_encode_one``."""

    family: ClassVar[ModelFamily]
    name: str

    @classmethod
    def load(cls, name_or_path: str | Path) -> "AnySpace":
        """A shipped space by name or a YAML path: :func:`load_space` (the class the YAML's
        family names, whichever space class this is called on)."""
        return load_space(name_or_path)

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping (lists, as in the YAML) ``from_dict`` reads back, with ``family``
        unless it is the default family (encoder-decoder, whose YAML names none)."""
        d = _plain(asdict(self))
        return d if self.family is DEFAULT_FAMILY else {"family": self.family.name, **d}

    # ---- abstract --------------------------------------------------------------------------
    def sample(self, rng: int | Rng | None = None) -> Any:
        raise NotImplementedError

    def size(self) -> int:
        raise NotImplementedError

    def violations(self, arch: Any) -> list[str]:
        raise NotImplementedError

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    def _encode_one(self, arch: Any) -> list[float]:
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------
    def sample_n(self, n: int, seed: int = 0, unique: bool = True) -> list[Any]:
        """``n`` archs from one seeded stream; duplicates skipped when ``unique`` (bounded tries)."""
        return list(self.iter_samples(n, seed, unique))

    def iter_samples(self, n: int, seed: int = 0, unique: bool = True) -> Iterator[Any]:
        """:meth:`sample_n` one arch at a time (a caller can print while sampling). ``n`` is
        checked before the first draw: above :data:`MAX_SAMPLE` (or, unique, above the space's
        size) sampling would run for hours or never end, so it is refused with the maximum."""
        self.check_sample_count(n, unique)
        r = random.Random(seed)
        seen: set[str] = set()
        got = 0
        for _ in range(max(n * 50, 1000)):
            if got == n:
                break
            a = self.sample(r)
            if unique and a.arch_id in seen:
                continue
            seen.add(a.arch_id)
            got += 1
            yield a

    def check_sample_count(self, n: int, unique: bool = True) -> None:
        """UserError unless ``n <= MAX_SAMPLE`` and, unique, ``n <=`` the space's size."""
        limit = min(MAX_SAMPLE, self.size()) if unique else MAX_SAMPLE
        if n > limit:
            why = f"space {self.name!r} holds {self.size()} archs" if limit < MAX_SAMPLE else "more would take hours"
            raise UserError(f"cannot sample {n} archs: at most {limit} at a time ({why})")

    def _family_violations(self, arch: ArchBase) -> list[str]:
        """One violation when ``arch`` is of another family (nothing else can be compared)."""
        return not_allowed("family", arch.family.name, (self.family.name,))

    def validate(self, arch: Any) -> Any:
        """Return ``arch`` unchanged, or raise UserError listing every violation."""
        v = self.violations(arch)
        if v:
            raise UserError(f"arch {arch.arch_id} is outside space {self.name!r}: " + "; ".join(v))
        return arch

    def contains(self, arch: Any) -> bool:
        return not self.violations(arch)

    def log10_size(self) -> float:
        return math.log10(self.size())

    def encode(self, archs: Any) -> np.ndarray:
        """Fixed-length numeric vectors, shape (n_archs, len(feature_names())) (or 1-D for one
        arch). Absent layers and expert slots are 0, so the length is the same for every arch."""
        one = isinstance(archs, ArchBase)
        rows = [self._encode_one(a) for a in ([archs] if one else archs)]
        out = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.feature_names()))
        return out[0] if one else out


@SPACE_CLASSES.register
@dataclass(frozen=True)
class SearchSpace(SpaceBase):
    family: ClassVar[ModelFamily] = ENCODER_DECODER  # not a field: asdict(space) is what it was
    name: str
    vocab_size: int
    qkv_dim: int
    top_k: tuple[int, ...]
    encoder: StackSpace
    decoder: StackSpace

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = "space") -> "AnySpace":
        """A space from its mapping; one naming another ``family`` is that family's class
        (:func:`space_from_dict`: decoder-only is an LMSearchSpace)."""
        if family_named(d, source) is not cls.family:
            return space_from_dict(d, source)
        try:
            space = cls(
                **_model_genes(d, source),
                encoder=_stack_space(d["encoder"], "encoder", False, source),
                decoder=_stack_space(d["decoder"], "decoder", True, source),
            )
        except KeyError as e:
            raise UserError(f"{source}: missing key {e.args[0]!r}") from None
        _check_heads(space, (space.encoder, space.decoder), source)
        if not _spans(space.decoder.cross_span, max(space.encoder.layers)):
            raise UserError(f"{source}: no cross_span fits the encoder depth")
        return space

    # ---- sampling -------------------------------------------------------------------------
    def sample(self, rng: int | Rng | None = None) -> Arch:
        """One arch, uniform per gene. Spans above the sampled encoder depth are not drawn."""
        r = _rng(rng)
        enc = sample_stack(self.encoder, r, None)
        dec = sample_stack(self.decoder, r, len(enc.layers))
        return self._arch(enc, dec, r.choice(self.top_k))

    def _arch(self, enc: StackArch, dec: StackArch, top_k: int) -> Arch:
        return Arch(encoder=enc, decoder=dec, top_k=top_k, qkv_dim=self.qkv_dim, vocab_size=self.vocab_size)

    # ---- extremes (sandwich rule, budget messages) -----------------------------------------
    def dense(self) -> "SearchSpace":
        """The same space with one expert per layer (dense FFNs of the same hidden sizes): the
        baseline an MoE search is measured against. Its archs belong to this space too."""
        return replace(self, encoder=replace(self.encoder, experts=(1,)), decoder=replace(self.decoder, experts=(1,)))

    @property
    def is_dense(self) -> bool:
        """Whether every arch of the space is dense (no layer can hold two experts)."""
        return self.encoder.experts == (1,) and self.decoder.experts == (1,)

    def largest(self) -> Arch:
        """Every gene at its largest value."""
        return self._extreme(max)

    def smallest(self) -> Arch:
        """Every gene at its smallest value (the cheapest arch of the space)."""
        return self._extreme(min)

    def _extreme(self, pick) -> Arch:
        enc = extreme_stack(self.encoder, pick, None)
        return self._arch(enc, extreme_stack(self.decoder, pick, len(enc.layers)), pick(self.top_k))

    # ---- validation -----------------------------------------------------------------------
    def violations(self, arch: ArchBase) -> list[str]:
        """Every way ``arch`` leaves this space, each naming the field path and allowed values."""
        if arch.family is not self.family:
            return self._family_violations(arch)
        out = not_allowed("vocab_size", arch.vocab_size, (self.vocab_size,))
        out += not_allowed("qkv_dim", arch.qkv_dim, (self.qkv_dim,))
        out += not_allowed("top_k", arch.top_k, self.top_k)
        out += stack_violations("encoder", arch.encoder, self.encoder, None)
        return out + stack_violations("decoder", arch.decoder, self.decoder, len(arch.encoder.layers))

    # ---- evolution operators ----------------------------------------------------------------
    def mutate(self, arch: Arch, rng: int | Rng | None = None, prob: float = 0.3) -> Arch:
        """Resample each gene with probability ``prob`` (HAT). A changed expert count trims the
        size list or extends it with sampled sizes; a changed encoder depth re-draws any
        decoder cross span that no longer fits."""
        r = _rng(rng)
        enc = mutate_stack(arch.encoder, self.encoder, r, prob, None)
        dec = mutate_stack(arch.decoder, self.decoder, r, prob, len(enc.layers))
        return self._arch(enc, dec, _maybe(r, prob, arch.top_k, self.top_k))

    def crossover(self, a: Arch, b: Arch, rng: int | Rng | None = None) -> Arch:
        """Uniform crossover: every gene comes from either parent with probability 1/2. Layer
        and expert slots that only one parent has come from that parent."""
        r = _rng(rng)
        enc = crossover_stack(a.encoder, b.encoder, self.encoder, r, None)
        dec = crossover_stack(a.decoder, b.decoder, self.decoder, r, len(enc.layers))
        return self._arch(enc, dec, _pick(r, a.top_k, b.top_k))

    # ---- size and encoding ------------------------------------------------------------------
    def size(self) -> int:
        """Exact number of distinct archs (expert order counts: experts are distinct slots)."""
        total = sum(
            stack_size(self.encoder, None, (n_enc,)) * stack_size(self.decoder, n_enc) for n_enc in self.encoder.layers
        )
        return total * len(self.top_k)

    def feature_names(self) -> list[str]:
        """Names of :meth:`encode`'s columns, in order."""
        return ["top_k"] + stack_feature_names("enc", self.encoder) + stack_feature_names("dec", self.decoder)

    def _encode_one(self, arch: Arch) -> list[float]:
        return [arch.top_k] + encode_stack(arch.encoder, self.encoder) + encode_stack(arch.decoder, self.decoder)


@SPACE_CLASSES.register
@dataclass(frozen=True)
class LMSearchSpace(SpaceBase):
    """A decoder-only language model's genes: top-k; the stack's width and depth; per layer the
    heads, the expert count and each expert's hidden size (no cross attention). The same
    operations as :class:`SearchSpace`, on the one ``decoder`` stack."""

    family: ClassVar[ModelFamily] = DECODER_ONLY
    name: str
    vocab_size: int
    qkv_dim: int
    top_k: tuple[int, ...]
    decoder: StackSpace

    @classmethod
    def from_dict(cls, d: Any, source: str = "space") -> "LMSearchSpace":
        """A space from its mapping (``family: decoder-only`` and a ``decoder`` stack)."""
        if family_named(d, source) is not cls.family:
            raise UserError(f"{source}: a {cls.family.name} space must say family: {cls.family.name}")
        sd = d.get("decoder")
        if isinstance(sd, dict) and (sd.get("cross_heads") is not None or sd.get("cross_span") is not None):
            raise UserError(f"{source}: a decoder-only space has no cross attention (cross_heads/cross_span)")
        try:
            space = cls(**_model_genes(d, source), decoder=_stack_space(d["decoder"], "decoder", False, source))
        except KeyError as e:
            raise UserError(f"{source}: missing key {e.args[0]!r}") from None
        _check_heads(space, (space.decoder,), source)
        return space

    def sample(self, rng: int | Rng | None = None) -> LMArch:
        """One arch, uniform per gene."""
        r = _rng(rng)
        return self._arch(sample_stack(self.decoder, r, None), r.choice(self.top_k))

    def _arch(self, dec: StackArch, top_k: int) -> LMArch:
        return LMArch(decoder=dec, top_k=top_k, qkv_dim=self.qkv_dim, vocab_size=self.vocab_size)

    def dense(self) -> "LMSearchSpace":
        """The same space with one expert per layer (see :meth:`SearchSpace.dense`)."""
        return replace(self, decoder=replace(self.decoder, experts=(1,)))

    @property
    def is_dense(self) -> bool:
        return self.decoder.experts == (1,)

    def largest(self) -> LMArch:
        return self._arch(extreme_stack(self.decoder, max, None), max(self.top_k))

    def smallest(self) -> LMArch:
        return self._arch(extreme_stack(self.decoder, min, None), min(self.top_k))

    def violations(self, arch: ArchBase) -> list[str]:
        """Every way ``arch`` leaves this space, each naming the field path and allowed values."""
        if arch.family is not self.family:
            return self._family_violations(arch)
        out = not_allowed("vocab_size", arch.vocab_size, (self.vocab_size,))
        out += not_allowed("qkv_dim", arch.qkv_dim, (self.qkv_dim,))
        out += not_allowed("top_k", arch.top_k, self.top_k)
        return out + stack_violations("decoder", arch.decoder, self.decoder, None)

    def mutate(self, arch: LMArch, rng: int | Rng | None = None, prob: float = 0.3) -> LMArch:
        """Resample each gene with probability ``prob`` (see :meth:`SearchSpace.mutate`)."""
        r = _rng(rng)
        dec = mutate_stack(arch.decoder, self.decoder, r, prob, None)
        return self._arch(dec, _maybe(r, prob, arch.top_k, self.top_k))

    def crossover(self, a: LMArch, b: LMArch, rng: int | Rng | None = None) -> LMArch:
        """Uniform crossover (see :meth:`SearchSpace.crossover`)."""
        r = _rng(rng)
        dec = crossover_stack(a.decoder, b.decoder, self.decoder, r, None)
        return self._arch(dec, _pick(r, a.top_k, b.top_k))

    def size(self) -> int:
        """Exact number of distinct archs (expert order counts)."""
        return stack_size(self.decoder, None) * len(self.top_k)

    def feature_names(self) -> list[str]:
        """Names of :meth:`encode`'s columns: ``top_k`` then the stack's (``dec...``)."""
        return ["top_k"] + stack_feature_names("dec", self.decoder)

    def _encode_one(self, arch: LMArch) -> list[float]:
        return [arch.top_k] + encode_stack(arch.decoder, self.decoder)


AnySpace = SearchSpace | LMSearchSpace
