"""Features for latency prediction, as a scikit-learn transformer over lists of Arch.

Everything is computed in numpy over many archs at once: one short pure-Python pass pulls each
arch's genes into padded arrays (:func:`arch_arrays`), and the cost model's own formulas
(``moenas.arch.cost``: matmul FLOPs and fp32 bytes per component and part, parameters; they
take arrays as well as numbers) are then called once on those arrays, absent layers and expert
slots masked. The results equal ``protocol_cost(arch, protocol).summary()`` (tested to 1e-9
relative), at ~100x the speed.

Feature groups (``groups=``):

``hat``       HAT's 10 features, in the order of HAT's ``utils.get_config_features``: encoder
              embed dim, encoder layer count, encoder hidden dim (mean FFN size), encoder heads
              (mean), decoder embed dim, decoder layer count, decoder hidden dim (mean), decoder
              heads (mean), decoder enc-dec heads (mean), arbitrary enc-dec attention span (mean).
              For an MoE layer the "FFN size" is the mean expert size.
``moe``       AutoMoE's expert features: mean experts per layer and mean expert size, encoder and
              decoder; plus MoE layer count, total experts and top-k.
``cost``      the cost model under the protocol: params (total, active, embedding), FLOPs and
              bytes for total / encoder / decoder and per part (attention, ffn, router, experts,
              cross_kv, logits), named exactly as ``ProtocolCost.summary()``.
``encoding``  per-layer structure, the columns of ``SearchSpace.encode`` (needs a space, or
              layer/expert maxima inferred from the archs seen in ``fit``).

The names above are the encoder-decoder family's. Every group is built per stack of the family's
archs (:data:`STACKS`) and per timed component of its family (``arch/family.py``), so a
decoder-only language model (:class:`~moenas.arch.LMArch`, one ``dec`` stack, components
``prefill`` and ``decode``) gets ``hat.dec_*``, ``moe.dec_*``, ``flops_prefill_attention``, ...
and the columns of ``LMSearchSpace.encode``. One feature matrix holds one family: archs of two
families are refused, and so are archs of another family than the one ``fit`` saw.

The protocol is a parameter (a :class:`~moenas.arch.protocol.LatencyProtocol`, or an
:class:`~moenas.arch.protocol.LMProtocol` for language models; None = the default protocol of the
archs' family, HAT's for encoder-decoder). Normalisation is *not* done here: the models keep
their scalers inside their fitted pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from moenas.arch import Arch, LMArch, SearchSpace, UserError
from moenas.arch import cost as cost_model
from moenas.arch.arch import AnyArch, ArchBase
from moenas.arch.cost import PARTS
from moenas.arch.family import DECODER_ONLY, DEFAULT_FAMILY, ENCODER_DECODER, FAMILIES, FamilyRegistry, ModelFamily
from moenas.arch.protocol import (
    PROTOCOLS,
    LatencyProtocol,
    LMProtocol,
    Protocol,
    ProtocolBase,
    protocol_for,
    protocol_from_dict,
)

GROUPS = ("hat", "moe", "cost", "encoding")


@dataclass(frozen=True)
class StackLayout:
    """One stack of a family's archs as the features see it. ``prefix`` names its features, as
    ``SearchSpace.feature_names`` names its columns (``enc``, ``dec``); ``attr`` is the arch's
    attribute holding the :class:`~moenas.arch.StackArch`; ``cross``: its layers also have
    cross-attention heads and a cross span (an encoder-decoder's decoder)."""

    prefix: str
    attr: str
    cross: bool = False

    @property
    def genes(self) -> int:
        """Per-layer genes before the expert sizes: heads (then cross heads and cross span)."""
        return 3 if self.cross else 1


# family name -> its archs' stacks, in the order of the arch's JSON and of SearchSpace.encode
STACKS: FamilyRegistry[tuple[StackLayout, ...]] = FamilyRegistry(
    "feature stack layout",
    {
        ENCODER_DECODER: (StackLayout("enc", "encoder"), StackLayout("dec", "decoder", cross=True)),
        DECODER_ONLY: (StackLayout("dec", "decoder"),),
    },
)


@lru_cache(maxsize=None)
def hat_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The ``hat`` group's names: per stack embed dim, layers, mean FFN size, mean heads (and
    mean cross heads and cross span); HAT's 10 for encoder-decoder."""
    names: list[str] = []
    for s in STACKS.for_family(family):
        names += [f"hat.{s.prefix}_{k}" for k in ("embed_dim", "layers", "ffn_mean", "heads_mean")]
        names += [f"hat.{s.prefix}_{k}" for k in ("cross_heads_mean", "cross_span_mean") if s.cross]
    return tuple(names)


