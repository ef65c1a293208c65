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

The protocol is a parameter (an :class:`~moenas.arch.protocol.LatencyProtocol`; None = HAT's
defaults). Normalisation is *not* done here: the models keep their scalers inside their fitted
pipelines.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch import cost as cost_model
from moenas.arch.cost import PARTS
from moenas.arch.protocol import LatencyProtocol

GROUPS = ("hat", "moe", "cost", "encoding")
HAT_FEATURES = [
    "hat.enc_embed_dim", "hat.enc_layers", "hat.enc_ffn_mean", "hat.enc_heads_mean",
    "hat.dec_embed_dim", "hat.dec_layers", "hat.dec_ffn_mean", "hat.dec_heads_mean",
    "hat.dec_cross_heads_mean", "hat.dec_cross_span_mean",
]
MOE_FEATURES = [
    "moe.enc_experts_mean", "moe.enc_expert_size_mean", "moe.dec_experts_mean", "moe.dec_expert_size_mean",
    "moe.enc_moe_layers", "moe.dec_moe_layers", "moe.enc_experts_total", "moe.dec_experts_total", "moe.top_k",
]
COST_FEATURES = ["params_total", "params_active", "params_embedding", "flops_total", "bytes_total"] + [
    f"{kind}_{comp}{suffix}"
    for comp in ("encoder", "decoder")
    for kind, suffix in [(k, s) for s in [""] + [f"_{p}" for p in PARTS] for k in ("flops", "bytes")]
]


def as_archs(archs: Arch | str | Iterable[Arch | str]) -> list[Arch]:
    """A list of Arch from Arch objects or arch JSON strings (one or many)."""
    if isinstance(archs, (Arch, str)):
        archs = [archs]
    archs = list(archs)
    if all(type(a) is Arch for a in archs):
        return archs
    out = []
    for a in archs:
        if isinstance(a, Arch):
            out.append(a)
        elif isinstance(a, str):
            out.append(Arch.from_json(a))
        elif isinstance(a, dict):
            out.append(Arch.from_dict(a))
        else:
            raise UserError(f"expected Arch objects or arch JSON strings, got {type(a).__name__}")
    return out


def as_protocol(protocol: LatencyProtocol | None) -> LatencyProtocol:
    """``protocol`` itself; None: the default (HAT's)."""
    if protocol is None:
        return LatencyProtocol()
    if not isinstance(protocol, LatencyProtocol):
        raise UserError(f"expected a LatencyProtocol, got {type(protocol).__name__}")
    return protocol


def upgrade_protocol(state: dict[str, Any], *keys: str) -> dict[str, Any]:
    """An estimator's state from a model file with the protocol under ``keys`` as
    ``LatencyProtocol`` (older files stored it as a dict of its fields)."""
    for k in keys:
        if isinstance(state.get(k), dict):
            state[k] = LatencyProtocol.from_dict(state[k])
    return state


# ---- genes -> padded arrays --------------------------------------------------------------------


class ArchArrays:
    """Genes of n archs as padded arrays; absent layers / expert slots are 0.

    glob: (n, 5) top_k, qkv_dim, vocab_size, enc embed, dec embed.
    enc: (n, Le, 1 + Xe) heads, expert sizes; dec: (n, Ld, 3 + Xd) heads, cross heads,
    cross span, expert sizes. From :func:`arch_arrays` these are views with the arch axis
    contiguous in memory (for speed); the shapes and values are all that callers rely on.
    """

    def __init__(self, glob: np.ndarray, enc: np.ndarray, dec: np.ndarray):
        self.glob, self.enc, self.dec = glob, enc, dec

    @property
    def n(self) -> int:
        return self.glob.shape[0]


def arch_arrays(archs: Sequence[Arch], max_layers: tuple[int, int] | None = None,
                max_experts: tuple[int, int] | None = None) -> ArchArrays:
    """One pure-Python pass over the archs (the only per-arch Python work in this module).

    This pass bounds prediction throughput (~2 us per arch), so it is kept flat: every arch's
    genes go onto one flat list (one numpy conversion at the end, no per-arch list), and the
    zero padding of an expert tuple or of the missing layers is looked up, not rebuilt, per arch.
    """
    if not archs:
        raise UserError("no archs given")
    if max_layers is None:
        max_layers = (max(len(a.encoder.layers) for a in archs), max(len(a.decoder.layers) for a in archs))
    if max_experts is None:
        max_experts = (max(len(la.experts) for a in archs for la in a.encoder.layers),
                       max(len(la.experts) for a in archs for la in a.decoder.layers))
    le, ld = max_layers
    xe, xd = max_experts
    we, wd = 1 + xe, 3 + xd
    width = 5 + le * we + ld * wd
    pad_e: dict[tuple[int, ...], tuple[int, ...]] = {}   # expert sizes -> padded to xe slots
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
        _check_layout(archs, max_layers, max_experts)
    # gene-major memory (the arch axis contiguous): the features sum over the short layer and
    # expert axes, and numpy reduces a short *contiguous* axis one arch at a time (~2x slower)
    cols = np.ascontiguousarray(np.array(flat, dtype=np.float64).reshape(n, width).T)
    return ArchArrays(cols[:5].T, cols[5:5 + le * we].reshape(le, we, n).transpose(2, 0, 1),
                      cols[5 + le * we:].reshape(ld, wd, n).transpose(2, 0, 1))


