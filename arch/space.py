"""`SearchSpace`: the allowed values of every gene, and the operations evolution needs on them.

A space is a YAML file (see ``arch/spaces/``). Genes are: top-k; per stack the embedding width
and the layer count; per layer the head counts, (decoder) cross span, the number of experts
and, independently per expert, its hidden size. Sampling is uniform per gene, as in HAT and
AutoMoE. Mutation and crossover act on the same genes and always return archs that
:meth:`SearchSpace.validate` accepts, which the property tests check.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import yaml

from .arch import Arch, LayerArch, StackArch
from .checks import read_text
from .errors import UserError

SPACES_DIR = Path(__file__).parent / "spaces"
MAX_SAMPLE = 1_000_000  # archs per sampling call: ~2 minutes at ~125 us each (tiny space, one core)
Rng = random.Random


def _rng(seed_or_rng: int | Rng | None) -> Rng:
    return seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)


def shipped_spaces() -> list[str]:
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


@dataclass(frozen=True)
class SearchSpace:
    name: str
    vocab_size: int
    qkv_dim: int
    top_k: tuple[int, ...]
    encoder: StackSpace
    decoder: StackSpace

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """A shipped space by name (``tiny``, ``hat-wmt``, ``automoe-wmt``) or a YAML path."""
        p = Path(name_or_path)
        if not p.suffix:
            p = SPACES_DIR / f"{name_or_path}.yaml"
            if not p.is_file():
                raise UserError(f"unknown space {name_or_path!r} (shipped: {', '.join(shipped_spaces())}; or give a YAML file)")
        if not p.is_file():
            raise UserError(f"{p}: no such space file")
        text = read_text(p)
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{p}: malformed YAML ({str(e).splitlines()[0]})") from None
        except RecursionError:
            raise UserError(f"{p}: malformed YAML (nested too deeply)") from None
        except ValueError as e:  # an integer of more digits than Python converts
            raise UserError(f"{p}: malformed YAML ({str(e).split(':', 1)[0]})") from None
        return cls.from_dict(d, source=str(p))

    @classmethod
    def from_dict(cls, d: Any, source: str = "space") -> "SearchSpace":
        if not isinstance(d, dict):
            raise UserError(f"{source}: a space must be a mapping")

        def ints(v: Any, path: str) -> tuple[int, ...]:
            vals = v if isinstance(v, list) else [v]
            if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in vals):
                raise UserError(f"{source}: {path} must be a positive integer or a non-empty list of them")
            return tuple(vals)

        def stack(sd: Any, path: str, decoder: bool) -> StackSpace:
            if not isinstance(sd, dict):
                raise UserError(f"{source}: {path} must be a mapping")
            keys = ["embed_dim", "layers", "heads", "experts", "expert_sizes"]
            keys += ["cross_heads", "cross_span"] if decoder else []
            missing = [k for k in keys if k not in sd]
            if missing:
                raise UserError(f"{source}: {path} lacks {', '.join(missing)}")
            return StackSpace(**{k: ints(sd[k], f"{path}.{k}") for k in keys})

        try:
            space = cls(
                name=str(d["name"]),
                vocab_size=ints(d["vocab_size"], "vocab_size")[0],
                qkv_dim=ints(d["qkv_dim"], "qkv_dim")[0],
                top_k=ints(d.get("top_k", [1]), "top_k"),
                encoder=stack(d["encoder"], "encoder", False),
                decoder=stack(d["decoder"], "decoder", True),
            )
        except KeyError as e:
            raise UserError(f"{source}: missing key {e.args[0]!r}") from None
        for st in (space.encoder, space.decoder):
            for h in st.heads + (st.cross_heads or ()):
                if space.qkv_dim % h:
                    raise UserError(f"{source}: qkv_dim {space.qkv_dim} is not divisible by {h} heads")
        if not _spans(space.decoder.cross_span, max(space.encoder.layers)):
            raise UserError(f"{source}: no cross_span fits the encoder depth")
        return space

    # ---- sampling -------------------------------------------------------------------------
    def sample(self, rng: int | Rng | None = None) -> Arch:
        """One arch, uniform per gene. Spans above the sampled encoder depth are not drawn."""
        r = _rng(rng)
        enc = self._sample_stack(self.encoder, r, None)
        dec = self._sample_stack(self.decoder, r, len(enc.layers))
        return self._arch(enc, dec, r.choice(self.top_k))

    def sample_n(self, n: int, seed: int = 0, unique: bool = True) -> list[Arch]:
        """``n`` archs from one seeded stream; duplicates skipped when ``unique`` (bounded tries)."""
        return list(self.iter_samples(n, seed, unique))

    def iter_samples(self, n: int, seed: int = 0, unique: bool = True) -> Iterator[Arch]:
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

    def _arch(self, enc: StackArch, dec: StackArch, top_k: int) -> Arch:
        return Arch(encoder=enc, decoder=dec, top_k=top_k, qkv_dim=self.qkv_dim, vocab_size=self.vocab_size)

    def _sample_stack(self, sp: StackSpace, r: Rng, max_span: int | None) -> StackArch:
        n = r.choice(sp.layers)
        return StackArch(embed_dim=r.choice(sp.embed_dim), layers=tuple(self._sample_layer(sp, r, max_span) for _ in range(n)))

    def _sample_layer(self, sp: StackSpace, r: Rng, max_span: int | None) -> LayerArch:
        heads = r.choice(sp.heads)
        experts = tuple(r.choice(sp.expert_sizes) for _ in range(r.choice(sp.experts)))
        if not sp.is_decoder:
            return LayerArch(heads=heads, experts=experts)
        return LayerArch(heads=heads, experts=experts, cross_heads=r.choice(sp.cross_heads),
                         cross_span=r.choice(_spans(sp.cross_span, max_span)))

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
        def stack(sp: StackSpace, max_span: int | None) -> StackArch:
            layer = LayerArch(
                heads=pick(sp.heads),
                experts=(pick(sp.expert_sizes),) * pick(sp.experts),
                cross_heads=pick(sp.cross_heads) if sp.is_decoder else None,
                cross_span=pick(_spans(sp.cross_span, max_span)) if sp.is_decoder else None,
            )
            return StackArch(embed_dim=pick(sp.embed_dim), layers=(layer,) * pick(sp.layers))

        enc = stack(self.encoder, None)
        return self._arch(enc, stack(self.decoder, len(enc.layers)), pick(self.top_k))

    # ---- validation -----------------------------------------------------------------------
    def violations(self, arch: Arch) -> list[str]:
        """Every way ``arch`` leaves this space, each naming the field path and allowed values."""
        out: list[str] = []

        def check(path: str, value: Any, allowed: Sequence[Any]) -> None:
            if value not in allowed:
                out.append(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")

        check("vocab_size", arch.vocab_size, (self.vocab_size,))
        check("qkv_dim", arch.qkv_dim, (self.qkv_dim,))
        check("top_k", arch.top_k, self.top_k)
        n_enc = len(arch.encoder.layers)
        for name, stack, sp in (("encoder", arch.encoder, self.encoder), ("decoder", arch.decoder, self.decoder)):
            check(f"{name}.embed_dim", stack.embed_dim, sp.embed_dim)
            check(f"{name}.layers (count)", len(stack.layers), sp.layers)
            for i, layer in enumerate(stack.layers):
                p = f"{name}.layers[{i}]"
                check(f"{p}.heads", layer.heads, sp.heads)
                check(f"{p}.experts (count)", len(layer.experts), sp.experts)
                for j, h in enumerate(layer.experts):
                    check(f"{p}.experts[{j}]", h, sp.expert_sizes)
                if sp.is_decoder:
                    check(f"{p}.cross_heads", layer.cross_heads, sp.cross_heads)
                    check(f"{p}.cross_span", layer.cross_span, _spans(sp.cross_span, n_enc))
                elif layer.cross_heads is not None or layer.cross_span is not None:
                    out.append(f"{p}: encoder layers take no cross_heads/cross_span")
        return out

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` unchanged, or raise UserError listing every violation."""
        v = self.violations(arch)
        if v:
            raise UserError(f"arch {arch.arch_id} is outside space {self.name!r}: " + "; ".join(v))
        return arch

    def contains(self, arch: Arch) -> bool:
        return not self.violations(arch)

    # ---- evolution operators ----------------------------------------------------------------
    def mutate(self, arch: Arch, rng: int | Rng | None = None, prob: float = 0.3) -> Arch:
        """Resample each gene with probability ``prob`` (HAT). A changed expert count trims the
        size list or extends it with sampled sizes; a changed encoder depth re-draws any
        decoder cross span that no longer fits."""
        r = _rng(rng)

        def maybe(value: Any, allowed: Sequence[Any]) -> Any:
            return r.choice(allowed) if r.random() < prob else value

        def stack(st: StackArch, sp: StackSpace, max_span: int | None) -> StackArch:
            embed = maybe(st.embed_dim, sp.embed_dim)
            n = maybe(len(st.layers), sp.layers)
            layers = []
            for i in range(n):
                if i >= len(st.layers):
                    layers.append(self._sample_layer(sp, r, max_span))
                    continue
                old = st.layers[i]
                m = maybe(len(old.experts), sp.experts)
                sizes = list(old.experts[:m]) + [r.choice(sp.expert_sizes) for _ in range(m - len(old.experts))]
                sizes = [maybe(h, sp.expert_sizes) for h in sizes]
                layer = LayerArch(heads=maybe(old.heads, sp.heads), experts=tuple(sizes))
                if sp.is_decoder:
                    spans = _spans(sp.cross_span, max_span)
                    span = maybe(old.cross_span, spans)
                    layer = LayerArch(layer.heads, layer.experts, maybe(old.cross_heads, sp.cross_heads),
                                      span if span in spans else r.choice(spans))
                layers.append(layer)
            return StackArch(embed, tuple(layers))

        enc = stack(arch.encoder, self.encoder, None)
        dec = stack(arch.decoder, self.decoder, len(enc.layers))
        return self._arch(enc, dec, maybe(arch.top_k, self.top_k))

    def crossover(self, a: Arch, b: Arch, rng: int | Rng | None = None) -> Arch:
        """Uniform crossover: every gene comes from either parent with probability 1/2. Layer
        and expert slots that only one parent has come from that parent."""
        r = _rng(rng)

        def pick(x: Any, y: Any) -> Any:
            return x if r.random() < 0.5 else y

        def slot(xs: Sequence[Any], ys: Sequence[Any], i: int) -> Any:
            if i < len(xs) and i < len(ys):
                return pick(xs[i], ys[i])
            return xs[i] if i < len(xs) else ys[i]

        def stack(sa: StackArch, sb: StackArch, sp: StackSpace, max_span: int | None) -> StackArch:
            n = pick(len(sa.layers), len(sb.layers))
            layers = []
            for i in range(n):
                if i >= len(sa.layers) or i >= len(sb.layers):
                    layers.append(slot(sa.layers, sb.layers, i))
                    continue
                la, lb = sa.layers[i], sb.layers[i]
                m = pick(len(la.experts), len(lb.experts))
                sizes = tuple(slot(la.experts, lb.experts, j) for j in range(m))
                layer = LayerArch(pick(la.heads, lb.heads), sizes)
                if sp.is_decoder:
                    layer = LayerArch(layer.heads, sizes, pick(la.cross_heads, lb.cross_heads),
                                      pick(la.cross_span, lb.cross_span))
                layers.append(layer)
            if sp.is_decoder:  # a span from a deeper parent's encoder may not fit this child's
                spans = _spans(sp.cross_span, max_span)
                layers = [lay if lay.cross_span in spans else LayerArch(lay.heads, lay.experts, lay.cross_heads, max(spans))
                          for lay in layers]
            return StackArch(pick(sa.embed_dim, sb.embed_dim), tuple(layers))

        enc = stack(a.encoder, b.encoder, self.encoder, None)
        dec = stack(a.decoder, b.decoder, self.decoder, len(enc.layers))
        return self._arch(enc, dec, pick(a.top_k, b.top_k))

    # ---- size and encoding ------------------------------------------------------------------
    def size(self) -> int:
        """Exact number of distinct archs (expert order counts: experts are distinct slots)."""
        total = 0
        for n_enc in self.encoder.layers:
            enc = len(self.encoder.embed_dim) * self.encoder.layer_count(None) ** n_enc
            per_dec = self.decoder.layer_count(n_enc)
            dec = len(self.decoder.embed_dim) * sum(per_dec ** n for n in self.decoder.layers)
            total += enc * dec
        return total * len(self.top_k)

    def log10_size(self) -> float:
        return math.log10(self.size())

    def feature_names(self) -> list[str]:
        """Names of :meth:`encode`'s columns, in order."""
        names = ["top_k"]
        for name, sp in (("enc", self.encoder), ("dec", self.decoder)):
            names += [f"{name}.embed_dim", f"{name}.layers"]
            for i in range(max(sp.layers)):
                names += [f"{name}{i}.heads"]
                if sp.is_decoder:
                    names += [f"{name}{i}.cross_heads", f"{name}{i}.cross_span"]
                names += [f"{name}{i}.n_experts"] + [f"{name}{i}.expert{j}" for j in range(max(sp.experts))]
        return names

    def encode(self, archs: Arch | Sequence[Arch]) -> np.ndarray:
        """Fixed-length numeric vectors, shape (n_archs, len(feature_names())) (or 1-D for one
        arch). Absent layers and expert slots are 0, so the length is the same for every arch."""
        one = isinstance(archs, Arch)
        rows = [self._encode_one(a) for a in ([archs] if one else archs)]
        out = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.feature_names()))
        return out[0] if one else out

    def _encode_one(self, arch: Arch) -> list[float]:
        row: list[float] = [arch.top_k]
        for st, sp in ((arch.encoder, self.encoder), (arch.decoder, self.decoder)):
            row += [st.embed_dim, len(st.layers)]
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