@lru_cache(maxsize=None)
def moe_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The ``moe`` group's names: per stack mean experts per layer and mean expert size, then
    per stack MoE layers, then per stack experts in all, then top-k."""
    stacks = [s.prefix for s in STACKS.for_family(family)]
    return tuple(
        [f"moe.{p}_{k}" for p in stacks for k in ("experts_mean", "expert_size_mean")]
        + [f"moe.{p}_moe_layers" for p in stacks]
        + [f"moe.{p}_experts_total" for p in stacks]
        + ["moe.top_k"]
    )


@lru_cache(maxsize=None)
def cost_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The ``cost`` group's names, those of ``ProtocolCost.summary()`` for the family's
    components: params, totals, then per component its FLOPs and bytes and per part."""
    return ("params_total", "params_active", "params_embedding", "flops_total", "bytes_total") + tuple(
        f"{kind}_{comp}{suffix}"
        for comp in family.components
        for kind, suffix in [(k, s) for s in [""] + [f"_{p}" for p in PARTS] for k in ("flops", "bytes")]
    )


def roofline_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """The roofline baseline's columns: FLOPs and bytes of each timed component, in run order."""
    return tuple(f"{kind}_{comp}" for comp in family.components for kind in ("flops", "bytes"))


def automoe_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """AutoMoE's predictor's inputs: HAT's features, then each stack's mean experts per layer."""
    return hat_names(family) + tuple(n for n in moe_names(family) if n.endswith("_experts_mean"))


def transfer_names(family: ModelFamily = DEFAULT_FAMILY) -> tuple[str, ...]:
    """A transfer's full correction's columns (``predictor.transfer``): the FLOPs of each timed
    component, then their bytes, then each stack's layer count, then each stack's experts in
    all (what a device may weigh differently from the base's)."""
    comps = family.components
    return (
        tuple(f"flops_{c}" for c in comps)
        + tuple(f"bytes_{c}" for c in comps)
        + tuple(n for n in hat_names(family) if n.endswith("_layers"))
        + tuple(n for n in moe_names(family) if n.endswith("_experts_total"))
    )


HAT_FEATURES = list(hat_names(ENCODER_DECODER))
MOE_FEATURES = list(moe_names(ENCODER_DECODER))
COST_FEATURES = list(cost_names(ENCODER_DECODER))
# the column lists a model may pick by default, each a function of the family; a model names the
# encoder-decoder list, and :func:`family_columns` reads it as the list of the features' family
FAMILY_LISTS: tuple[Callable[[ModelFamily], tuple[str, ...]], ...] = (
    roofline_names,
    hat_names,
    automoe_names,
    cost_names,
    transfer_names,
)


def family_columns(wanted: Sequence[str], names: Sequence[str]) -> list[str]:
    """The columns a model asks for by ``wanted``, among the feature ``names`` of a matrix:
    ``wanted`` itself when ``names`` holds it all; when it is the encoder-decoder family's list
    of :data:`FAMILY_LISTS` (the roofline's, HAT's, ...) and ``names`` are another family's
    features, that family's same list (so one default serves every family); else ``wanted``."""
    wanted, have = list(wanted), set(names)
    if set(wanted) <= have:
        return wanted
    for make in FAMILY_LISTS:
        if wanted == list(make(DEFAULT_FAMILY)):
            for family in FAMILIES.values():
                if set(make(family)) <= have:
                    return list(make(family))
    return wanted


def as_archs(archs: AnyArch | str | Iterable[AnyArch | str]) -> list[AnyArch]:
    """A list of Arch / LMArch from arch objects or arch JSON strings (one or many)."""
    if isinstance(archs, (ArchBase, str)):
        archs = [archs]
    archs = list(archs)
    kind = type(archs[0]) if archs else Arch
    if issubclass(kind, ArchBase) and all(type(a) is kind for a in archs):
        return archs
    out = []
    for a in archs:
        if isinstance(a, ArchBase):
            out.append(a)
        elif isinstance(a, str):
            out.append(Arch.from_json(a))
        elif isinstance(a, dict):
            out.append(Arch.from_dict(a))
        else:
            raise UserError(f"expected Arch objects or arch JSON strings, got {type(a).__name__}")
    return out


def archs_family(archs: Sequence[AnyArch]) -> ModelFamily:
    """The one model family of ``archs`` (non-empty); UserError naming an arch of each when
    they mix families (their features have different columns)."""
    kind = type(archs[0])
    if all(type(a) is kind for a in archs):
        return archs[0].family
    fam = archs[0].family
    other = next((a for a in archs if a.family is not fam), None)
    if other is not None:
        raise UserError(
            f"archs of two model families in one feature matrix (arch {archs[0].arch_id} is {fam.name}, "
            f"arch {other.arch_id} {other.family.name}); predict each family with its own predictor"
        )
    return fam