def _check_layout(archs: Sequence[Arch], max_layers: tuple[int, int], max_experts: tuple[int, int]) -> None:
    """UserError naming the first arch with more layers or experts than the layout holds."""
    (le, ld), (xe, xd) = max_layers, max_experts
    for a in archs:
        if (len(a.encoder.layers) > le or len(a.decoder.layers) > ld
                or any(len(la.experts) > xe for la in a.encoder.layers)
                or any(len(la.experts) > xd for la in a.decoder.layers)):
            raise UserError(f"arch {a.arch_id} has more layers or experts than this predictor knows "
                            f"(encoder <= {le} layers of <= {xe} experts, decoder <= {ld} of <= {xd})")
    raise AssertionError("arch_arrays: row length mismatch without an oversized arch")


# ---- the cost model over arrays -------------------------------------------------------------------


def _over_layers(cost: cost_model.Cost, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A per-layer (n, L) cost summed over the layers that are present (padding costs nothing)."""
    return np.where(present, cost[0], 0.0).sum(1), np.where(present, cost[1], 0.0).sum(1)


def _experts(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(experts per layer, their hidden sizes summed) from (n, L, X) sizes padded with 0."""
    return (sizes > 0).sum(-1), sizes.sum(-1)


def _ffn_parts(n_experts: np.ndarray, hidden_total: np.ndarray, dim: np.ndarray, tokens: float, top_k: np.ndarray,
               present: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ffn / router / experts cost of every layer of a stack, summed over the layers."""
    dense, moe = present & (n_experts == 1), present & (n_experts > 1)
    n_safe = np.maximum(n_experts, 1)  # absent layers have none
    return {
        "ffn": _over_layers(cost_model.ffn(tokens, dim, hidden_total), dense),
        "router": _over_layers(cost_model.router(tokens, dim, n_experts), moe),
        "experts": _over_layers(cost_model.uniform_experts(tokens, top_k, dim, n_safe, hidden_total), moe),
    }


def _ffn_params(n_experts: np.ndarray, hidden_total: np.ndarray, dim: np.ndarray, top_k: np.ndarray,
                present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total, active) FFN weights summed over the present layers of a stack."""
    total, active = cost_model.ffn_params(dim, top_k, np.maximum(n_experts, 1), hidden_total)
    return np.where(present, total, 0.0).sum(1), np.where(present, active, 0.0).sum(1)


def vector_cost(arr: ArchArrays, protocol: LatencyProtocol | None = None) -> dict[str, np.ndarray]:
    """``ProtocolCost.summary()`` for every arch at once (uniform routing), as arrays of length n.

    The formulas are ``moenas.arch.cost``'s, called on (n, layers) arrays; the decoder's steps
    are ``decoder_steps`` x one step at the mean cache length, as ``arch.cost.decoder_cost``."""
    p = as_protocol(protocol)
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
        "attention": _over_layers(cost_model.encoder_attention(np.maximum(enc_heads, 1), enc_dim_l, qkv_l, batch, src_len),
                                  enc_present),
        **_ffn_parts(*enc_experts, enc_dim_l, float(batch * src_len), k_l, enc_present),
        "cross_kv": _over_layers(cost_model.cross_kv(cross_span, enc_dim_l, qkv_l, batch, src_len), dec_present),
        "logits": (zeros, zeros),
    }

    # decoder: one step on dec_batch rows at the mean cache length, times the steps
    past_len = cost_model.mean_past_len(steps)
    attention = cost_model.add(
        cost_model.decoder_self_attention(np.maximum(dec_heads, 1), dec_dim_l, qkv_l, dec_batch, past_len),
        cost_model.decoder_cross_attention(np.maximum(cross_heads, 1), cross_span, dec_dim_l, qkv_l, dec_batch, src_len))
    step_parts = {
        "attention": _over_layers(attention, dec_present),
        **_ffn_parts(*dec_experts, dec_dim_l, float(dec_batch), k_l, dec_present),
        "cross_kv": (zeros, zeros),
        "logits": cost_model.logits(dec_dim, vocab, dec_batch),
    }
    dec_parts = {part: cost_model.scale(cost, steps) for part, cost in step_parts.items()}

    # parameters
    emb = cost_model.embedding_params(vocab, enc_dim, dec_dim)
    fixed = (emb + cost_model.final_norm_params(enc_dim) + cost_model.final_norm_params(dec_dim)
             + enc_present.sum(1) * cost_model.encoder_layer_params(enc_dim, qkv)
             + dec_present.sum(1) * cost_model.decoder_layer_params(dec_dim, enc_dim, qkv))
    enc_total, enc_active = _ffn_params(*enc_experts, enc_dim_l, k_l, enc_present)
    dec_total, dec_active = _ffn_params(*dec_experts, dec_dim_l, k_l, dec_present)
    out: dict[str, np.ndarray] = {
        "params_total": fixed + enc_total + dec_total,
        "params_active": fixed + enc_active + dec_active,
        "params_embedding": emb,
    }
    for name, parts in (("encoder", enc_parts), ("decoder", dec_parts)):
        out[f"flops_{name}"] = sum(parts[part][0] for part in PARTS)
        out[f"bytes_{name}"] = sum(parts[part][1] for part in PARTS)
        for part in PARTS:
            out[f"flops_{name}_{part}"] = parts[part][0] + zeros
            out[f"bytes_{name}_{part}"] = parts[part][1] + zeros
    out["flops_total"] = out["flops_encoder"] + out["flops_decoder"]
    out["bytes_total"] = out["bytes_encoder"] + out["bytes_decoder"]
    return out


def hat_features(arr: ArchArrays) -> np.ndarray:
    """HAT's 10 features (see the module docstring), shape (n, 10)."""
    eh, dh = arr.enc[:, :, 0], arr.dec[:, :, 0]
    em, dm = eh > 0, dh > 0
    ne, nd = em.sum(1), dm.sum(1)
    es, ds = arr.enc[:, :, 1:], arr.dec[:, :, 3:]
    e_ffn = (es.sum(-1) / np.maximum((es > 0).sum(-1), 1)).sum(1) / ne
    d_ffn = (ds.sum(-1) / np.maximum((ds > 0).sum(-1), 1)).sum(1) / nd
    return np.column_stack([
        arr.glob[:, 3], ne, e_ffn, eh.sum(1) / ne,
        arr.glob[:, 4], nd, d_ffn, dh.sum(1) / nd,
        arr.dec[:, :, 1].sum(1) / nd, arr.dec[:, :, 2].sum(1) / nd,
    ])


def moe_features(arr: ArchArrays) -> np.ndarray:
    """AutoMoE-style expert features (see MOE_FEATURES), shape (n, 9)."""
    cols = []
    for sizes, heads in ((arr.enc[:, :, 1:], arr.enc[:, :, 0]), (arr.dec[:, :, 3:], arr.dec[:, :, 0])):
        E = (sizes > 0).sum(-1)
        nl = (heads > 0).sum(1)
        cols += [E.sum(1) / nl, sizes.sum((1, 2)) / np.maximum(E.sum(1), 1)]
    out = np.column_stack(cols)
    Ee, Ed = (arr.enc[:, :, 1:] > 0).sum(-1), (arr.dec[:, :, 3:] > 0).sum(-1)
    extra = np.column_stack([(Ee > 1).sum(1), (Ed > 1).sum(1), Ee.sum(1), Ed.sum(1), arr.glob[:, 0]])
    return np.column_stack([out, extra])


def encoding_features(arr: ArchArrays, max_layers: tuple[int, int], max_experts: tuple[int, int]) -> np.ndarray:
    """The columns of ``SearchSpace.encode`` (same order and values)."""
    n = arr.n
    cols = [arr.glob[:, 0:1]]
    for st, embed, base, (L, X) in ((arr.enc, arr.glob[:, 3], 1, (max_layers[0], max_experts[0])),
                                   (arr.dec, arr.glob[:, 4], 3, (max_layers[1], max_experts[1]))):
        heads = st[:, :, 0]
        cols += [embed[:, None], (heads > 0).sum(1, keepdims=True).astype(float)]
        sizes = st[:, :, base:]
        E = (sizes > 0).sum(-1).astype(float)
        per_layer = [st[:, :, :base], E[:, :, None], sizes]   # heads[, cross_heads, cross_span], n_experts, sizes
        cols.append(np.concatenate(per_layer, axis=2).reshape(n, L * (base + 1 + X)))
    return np.concatenate(cols, axis=1)


def encoding_names(max_layers: tuple[int, int], max_experts: tuple[int, int]) -> list[str]:
    names = ["top_k"]
    for name, L, X, dec in (("enc", max_layers[0], max_experts[0], False), ("dec", max_layers[1], max_experts[1], True)):
        names += [f"{name}.embed_dim", f"{name}.layers"]
        for i in range(L):
            names += [f"{name}{i}.heads"]
            if dec:
                names += [f"{name}{i}.cross_heads", f"{name}{i}.cross_span"]
            names += [f"{name}{i}.n_experts"] + [f"{name}{i}.expert{j}" for j in range(X)]
    return names


class ArchFeatures(TransformerMixin, BaseEstimator):
    """Arch list (or arch JSON strings) -> feature matrix; see the module docstring.

    protocol: the latency protocol of the costs (None: HAT's 1/30/30/5).
    space: a shipped space name or None; fixes the ``encoding`` layout (max layers/experts).
    groups: which feature groups, in order.
    """

    def __init__(self, protocol: LatencyProtocol | None = None, space: str | None = None,
                 groups: Sequence[str] = GROUPS):
        self.protocol = protocol
        self.space = space
        self.groups = groups

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(upgrade_protocol(state, "protocol", "protocol_"))

    def fit(self, archs, y=None):
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise UserError(f"unknown feature group(s) {', '.join(bad)} (choose from {', '.join(GROUPS)})")
        self.protocol_ = as_protocol(self.protocol)
        space = None
        if self.space is not None:
            try:
                space = SearchSpace.load(self.space)
            except UserError:
                space = None  # a space file that is not shipped: infer the layout from the archs
        if space is not None:
            self.max_layers_ = [max(space.encoder.layers), max(space.decoder.layers)]
            self.max_experts_ = [max(space.encoder.experts), max(space.decoder.experts)]
        else:
            archs = as_archs(archs)
            if not archs:
                raise UserError("no archs to fit features on")
            self.max_layers_ = [max(len(a.encoder.layers) for a in archs), max(len(a.decoder.layers) for a in archs)]
            self.max_experts_ = [max(len(la.experts) for a in archs for la in a.encoder.layers),
                                 max(len(la.experts) for a in archs for la in a.decoder.layers)]
        names: list[str] = []
        for g in self.groups:
            names += {"hat": HAT_FEATURES, "moe": MOE_FEATURES, "cost": COST_FEATURES,
                      "encoding": encoding_names(tuple(self.max_layers_), tuple(self.max_experts_))}[g]
        self.feature_names_ = names
        self.n_features_out_ = len(names)
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names_, dtype=object)

    def arrays(self, archs) -> ArchArrays:
        return arch_arrays(as_archs(archs), tuple(self.max_layers_), tuple(self.max_experts_))

    def transform(self, archs, chunk: int = 8192) -> np.ndarray:
        """Feature matrix (n, n_features); computed in chunks so temporaries stay in cache."""
        archs = as_archs(archs)
        if not archs:
            raise UserError("no archs given")
        layout = tuple(self.max_layers_), tuple(self.max_experts_)
        if len(archs) <= chunk:
            return self.transform_arrays(arch_arrays(archs, *layout))
        out = np.empty((len(archs), self.n_features_out_))
        for i in range(0, len(archs), chunk):
            out[i:i + chunk] = self.transform_arrays(arch_arrays(archs[i:i + chunk], *layout))
        return out

    def transform_arrays(self, arr: ArchArrays) -> np.ndarray:
        blocks = []
        for g in self.groups:
            if g == "hat":
                blocks.append(hat_features(arr))
            elif g == "moe":
                blocks.append(moe_features(arr))
            elif g == "cost":
                c = vector_cost(arr, self.protocol_)
                blocks.append(np.column_stack([c[k] for k in COST_FEATURES]))
            elif g == "encoding":
                blocks.append(encoding_features(arr, tuple(self.max_layers_), tuple(self.max_experts_)))
        return np.concatenate(blocks, axis=1)


def describe(features: ArchFeatures) -> dict[str, Any]:
    return {"groups": list(features.groups), "names": list(features.feature_names_),
            "protocol": features.protocol_.to_dict(), "max_layers": features.max_layers_, "max_experts": features.max_experts_}
