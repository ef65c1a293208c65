"""Features for latency prediction, as a scikit-learn transformer over lists of Arch.

Everything is computed in numpy over many archs at once: one short pure-Python pass pulls each
arch's genes into padded arrays (:func:`arch_arrays`), and the analytical cost model's formulas
(``moenas.arch.cost``: matmul FLOPs and fp32 bytes per component and part, parameters) are then
evaluated as array expressions, summed in closed form over the decoder steps. The results equal
``protocol_cost(arch, protocol).summary()`` (tested to 1e-9 relative), at ~100x the speed.

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

The protocol is a parameter (a dict with batch, src_len, decoder_steps, beam; the profile
dataset's protocol dict is accepted as is). Normalisation is *not* done here: the models keep
their scalers inside their fitted pipelines.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.cost import PARTS

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
DEFAULT_PROTOCOL = {"batch": 1, "src_len": 30, "decoder_steps": 30, "beam": 5}
FP32 = 4.0


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


def protocol_dict(protocol: Any) -> dict[str, int]:
    """batch/src_len/decoder_steps/beam from a dict, a protocol object or None (HAT defaults)."""
    if protocol is None:
        return dict(DEFAULT_PROTOCOL)
    if not isinstance(protocol, dict):
        protocol = protocol.to_dict()
    out = {}
    for k, v in DEFAULT_PROTOCOL.items():
        x = protocol.get(k, v)
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
            raise UserError(f"protocol {k} must be a positive integer, got {x!r}")
        out[k] = int(x)
    return out


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


# ---- the cost model, vectorised -----------------------------------------------------------------


def _mm_bytes(m, k, n, batch=1.0):
    return FP32 * batch * (m * k + k * n + m * n)


def vector_cost(arr: ArchArrays, protocol: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """``ProtocolCost.summary()`` for every arch at once (uniform routing), as arrays of length n.

    Mirrors ``moenas.arch.cost`` formula by formula; the decoder's sum over steps t uses
    sum_{t<T} (t+1) = T(T+1)/2 since every step cost is affine in the cache length t+1."""
    p = protocol_dict(protocol)
    B, S, T, Bd = p["batch"], p["src_len"], p["decoder_steps"], p["batch"] * p["beam"]
    SL = T * (T + 1) / 2.0
    top_k, q, V, de, dd = (arr.glob[:, i] for i in range(5))
    out: dict[str, np.ndarray] = {}
    zeros = np.zeros(arr.n)

    def ffn(sizes: np.ndarray, d: np.ndarray, tok: float, mask: np.ndarray):
        """(ffn, router, experts) FLOPs and bytes summed over layers; sizes (n, L, X)."""
        E = (sizes > 0).sum(-1)                       # experts per layer (0 for absent layers)
        SH = sizes.sum(-1)
        dense = mask & (E == 1)
        moe = mask & (E > 1)
        d2 = d[:, None]
        f_ffn = np.where(dense, 4.0 * tok * d2 * SH, 0.0).sum(1)
        b_ffn = np.where(dense, 8.0 * (tok * d2 + d2 * SH + tok * SH), 0.0).sum(1)
        Es = np.maximum(E, 1)
        f_r = np.where(moe, 2.0 * tok * d2 * E, 0.0).sum(1)
        b_r = np.where(moe, _mm_bytes(tok, d2, E), 0.0).sum(1)
        load = tok * np.minimum(top_k[:, None], Es) / Es
        f_x = np.where(moe, 4.0 * load * d2 * SH, 0.0).sum(1)
        b_x = np.where(moe, 8.0 * (Es * load * d2 + d2 * SH + load * SH), 0.0).sum(1)
        return (f_ffn, b_ffn), (f_r, b_r), (f_x, b_x)

    # encoder stack on (B, S)
    eh = arr.enc[:, :, 0]
    emask = eh > 0
    ehd = np.floor_divide(q[:, None], np.maximum(eh, 1))
    d2, q2 = de[:, None], q[:, None]
    f_att = np.where(emask, B * S * 8.0 * d2 * q2 + 4.0 * B * eh * ehd * S * S, 0.0).sum(1)
    b_att = np.where(emask, FP32 * (3 * B * S * d2 + 4 * d2 * q2 + 4 * B * S * q2)
                     + FP32 * B * eh * (4.0 * S * ehd + 2.0 * S * S), 0.0).sum(1)
    (f_ffn, b_ffn), (f_r, b_r), (f_x, b_x) = ffn(arr.enc[:, :, 1:], de, float(B * S), emask)
    # cross keys/values of every decoder layer (computed once per sentence, counted in the encoder)
    span = arr.dec[:, :, 2]
    dmask = arr.dec[:, :, 0] > 0
    m = B * S * span
    f_ckv = np.where(dmask, 2.0 * m * d2 * 2 * q2, 0.0).sum(1)
    b_ckv = np.where(dmask, _mm_bytes(m, d2, 2 * q2), 0.0).sum(1)
    enc_parts = {"attention": (f_att, b_att), "ffn": (f_ffn, b_ffn), "router": (f_r, b_r),
                 "experts": (f_x, b_x), "cross_kv": (f_ckv, b_ckv), "logits": (zeros, zeros)}

    # decoder: T steps on Bd rows, self-attention cache length t+1, cross over S*span
    dh, ch = arr.dec[:, :, 0], arr.dec[:, :, 1]
    dhd = np.floor_divide(q[:, None], np.maximum(dh, 1))
    chd = np.floor_divide(q[:, None], np.maximum(ch, 1))
    d2 = dd[:, None]
    Lc = S * span
    # self attention: q, kv (2q), out projections; scores + weights@values summed over steps
    f_self = T * 8.0 * Bd * d2 * q2 + 4.0 * Bd * dh * dhd * SL
    b_self = T * FP32 * (3 * Bd * d2 + 4 * d2 * q2 + 4 * Bd * q2) + FP32 * Bd * dh * (2 * dhd * T + 2 * (dhd + 1) * SL)
    # cross attention: q and out projections only; keys/values come from the encoder side
    f_cross = T * (4.0 * Bd * d2 * q2 + 4.0 * Bd * ch * chd * Lc)
    b_cross = T * (FP32 * (2 * Bd * d2 + 2 * d2 * q2 + 2 * Bd * q2) + FP32 * Bd * ch * (2 * chd + 2 * chd * Lc + 2 * Lc))
    f_att = np.where(dmask, f_self + f_cross, 0.0).sum(1)
    b_att = np.where(dmask, b_self + b_cross, 0.0).sum(1)
    (f_ffn, b_ffn), (f_r, b_r), (f_x, b_x) = ffn(arr.dec[:, :, 3:], dd, float(Bd), dmask)
    f_log = T * 2.0 * Bd * dd * V
    b_log = T * _mm_bytes(float(Bd), dd, V)
    dec_parts = {"attention": (f_att, b_att), "ffn": (T * f_ffn, T * b_ffn), "router": (T * f_r, T * b_r),
                 "experts": (T * f_x, T * b_x), "cross_kv": (zeros, zeros), "logits": (f_log, b_log)}

    # parameters (arch.cost.param_count)
    def ffn_params(sizes, d, mask):
        E = (sizes > 0).sum(-1)
        SH = sizes.sum(-1)
        d2 = d[:, None]
        experts = 2 * d2 * SH + SH + E * d2
        router = np.where(E > 1, d2 * E, 0)
        k = np.minimum(top_k[:, None], np.maximum(E, 1))
        active = router + k * experts / np.maximum(E, 1)
        return np.where(mask, router + experts, 0).sum(1), np.where(mask, active, 0).sum(1)

    emb = V * de + V * dd
    base = emb + 2 * de + 2 * dd
    ne, nd = emask.sum(1), dmask.sum(1)
    fixed_e = 3 * (de * q + q) + (q * de + de) + 4 * de
    fixed_d = 3 * (dd * q + q) + (q * dd + dd) + (dd * q + q) + 2 * (de * q + q) + (q * dd + dd) + 6 * dd
    te, ae = ffn_params(arr.enc[:, :, 1:], de, emask)
    td, ad = ffn_params(arr.dec[:, :, 3:], dd, dmask)
    out["params_total"] = base + ne * fixed_e + nd * fixed_d + te + td
    out["params_active"] = base + ne * fixed_e + nd * fixed_d + ae + ad
    out["params_embedding"] = emb
    for name, parts in (("encoder", enc_parts), ("decoder", dec_parts)):
        out[f"flops_{name}"] = sum(v[0] for v in parts.values())
        out[f"bytes_{name}"] = sum(v[1] for v in parts.values())
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

    protocol: dict with batch, src_len, decoder_steps, beam (None: HAT's 1/30/30/5).
    space: a shipped space name or None; fixes the ``encoding`` layout (max layers/experts).
    groups: which feature groups, in order.
    """

    def __init__(self, protocol: dict | None = None, space: str | None = None, groups: Sequence[str] = GROUPS):
        self.protocol = protocol
        self.space = space
        self.groups = groups

    def fit(self, archs, y=None):
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise UserError(f"unknown feature group(s) {', '.join(bad)} (choose from {', '.join(GROUPS)})")
        self.protocol_ = protocol_dict(self.protocol)
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
            "protocol": features.protocol_, "max_layers": features.max_layers_, "max_experts": features.max_experts_}


def dumps_protocol(p: dict) -> str:
    return json.dumps(p, sort_keys=True)