def check_family(archs: Sequence[AnyArch], family: ModelFamily) -> None:
    """UserError unless every arch is of ``family`` (what features, or a predictor, were fitted on)."""
    fam = archs_family(archs)
    if fam is not family:
        raise UserError(
            f"arch {archs[0].arch_id} is {fam.name}, these features (and a predictor fitted with them) "
            f"are for {family.name} archs"
        )


def as_protocol(protocol: Protocol | None, family: ModelFamily = DEFAULT_FAMILY) -> Protocol:
    """``protocol`` itself, which must time ``family``; None: the family's default (HAT's for
    encoder-decoder)."""
    if protocol is None:
        return protocol_for(family)
    if not isinstance(protocol, ProtocolBase):
        kinds = " or ".join(cls.__name__ for cls in PROTOCOLS.values())
        raise UserError(f"expected a {kinds}, got {type(protocol).__name__}")
    if protocol.family is not family:
        raise UserError(f"a {protocol.family.name} protocol cannot time {family.name} archs")
    return protocol


def upgrade_protocol(state: dict[str, Any], *keys: str) -> dict[str, Any]:
    """An estimator's state from a model file with the protocol under ``keys`` as a protocol
    object (older files stored it as a dict of its fields)."""
    for k in keys:
        if isinstance(state.get(k), dict):
            state[k] = protocol_from_dict(state[k])
    return state


# ---- genes -> padded arrays --------------------------------------------------------------------


class ArchArrays:
    """Genes of n encoder-decoder archs as padded arrays; absent layers / expert slots are 0.

    glob: (n, 5) top_k, qkv_dim, vocab_size, enc embed, dec embed.
    enc: (n, Le, 1 + Xe) heads, expert sizes; dec: (n, Ld, 3 + Xd) heads, cross heads,
    cross span, expert sizes. From :func:`arch_arrays` these are views with the arch axis
    contiguous in memory (for speed); the shapes and values are all that callers rely on.
    What every family's arrays share: ``glob[:, :3]`` (top_k, qkv_dim, vocab_size), then one
    embed dim per stack; ``stacks``, one (n, L, genes + X) array per :data:`STACKS` entry.
    """

    family = ENCODER_DECODER

    def __init__(self, glob: np.ndarray, enc: np.ndarray, dec: np.ndarray):
        self.glob, self.enc, self.dec = glob, enc, dec

    @property
    def n(self) -> int:
        return self.glob.shape[0]

    @property
    def stacks(self) -> tuple[np.ndarray, ...]:
        return self.enc, self.dec


class LMArrays:
    """Genes of n decoder-only archs (:class:`~moenas.arch.LMArch`) as padded arrays.

    glob: (n, 4) top_k, qkv_dim, vocab_size, embed dim; dec: (n, L, 1 + X) heads, expert sizes
    (absent layers / expert slots 0); read through the same ``glob`` columns and ``stacks`` as
    :class:`ArchArrays`."""

    family = DECODER_ONLY

    def __init__(self, glob: np.ndarray, dec: np.ndarray):
        self.glob, self.dec = glob, dec

    @property
    def n(self) -> int:
        return self.glob.shape[0]

    @property
    def stacks(self) -> tuple[np.ndarray, ...]:
        return (self.dec,)


AnyArrays = ArchArrays | LMArrays


def stack_maxima(archs: Sequence[AnyArch], family: ModelFamily) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(layers, experts per layer) at most, per stack of the family, over ``archs``: the
    layout of their arrays when no space fixes it."""
    stacks = [[getattr(a, s.attr).layers for a in archs] for s in STACKS.for_family(family)]
    return (
        tuple(max(len(ls) for ls in st) for st in stacks),
        tuple(max(len(la.experts) for ls in st for la in ls) for st in stacks),
    )


def arch_arrays(
    archs: Sequence[Arch], max_layers: tuple[int, int] | None = None, max_experts: tuple[int, int] | None = None
) -> ArchArrays:
    """One pure-Python pass over the archs (the only per-arch Python work in this module).

    This pass bounds prediction throughput (~2 us per arch), so it is kept flat: every arch's
    genes go onto one flat list (one numpy conversion at the end, no per-arch list), and the
    zero padding of an expert tuple or of the missing layers is looked up, not rebuilt, per arch.
    """
    if not archs:
        raise UserError("no archs given")
    if max_layers is None or max_experts is None:
        found = stack_maxima(archs, ENCODER_DECODER)
        max_layers, max_experts = max_layers or found[0], max_experts or found[1]
    le, ld = max_layers
    xe, xd = max_experts
    we, wd = 1 + xe, 3 + xd
    width = 5 + le * we + ld * wd
    pad_e: dict[tuple[int, ...], tuple[int, ...]] = {}  # expert sizes -> padded to xe slots
    pad_d: dict[tuple[int, ...], tuple[int, ...]] = {}
    absent_e = [(0,) * (we * (le - k)) for k in range(le + 1)]  # zeros for le - k absent layers
    absent_d = [(0,) * (wd * (ld - k)) for k in range(ld + 1)]
    flat: list[int] = []
    put, put_all = flat.append, flat.extend
    for a in archs:  # hot loop; an arch with too many layers or experts makes its row too long
        e, d = a.encoder, a.decoder
        el, dl = e.layers, d.layers
        put_all((a.top_k, a.qkv_dim, a.vocab_size, e.embed_dim, d.embed_dim))
        for la in el:
            ex = la.experts
            p = pad_e.get(ex)
            if p is None:
                p = pad_e[ex] = ex + (0,) * (xe - len(ex))
            put(la.heads)
            put_all(p)
        put_all(absent_e[len(el)] if len(el) <= le else ())
        for la in dl:
            ex = la.experts
            p = pad_d.get(ex)
            if p is None:
                p = pad_d[ex] = ex + (0,) * (xd - len(ex))
            put_all((la.heads, la.cross_heads, la.cross_span))
            put_all(p)
        put_all(absent_d[len(dl)] if len(dl) <= ld else ())
    n = len(archs)
    if len(flat) != n * width:  # every row is >= width, so only a too-long row changes the total
        _check_layout(archs, ENCODER_DECODER, max_layers, max_experts)
    # gene-major memory (the arch axis contiguous): the features sum over the short layer and
    # expert axes, and numpy reduces a short *contiguous* axis one arch at a time (~2x slower)
    cols = np.ascontiguousarray(np.array(flat, dtype=np.float64).reshape(n, width).T)
    return ArchArrays(
        cols[:5].T,
        cols[5 : 5 + le * we].reshape(le, we, n).transpose(2, 0, 1),
        cols[5 + le * we :].reshape(ld, wd, n).transpose(2, 0, 1),
    )


class _Padded(dict):
    """Expert sizes -> the same padded with zeros to ``slots`` (built once per distinct tuple)."""

    def __init__(self, slots: int):
        super().__init__()
        self.slots = slots

    def __missing__(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        padded = self[sizes] = sizes + (0,) * (self.slots - len(sizes))
        return padded


def lm_arch_arrays(
    archs: Sequence[LMArch], max_layers: tuple[int] | None = None, max_experts: tuple[int] | None = None
) -> LMArrays:
    """:func:`arch_arrays` for decoder-only archs: one flat pure-Python pass (each arch's genes
    onto one list, paddings looked up), one numpy conversion, gene-major memory."""
    if not archs:
        raise UserError("no archs given")
    if max_layers is None or max_experts is None:
        found = stack_maxima(archs, DECODER_ONLY)
        max_layers, max_experts = max_layers or found[0], max_experts or found[1]
    (ld,), (xd,) = max_layers, max_experts
    wd = 1 + xd
    width = 4 + ld * wd
    pad = _Padded(xd)
    absent = [(0,) * (wd * (ld - k)) for k in range(ld + 1)]  # zeros for ld - k absent layers
    flat: list[int] = []
    put, put_all = flat.append, flat.extend
    for a in archs:  # hot loop; an arch with too many layers or experts makes its row too long
        d = a.decoder
        dl = d.layers
        put_all((a.top_k, a.qkv_dim, a.vocab_size, d.embed_dim))
        for la in dl:
            put(la.heads)
            put_all(pad[la.experts])
        put_all(absent[len(dl)] if len(dl) <= ld else ())
    n = len(archs)
    if len(flat) != n * width:
        _check_layout(archs, DECODER_ONLY, max_layers, max_experts)
    cols = np.ascontiguousarray(np.array(flat, dtype=np.float64).reshape(n, width).T)
    return LMArrays(cols[:4].T, cols[4:].reshape(ld, wd, n).transpose(2, 0, 1))


# family name -> (archs, max layers, max experts per stack) -> their arrays
ARRAYS: FamilyRegistry[Callable[..., AnyArrays]] = FamilyRegistry(
    "gene arrays", {ENCODER_DECODER: arch_arrays, DECODER_ONLY: lm_arch_arrays}
)


def _check_layout(
    archs: Sequence[AnyArch], family: ModelFamily, max_layers: tuple[int, ...], max_experts: tuple[int, ...]
) -> None:
    """UserError naming the first arch with more layers or experts than the layout holds."""
    layout = list(zip(STACKS.for_family(family), max_layers, max_experts))
    for a in archs:
        for s, most_layers, most_experts in layout:
            layers = getattr(a, s.attr).layers
            if len(layers) > most_layers or any(len(la.experts) > most_experts for la in layers):
                limits = ", ".join(f"{t.attr} <= {lo} layers of <= {x} experts" for t, lo, x in layout)
                raise UserError(f"arch {a.arch_id} has more layers or experts than this predictor knows ({limits})")
    raise AssertionError("arch_arrays: row length mismatch without an oversized arch")


# ---- the cost model over arrays -------------------------------------------------------------------


def _over_layers(cost: cost_model.Cost, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A per-layer (n, L) cost summed over the layers that are present (padding costs nothing)."""
    return np.where(present, cost[0], 0.0).sum(1), np.where(present, cost[1], 0.0).sum(1)


def _experts(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(experts per layer, their hidden sizes summed) from (n, L, X) sizes padded with 0."""
    return (sizes > 0).sum(-1), sizes.sum(-1)


def _ffn_parts(
    n_experts: np.ndarray,
    hidden_total: np.ndarray,
    dim: np.ndarray,
    tokens: float,
    top_k: np.ndarray,
    present: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ffn / router / experts cost of every layer of a stack, summed over the layers."""
    dense, moe = present & (n_experts == 1), present & (n_experts > 1)
    n_safe = np.maximum(n_experts, 1)  # absent layers have none
    return {
        "ffn": _over_layers(cost_model.ffn(tokens, dim, hidden_total), dense),
        "router": _over_layers(cost_model.router(tokens, dim, n_experts), moe),
        "experts": _over_layers(cost_model.uniform_experts(tokens, top_k, dim, n_safe, hidden_total), moe),
    }


def _ffn_params(
    n_experts: np.ndarray, hidden_total: np.ndarray, dim: np.ndarray, top_k: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(total, active) FFN weights summed over the present layers of a stack."""
    total, active = cost_model.ffn_params(dim, top_k, np.maximum(n_experts, 1), hidden_total)
    return np.where(present, total, 0.0).sum(1), np.where(present, active, 0.0).sum(1)


def vector_cost(arr: AnyArrays, protocol: Protocol | None = None) -> dict[str, np.ndarray]:
    """``ProtocolCost.summary()`` for every arch at once (uniform routing), as arrays of length n.

    The formulas are ``moenas.arch.cost``'s, called on (n, layers) arrays; a component of
    incremental steps is its steps x one step at the mean cache length, as in ``arch.cost``.
    ``protocol`` must be of the arrays' family (None: the family's default)."""
    return VECTOR_COSTS.for_family(arr.family)(arr, as_protocol(protocol, arr.family))


def _encoder_decoder_cost(arr: ArchArrays, p: LatencyProtocol) -> dict[str, np.ndarray]:
    """:func:`vector_cost` of encoder-decoder archs: the encoder on (batch, src_len) with every
    decoder layer's cross keys/values; ``decoder_steps`` decoder steps on batch * beam rows."""
    batch, src_len, steps, dec_batch = p.batch, p.src_len, p.decoder_steps, p.decoder_batch
    top_k, qkv, vocab, enc_dim, dec_dim = (arr.glob[:, i] for i in range(5))
    zeros = np.zeros(arr.n)
    # per-layer gene arrays are (n, L); arch-level ones get a layer axis to broadcast against them
    k_l, qkv_l, enc_dim_l, dec_dim_l = top_k[:, None], qkv[:, None], enc_dim[:, None], dec_dim[:, None]
    enc_heads = arr.enc[:, :, 0]
    dec_heads, cross_heads, cross_span = arr.dec[:, :, 0], arr.dec[:, :, 1], arr.dec[:, :, 2]
    enc_present, dec_present = enc_heads > 0, dec_heads > 0
    enc_experts, dec_experts = _experts(arr.enc[:, :, 1:]), _experts(arr.dec[:, :, 3:])  # (count, hidden sum)
    # absent layers have 0 heads: counted as 1 below so that head sizes stay finite; their
    # costs are then dropped by _over_layers

    # encoder stack on (batch, src_len), plus every decoder layer's cross keys/values
    enc_parts = {
        "attention": _over_layers(
            cost_model.encoder_attention(np.maximum(enc_heads, 1), enc_dim_l, qkv_l, batch, src_len), enc_present
        ),
        **_ffn_parts(*enc_experts, enc_dim_l, float(batch * src_len), k_l, enc_present),
        "cross_kv": _over_layers(cost_model.cross_kv(cross_span, enc_dim_l, qkv_l, batch, src_len), dec_present),
        "logits": (zeros, zeros),
    }

    # decoder: one step on dec_batch rows at the mean cache length, times the steps
    past_len = cost_model.mean_past_len(steps)
    attention = cost_model.add(
        cost_model.decoder_self_attention(np.maximum(dec_heads, 1), dec_dim_l, qkv_l, dec_batch, past_len),
        cost_model.decoder_cross_attention(
            np.maximum(cross_heads, 1), cross_span, dec_dim_l, qkv_l, dec_batch, src_len
        ),
    )
    step_parts = {
        "attention": _over_layers(attention, dec_present),
        **_ffn_parts(*dec_experts, dec_dim_l, float(dec_batch), k_l, dec_present),
        "cross_kv": (zeros, zeros),
        "logits": cost_model.logits(dec_dim, vocab, dec_batch),
    }
    dec_parts = {part: cost_model.scale(cost, steps) for part, cost in step_parts.items()}

    # parameters
    emb = cost_model.embedding_params(vocab, enc_dim, dec_dim)
    fixed = (
        emb
        + cost_model.final_norm_params(enc_dim)
        + cost_model.final_norm_params(dec_dim)
        + enc_present.sum(1) * cost_model.encoder_layer_params(enc_dim, qkv)
        + dec_present.sum(1) * cost_model.decoder_layer_params(dec_dim, enc_dim, qkv)
    )
    enc_total, enc_active = _ffn_params(*enc_experts, enc_dim_l, k_l, enc_present)
    dec_total, dec_active = _ffn_params(*dec_experts, dec_dim_l, k_l, dec_present)
    params = (fixed + enc_total + dec_total, fixed + enc_active + dec_active, emb)
    return _summary(arr.family, params, {"encoder": enc_parts, "decoder": dec_parts}, zeros)


def _decoder_only_cost(arr: LMArrays, p: LMProtocol) -> dict[str, np.ndarray]:
    """:func:`vector_cost` of decoder-only archs, as ``arch.cost.lm_prefill_cost`` and
    ``lm_decode_cost``: the (batch, prompt_len) prompt in one causal pass (the masked scores
    counted) with the last position's logits; ``decode_steps`` single-token steps with logits,
    one step at the mean cache length prompt_len + (steps - 1) / 2 times the steps."""
    batch, prompt_len, steps = p.batch, p.prompt_len, p.decode_steps
    top_k, qkv, vocab, dim = (arr.glob[:, i] for i in range(4))
    zeros = np.zeros(arr.n)
    k_l, qkv_l, dim_l = top_k[:, None], qkv[:, None], dim[:, None]
    heads = arr.dec[:, :, 0]
    present, heads_safe = heads > 0, np.maximum(heads, 1)  # absent layers: costed as 1 head, then dropped
    experts = _experts(arr.dec[:, :, 1:])
    logits = cost_model.logits(dim, vocab, batch)
    prefill = {
        "attention": _over_layers(cost_model.encoder_attention(heads_safe, dim_l, qkv_l, batch, prompt_len), present),
        **_ffn_parts(*experts, dim_l, float(batch * prompt_len), k_l, present),
        "cross_kv": (zeros, zeros),
        "logits": logits,
    }
    past_len = prompt_len + cost_model.mean_past_len(steps)
    step = {
        "attention": _over_layers(
            cost_model.decoder_self_attention(heads_safe, dim_l, qkv_l, batch, past_len), present
        ),
        **_ffn_parts(*experts, dim_l, float(batch), k_l, present),
        "cross_kv": (zeros, zeros),
        "logits": logits,
    }
    decode = {part: cost_model.scale(cost, steps) for part, cost in step.items()}
    emb = cost_model.token_embedding_params(vocab, dim)
    fixed = emb + cost_model.final_norm_params(dim) + present.sum(1) * cost_model.encoder_layer_params(dim, qkv)
    ffn_total, ffn_active = _ffn_params(*experts, dim_l, k_l, present)
    return _summary(
        arr.family, (fixed + ffn_total, fixed + ffn_active, emb), {"prefill": prefill, "decode": decode}, zeros
    )


# family name -> (arrays, protocol) -> the summary of every arch
VECTOR_COSTS: FamilyRegistry[Callable[..., dict[str, np.ndarray]]] = FamilyRegistry(
    "vectorised cost model", {ENCODER_DECODER: _encoder_decoder_cost, DECODER_ONLY: _decoder_only_cost}
)


def _summary(
    family: ModelFamily,
    params: tuple[np.ndarray, np.ndarray, np.ndarray],
    components: dict[str, dict[str, cost_model.Cost]],
    zeros: np.ndarray,
) -> dict[str, np.ndarray]:
    """The keys of ``ProtocolCost.summary()`` from (total, active, embedding) parameters and
    each of the family's components' (flops, bytes) per part (scalars broadcast to n archs)."""
    out: dict[str, np.ndarray] = {"params_total": params[0], "params_active": params[1], "params_embedding": params[2]}
    for name in family.components:
        parts = components[name]
        out[f"flops_{name}"] = sum(parts[part][0] for part in PARTS)
        out[f"bytes_{name}"] = sum(parts[part][1] for part in PARTS)
        for part in PARTS:
            out[f"flops_{name}_{part}"] = parts[part][0] + zeros
            out[f"bytes_{name}_{part}"] = parts[part][1] + zeros
    out["flops_total"] = sum(out[f"flops_{c}"] for c in family.components)
    out["bytes_total"] = sum(out[f"bytes_{c}"] for c in family.components)
    return out


def _stacks(arr: AnyArrays) -> list[tuple[StackLayout, np.ndarray, np.ndarray]]:
    """(layout, genes (n, L, genes + X), embed dim (n,)) of each stack of the arrays' family."""
    return [(s, st, arr.glob[:, 3 + i]) for i, (s, st) in enumerate(zip(STACKS.for_family(arr.family), arr.stacks))]


def hat_features(arr: AnyArrays) -> np.ndarray:
    """HAT's features per stack (see :func:`hat_names`; HAT's 10 for encoder-decoder), shape (n, len(names))."""
    cols = []
    for s, st, embed in _stacks(arr):
        heads, sizes = st[:, :, 0], st[:, :, s.genes :]
        nl = (heads > 0).sum(1)
        ffn = (sizes.sum(-1) / np.maximum((sizes > 0).sum(-1), 1)).sum(1) / nl
        cols += [embed, nl, ffn, heads.sum(1) / nl]
        if s.cross:
            cols += [st[:, :, 1].sum(1) / nl, st[:, :, 2].sum(1) / nl]
    return np.column_stack(cols)


def moe_features(arr: AnyArrays) -> np.ndarray:
    """AutoMoE-style expert features (see :func:`moe_names`), shape (n, 4 S + 1) for S stacks."""
    means, moe_layers, totals = [], [], []
    for s, st, _ in _stacks(arr):
        sizes = st[:, :, s.genes :]
        E = (sizes > 0).sum(-1)
        nl = (st[:, :, 0] > 0).sum(1)
        means += [E.sum(1) / nl, sizes.sum((1, 2)) / np.maximum(E.sum(1), 1)]
        moe_layers.append((E > 1).sum(1))
        totals.append(E.sum(1))
    return np.column_stack(means + moe_layers + totals + [arr.glob[:, 0]])


def encoding_features(arr: AnyArrays, max_layers: tuple[int, ...], max_experts: tuple[int, ...]) -> np.ndarray:
    """The columns of ``SearchSpace.encode`` / ``LMSearchSpace.encode`` (same order and values)."""
    n = arr.n
    cols = [arr.glob[:, 0:1]]
    for (s, st, embed), L, X in zip(_stacks(arr), max_layers, max_experts):
        heads = st[:, :, 0]
        cols += [embed[:, None], (heads > 0).sum(1, keepdims=True).astype(float)]
        sizes = st[:, :, s.genes :]
        E = (sizes > 0).sum(-1).astype(float)
        per_layer = [st[:, :, : s.genes], E[:, :, None], sizes]  # heads[, cross_heads, cross_span], n_experts, sizes
        cols.append(np.concatenate(per_layer, axis=2).reshape(n, L * (s.genes + 1 + X)))
    return np.concatenate(cols, axis=1)


def encoding_names(
    max_layers: tuple[int, ...], max_experts: tuple[int, ...], family: ModelFamily = DEFAULT_FAMILY
) -> list[str]:
    """Names of :func:`encoding_features`' columns (those of the family's space's ``feature_names``)."""
    names = ["top_k"]
    for s, L, X in zip(STACKS.for_family(family), max_layers, max_experts):
        p = s.prefix
        names += [f"{p}.embed_dim", f"{p}.layers"]
        for i in range(L):
            names += [f"{p}{i}.heads"]
            if s.cross:
                names += [f"{p}{i}.cross_heads", f"{p}{i}.cross_span"]
            names += [f"{p}{i}.n_experts"] + [f"{p}{i}.expert{j}" for j in range(X)]
    return names


class ArchFeatures(TransformerMixin, BaseEstimator):
    """Arch list (or arch JSON strings) -> feature matrix; see the module docstring.

    protocol: the latency protocol of the costs (None: the default of the archs' family, for
    encoder-decoder HAT's 1/30/30/5); its family, the space's and the archs' must agree.
    space: a shipped space name or None; fixes the ``encoding`` layout (max layers/experts).
    groups: which feature groups, in order.
    After ``fit``: ``family_`` (the protocol's), ``max_layers_`` / ``max_experts_`` (one entry
    per stack of the family), ``feature_names_``.
    """

    def __init__(self, protocol: Protocol | None = None, space: str | None = None, groups: Sequence[str] = GROUPS):
        self.protocol = protocol
        self.space = space
        self.groups = groups

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(upgrade_protocol(state, "protocol", "protocol_"))

    @property
    def family_(self) -> ModelFamily:
        """The model family these features are for (that of the fitted protocol)."""
        return self.protocol_.family

    def fit(self, archs, y=None):
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise UserError(f"unknown feature group(s) {', '.join(bad)} (choose from {', '.join(GROUPS)})")
        space = self._space()
        archs = as_archs(archs) if archs is not None else []
        self.protocol_ = as_protocol(self.protocol, self._family(archs, space))
        family = self.family_
        if space is not None:
            stacks = [getattr(space, s.attr) for s in STACKS.for_family(family)]
            self.max_layers_ = [max(st.layers) for st in stacks]
            self.max_experts_ = [max(st.experts) for st in stacks]
        else:
            if not archs:
                raise UserError("no archs to fit features on")
            most_layers, most_experts = stack_maxima(archs, family)
            self.max_layers_, self.max_experts_ = list(most_layers), list(most_experts)
        names: list[str] = []
        for g in self.groups:
            names += {
                "hat": hat_names(family),
                "moe": moe_names(family),
                "cost": cost_names(family),
                "encoding": encoding_names(tuple(self.max_layers_), tuple(self.max_experts_), family),
            }[g]
        self.feature_names_ = names
        self.n_features_out_ = len(names)
        return self

    def _space(self) -> Any:
        """The shipped space ``space`` names, or None (none named, or a file that is not shipped:
        the layout is then inferred from the archs)."""
        if self.space is None:
            return None
        try:
            return SearchSpace.load(self.space)
        except UserError:
            return None

    def _family(self, archs: list[AnyArch], space: Any) -> ModelFamily:
        """The one family the protocol, the space and the archs name (encoder-decoder when
        none does); UserError naming two that differ."""
        named = [(f"space {space.name}", space.family)] if space is not None else []
        if isinstance(self.protocol, ProtocolBase):
            named.append(("protocol", self.protocol.family))
        if archs:
            named.append(("archs", archs_family(archs)))
        for what, fam in named[1:]:
            if fam is not named[0][1]:
                raise UserError(
                    f"features of one model family: the {named[0][0]} is {named[0][1].name}, the {what} {fam.name}"
                )
        return named[0][1] if named else DEFAULT_FAMILY

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names_, dtype=object)

    def arrays(self, archs) -> AnyArrays:
        """The padded gene arrays of ``archs`` in this fit's layout (archs of its family only)."""
        archs = as_archs(archs)
        check_family(archs, self.family_)
        return ARRAYS.for_family(self.family_)(archs, tuple(self.max_layers_), tuple(self.max_experts_))

    def transform(self, archs, chunk: int = 8192) -> np.ndarray:
        """Feature matrix (n, n_features); computed in chunks so temporaries stay in cache.
        UserError for archs of another family than ``fit`` saw."""
        archs = as_archs(archs)
        if not archs:
            raise UserError("no archs given")
        check_family(archs, self.family_)
        to_arrays = ARRAYS.for_family(self.family_)
        layout = tuple(self.max_layers_), tuple(self.max_experts_)
        if len(archs) <= chunk:
            return self.transform_arrays(to_arrays(archs, *layout))
        out = np.empty((len(archs), self.n_features_out_))
        for i in range(0, len(archs), chunk):
            out[i : i + chunk] = self.transform_arrays(to_arrays(archs[i : i + chunk], *layout))
        return out

    def transform_arrays(self, arr: AnyArrays) -> np.ndarray:
        blocks = []
        for g in self.groups:
            if g == "hat":
                blocks.append(hat_features(arr))
            elif g == "moe":
                blocks.append(moe_features(arr))
            elif g == "cost":
                c = vector_cost(arr, self.protocol_)
                blocks.append(np.column_stack([c[k] for k in cost_names(arr.family)]))
            elif g == "encoding":
                blocks.append(encoding_features(arr, tuple(self.max_layers_), tuple(self.max_experts_)))
        return np.concatenate(blocks, axis=1)


def describe(features: ArchFeatures) -> dict[str, Any]:
    return {
        "groups": list(features.groups),
        "names": list(features.feature_names_),
        "protocol": features.protocol_.to_dict(),
        "max_layers": features.max_layers_,
        "max_experts": features.max_experts_,
    }
