"""Analytical cost model: parameters, FLOPs and bytes moved, per component and part.

FLOPs here are matmul FLOPs (2*M*N*K per matrix product), the quantity
``torch.utils.flop_counter.FlopCounterMode`` reports, so the two can be compared exactly;
norms, softmax and element-wise work are not counted (a few % of a Transformer's work).
Bytes are fp32 bytes read and written by those products: both operands plus the result,
which for a decoder step includes reading the whole KV cache. An expert that receives no
token costs nothing (the MoE layer skips it).

Components follow the latency protocol: ``encoder`` = encoder stack on (batch, src_len)
plus each decoder layer's cross-attention keys/values (computed once per sentence);
``decoder_step(t)`` = one step on batch*beam rows with a self-attention cache of length t;
``decoder`` = the sum over t = 0 .. decoder_steps-1. Every step's cost is affine in t, so
that sum is decoder_steps times the step at the mean cache length (:func:`mean_past_len`).

A decoder-only language model (``LMArch`` under ``LMProtocol``): ``prefill`` = every layer on
(batch, prompt_len) with causal self-attention (the masked scores are computed, so they are
counted: the full prompt_len x prompt_len square) and the last position's logits only;
``decode_step(t)`` = one token per row with a cache of t positions, with logits; ``decode`` =
the sum over t = prompt_len .. prompt_len+decode_steps-1 (again one step at the mean length).

Routing: ``counts`` maps a layer key ('encoder.i' / 'decoder.i') to the token-slots each
expert received; without it every expert gets the expected share tokens*k/E (uniform).

Every formula is written once, in the helpers below (a cost is a ``(flops, bytes)`` pair; a
parameter count a number): they take Python numbers or numpy arrays alike. The per-arch path
(:func:`encoder_cost`, :func:`decoder_step_cost`, :func:`param_count`, :func:`protocol_cost`)
calls them layer by layer; ``moenas.predictor.features.vector_cost`` calls them once on arrays
over many archs and layers (its padding of absent layers and experts is its own business).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .arch import Arch, LayerArch, LMArch
from .errors import UserError
from .family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry
from .protocol import LatencyProtocol, LMProtocol, Protocol, default_protocol

FP32 = 4
Counts = Mapping[str, Sequence[float]]
PARTS = ("attention", "ffn", "router", "experts", "cross_kv", "logits")
Num = Any  # a Python number or a numpy array (helpers broadcast)
Cost = tuple  # (flops, bytes), each a Num


# ---- the formulas: FLOPs and bytes ---------------------------------------------------------------


def matmul(m: Num, k: Num, n: Num, batch: Num = 1.0) -> Cost:
    """``batch`` products of (m x k) @ (k x n); one with no rows (m = 0) moves nothing.
    (m x k) @ (k x n) and (m x n) @ (n x k) cost the same."""
    # numpy evaluates left to right: the factors that are most often plain numbers come first,
    # so that array callers pay for as few whole-array operations as possible
    flops = 2.0 * m * n * k * batch
    moved = (k * (m + n) + m * n) * (FP32 * batch)  # elements of (m x k), (k x n) and (m x n)
    if np.ndim(m) == 0:
        return flops, (moved if m > 0 else 0 * moved)
    return flops, moved * (m > 0)


def scale(cost: Cost, factor: Num) -> Cost:
    """A (flops, bytes) pair ``factor`` times."""
    return factor * cost[0], factor * cost[1]


def add(*costs: Cost) -> Cost:
    """Sum of (flops, bytes) pairs."""
    flops, moved = costs[0]
    for f, b in costs[1:]:
        flops, moved = flops + f, moved + b
    return flops, moved


def attention(q_rows: Num, q_dim: Num, kv_rows: Num, qkv: Num, heads: Num, batch: Num, project_kv: bool) -> Cost:
    """q/out projections on q_rows, optional k/v projections, and the two products per head."""
    rows, head_dim = batch * q_rows, qkv // heads
    projections = [matmul(rows, q_dim, qkv), matmul(rows, qkv, q_dim)]  # queries, output
    if project_kv:
        projections.append(matmul(rows, q_dim, 2 * qkv))  # keys and values
    # per head: scores (q x head_dim) @ (head_dim x kv), and weights @ values, the same shapes transposed
    per_head = matmul(q_rows, head_dim, kv_rows, 2 * batch * heads)
    return add(*projections, per_head)


def encoder_attention(heads: Num, dim: Num, qkv: Num, batch: Num, src_len: Num) -> Cost:
    """Self-attention of one encoder layer over the source."""
    return attention(src_len, dim, src_len, qkv, heads, batch, project_kv=True)


def decoder_self_attention(heads: Num, dim: Num, qkv: Num, batch: Num, past_len: Num) -> Cost:
    """One decoder step's self-attention: one new row attending to the cache plus itself."""
    return attention(1, dim, past_len + 1, qkv, heads, batch, project_kv=True)


def decoder_cross_attention(cross_heads: Num, cross_span: Num, dim: Num, qkv: Num, batch: Num, src_len: Num) -> Cost:
    """One decoder step's cross-attention over ``cross_span`` encoder outputs of ``src_len``
    positions each; their keys/values are :func:`cross_kv`, paid once per sentence."""
    return attention(1, dim, src_len * cross_span, qkv, cross_heads, batch, project_kv=False)


def cross_kv(cross_span: Num, dim: Num, qkv: Num, batch: Num, src_len: Num) -> Cost:
    """Keys and values of one decoder layer's cross-attention, from the encoder outputs."""
    return matmul(batch * src_len * cross_span, dim, 2 * qkv)


def ffn(rows: Num, dim: Num, hidden: Num) -> Cost:
    """A two-layer FFN (dim -> hidden -> dim) on ``rows`` rows: a dense FFN, or one expert on
    the token-slots routed to it."""
    return matmul(rows, dim, hidden, 2)  # up, and down: the same shapes transposed


def router(tokens: Num, dim: Num, n_experts: Num) -> Cost:
    """The linear router of an MoE layer."""
    return matmul(tokens, dim, n_experts)


def uniform_loads(tokens: Num, top_k: Num, n_experts: Num) -> Num:
    """Token-slots per expert when routing is uniform: tokens * min(k, E) / E."""
    return tokens * np.minimum(top_k, n_experts) / n_experts


def uniform_experts(tokens: Num, top_k: Num, dim: Num, n_experts: Num, hidden_total: Num) -> Cost:
    """All experts of one MoE layer under uniform routing, their hidden sizes summing to
    ``hidden_total``: an expert's cost is affine in its hidden size and every expert gets the
    same load, so the sum is E times one expert of the mean size."""
    return scale(ffn(uniform_loads(tokens, top_k, n_experts), dim, hidden_total / n_experts), n_experts)


def logits(dim: Num, vocab: Num, batch: Num) -> Cost:
    """Output projection of one decoder step on ``batch`` rows."""
    return matmul(batch, dim, vocab)


def mean_past_len(steps: Num) -> Num:
    """Mean cache length over decoder steps t = 0 .. steps-1: a step's cost is affine in its
    cache length, so the sum over the steps is ``steps`` x the step at this length."""
    return (steps - 1) / 2


# ---- the formulas: parameters --------------------------------------------------------------------


def linear_params(i: Num, o: Num, bias: bool = True) -> Num:
    return i * o + (o if bias else 0)


def token_embedding_params(vocab: Num, dim: Num) -> Num:
    """One token embedding table."""
    return vocab * dim


def embedding_params(vocab: Num, enc_dim: Num, dec_dim: Num) -> Num:
    """Source and target embeddings (the output projection is tied to the target one)."""
    return token_embedding_params(vocab, enc_dim) + token_embedding_params(vocab, dec_dim)


def final_norm_params(dim: Num) -> Num:
    """The layer norm after a stack."""
    return 2 * dim


def encoder_layer_params(dim: Num, qkv: Num) -> Num:
    """One encoder layer without its FFN: q/k/v/out projections and two layer norms (a
    decoder-only model's layer is the same block)."""
    return 3 * linear_params(dim, qkv) + linear_params(qkv, dim) + 4 * dim


def decoder_layer_params(dim: Num, enc_dim: Num, qkv: Num) -> Num:
    """One decoder layer without its FFN: self-attention, cross-attention (queries from the
    decoder, keys/values from the encoder's width) and three layer norms."""
    self_attn = 3 * linear_params(dim, qkv) + linear_params(qkv, dim)
    cross_attn = linear_params(dim, qkv) + 2 * linear_params(enc_dim, qkv) + linear_params(qkv, dim)
    return self_attn + cross_attn + 6 * dim


def ffn_params(dim: Num, top_k: Num, n_experts: Num, hidden_total: Num) -> tuple[Num, Num]:
    """(total, active) weights of one layer's FFN: a dense FFN when n_experts == 1, else an MoE
    layer with a bias-free router; active = router + top-k experts (uniform routing)."""
    experts = 2 * dim * hidden_total + hidden_total + n_experts * dim  # sum of linear(d, h) + linear(h, d)
    router_w = (n_experts > 1) * linear_params(dim, n_experts, bias=False)
    return router_w + experts, router_w + np.minimum(top_k, n_experts) * experts / n_experts


# ---- one arch, layer by layer --------------------------------------------------------------------


@dataclass
class ComponentCost:
    """FLOPs and bytes of one component, split by part (see PARTS)."""

    flops_by_part: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_by_part: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, part: str, cost: Cost) -> None:
        """Account a (flops, bytes) pair to ``part``."""
        self.flops_by_part[part] += float(cost[0])
        self.bytes_by_part[part] += float(cost[1])

    def scaled(self, factor: float) -> "ComponentCost":
        """This cost ``factor`` times (e.g. one decoder step -> all steps)."""
        c = ComponentCost()
        for p in self.flops_by_part:
            c.add(p, scale((self.flops_by_part[p], self.bytes_by_part[p]), factor))
        return c

    @property
    def flops(self) -> float:
        return float(sum(self.flops_by_part.values()))

    @property
    def bytes(self) -> float:
        return float(sum(self.bytes_by_part.values()))

    def __iadd__(self, other: "ComponentCost") -> "ComponentCost":
        for p, v in other.flops_by_part.items():
            self.flops_by_part[p] += v
        for p, v in other.bytes_by_part.items():
            self.bytes_by_part[p] += v
        return self


def expert_loads(layer: LayerArch, tokens: float, top_k: int, counts: Sequence[float] | None = None) -> list[float]:
    """Token-slots per expert: the given counts, or the uniform expectation tokens*k/E."""
    n = len(layer.experts)
    if counts is not None:
        if len(counts) != n:
            raise ValueError(f"got {len(counts)} expert counts for a layer with {n} experts")
        return [float(c) for c in counts]
    return [float(uniform_loads(tokens, top_k, n))] * n


def _add_ffn(
    c: ComponentCost, layer: LayerArch, dim: int, tokens: float, top_k: int, counts: Sequence[float] | None
) -> None:
    if not layer.is_moe:
        c.add("ffn", ffn(tokens, dim, layer.experts[0]))
        return
    c.add("router", router(tokens, dim, len(layer.experts)))
    for hidden, load in zip(layer.experts, expert_loads(layer, tokens, top_k, counts)):
        c.add("experts", ffn(load, dim, hidden))


def encoder_cost(arch: Arch, batch: int = 1, src_len: int = 30, counts: Counts | None = None) -> ComponentCost:
    """Encoder stack plus every decoder layer's cross keys/values, for (batch, src_len)."""
    c = ComponentCost()
    dim, qkv = arch.encoder.embed_dim, arch.qkv_dim
    for i, layer in enumerate(arch.encoder.layers):
        c.add("attention", encoder_attention(layer.heads, dim, qkv, batch, src_len))
        _add_ffn(c, layer, dim, batch * src_len, arch.top_k, (counts or {}).get(f"encoder.{i}"))
    for layer in arch.decoder.layers:
        c.add("cross_kv", cross_kv(layer.cross_span, dim, qkv, batch, src_len))
    return c


def decoder_step_cost(
    arch: Arch, past_len: float, batch: int = 5, src_len: int = 30, counts: Counts | None = None
) -> ComponentCost:
    """One incremental step on ``batch`` rows (batch*beam under the protocol) with a cache of
    ``past_len`` positions, attending to ``src_len`` source positions per cross span
    (``past_len`` may be a mean, see :func:`mean_past_len`)."""
    c = ComponentCost()
    dim, qkv = arch.decoder.embed_dim, arch.qkv_dim
    for i, layer in enumerate(arch.decoder.layers):
        c.add(
            "attention",
            add(
                decoder_self_attention(layer.heads, dim, qkv, batch, past_len),
                decoder_cross_attention(layer.cross_heads, layer.cross_span, dim, qkv, batch, src_len),
            ),
        )
        _add_ffn(c, layer, dim, batch, arch.top_k, (counts or {}).get(f"decoder.{i}"))
    c.add("logits", logits(dim, arch.vocab_size, batch))
    return c


def decoder_cost(arch: Arch, protocol: LatencyProtocol = LatencyProtocol()) -> ComponentCost:
    """All decoder steps of the protocol, cache growing from 0 (uniform routing)."""
    steps = protocol.decoder_steps
    step = decoder_step_cost(arch, mean_past_len(steps), protocol.decoder_batch, protocol.src_len)
    return step.scaled(steps)


def lm_prefill_cost(arch: LMArch, batch: int = 1, prompt_len: int = 128, counts: Counts | None = None) -> ComponentCost:
    """Every layer on (batch, prompt_len) prompt tokens in one causal pass, then the logits of
    the last position (what generation needs next)."""
    c = ComponentCost()
    dim, qkv = arch.decoder.embed_dim, arch.qkv_dim
    for i, layer in enumerate(arch.decoder.layers):
        # causal, but the masked half of the scores is computed: the same products as the encoder's
        c.add("attention", encoder_attention(layer.heads, dim, qkv, batch, prompt_len))
        _add_ffn(c, layer, dim, batch * prompt_len, arch.top_k, (counts or {}).get(f"decoder.{i}"))
    c.add("logits", logits(dim, arch.vocab_size, batch))
    return c


def lm_step_cost(arch: LMArch, past_len: float, batch: int = 1, counts: Counts | None = None) -> ComponentCost:
    """One decode step: one new token per row attending to a cache of ``past_len`` positions
    plus itself, and its logits (``past_len`` may be a mean, see :func:`lm_decode_cost`)."""
    c = ComponentCost()
    dim, qkv = arch.decoder.embed_dim, arch.qkv_dim
    for i, layer in enumerate(arch.decoder.layers):
        c.add("attention", decoder_self_attention(layer.heads, dim, qkv, batch, past_len))
        _add_ffn(c, layer, dim, batch, arch.top_k, (counts or {}).get(f"decoder.{i}"))
    c.add("logits", logits(dim, arch.vocab_size, batch))
    return c


def lm_decode_cost(arch: LMArch, protocol: LMProtocol = LMProtocol()) -> ComponentCost:
    """All decode steps, the cache growing from prompt_len (uniform routing)."""
    steps = protocol.decode_steps
    return lm_step_cost(arch, protocol.prompt_len + mean_past_len(steps), protocol.batch).scaled(steps)


@dataclass(frozen=True)
class ParamCount:
    total: int  # every weight, all experts
    active: float  # weights one token uses: router + top-k experts (expected, uniform routing)
    embedding: int


def param_count(arch: Arch | LMArch) -> ParamCount:
    """Parameters of the model built from ``arch`` (output projection tied), by the formula
    :data:`PARAM_COUNTS` registers for its family."""
    return PARAM_COUNTS.for_family(arch.family)(arch)


def encoder_decoder_param_count(arch: Arch) -> ParamCount:
    """Parameters of the SubTransformer built from ``arch``: embeddings (output projection
    tied), both stacks' layers, both final norms."""
    enc_dim, dec_dim, qkv = arch.encoder.embed_dim, arch.decoder.embed_dim, arch.qkv_dim
    emb = embedding_params(arch.vocab_size, enc_dim, dec_dim)
    total = active = emb + final_norm_params(enc_dim) + final_norm_params(dec_dim)
    for stack, dim, fixed in (
        (arch.encoder, enc_dim, encoder_layer_params(enc_dim, qkv)),
        (arch.decoder, dec_dim, decoder_layer_params(dec_dim, enc_dim, qkv)),
    ):
        for layer in stack.layers:
            ffn_total, ffn_active = ffn_params(dim, arch.top_k, len(layer.experts), sum(layer.experts))
            total, active = total + fixed + ffn_total, active + fixed + ffn_active
    return ParamCount(total=int(total), active=float(active), embedding=int(emb))


def lm_param_count(arch: LMArch) -> ParamCount:
    """Parameters of the CausalLM built from ``arch``: embedding (tied output), layers, final norm."""
    dim, qkv = arch.decoder.embed_dim, arch.qkv_dim
    emb = token_embedding_params(arch.vocab_size, dim)
    total = active = emb + final_norm_params(dim)
    for layer in arch.decoder.layers:
        ffn_total, ffn_active = ffn_params(dim, arch.top_k, len(layer.experts), sum(layer.experts))
        fixed = encoder_layer_params(dim, qkv)
        total, active = total + fixed + ffn_total, active + fixed + ffn_active
    return ParamCount(total=int(total), active=float(active), embedding=int(emb))


# family name -> arch -> the parameters of the model built from it
PARAM_COUNTS: FamilyRegistry[Callable[[Any], ParamCount]] = FamilyRegistry(
    "parameter count", {ENCODER_DECODER: encoder_decoder_param_count, DECODER_ONLY: lm_param_count}
)


@dataclass(frozen=True)
class ProtocolCost:
    """Everything the cost model says about one arch under one protocol."""

    params: ParamCount
    # one entry per timed component of the protocol's family, in its order
    components: dict[str, ComponentCost]

    @property
    def total_flops(self) -> float:
        return sum(c.flops for c in self.components.values())

    @property
    def total_bytes(self) -> float:
        return sum(c.bytes for c in self.components.values())

    @property
    def ffn_share(self) -> float:
        """The FFN's share of the protocol's FLOPs (dense FFN, experts and router, both stacks):
        what experts can save at most, so an MoE arch is at most 1 / (1 - share) times faster
        than a dense arch of equal attention and embeddings (Amdahl's bound)."""
        ffn = sum(c.flops_by_part.get(p, 0.0) for c in self.components.values() for p in ("ffn", "experts", "router"))
        return ffn / self.total_flops if self.total_flops else 0.0

    def summary(self) -> dict[str, float]:
        """A flat dict: params, FLOPs and bytes per component and per part."""
        out: dict[str, float] = {
            "params_total": self.params.total,
            "params_active": self.params.active,
            "params_embedding": self.params.embedding,
            "flops_total": self.total_flops,
            "bytes_total": self.total_bytes,
        }
        for name, comp in self.components.items():
            out[f"flops_{name}"] = comp.flops
            out[f"bytes_{name}"] = comp.bytes
            for part in PARTS:
                out[f"flops_{name}_{part}"] = comp.flops_by_part.get(part, 0.0)
                out[f"bytes_{name}_{part}"] = comp.bytes_by_part.get(part, 0.0)
        return out


def _encoder_decoder_components(arch: Arch, protocol: LatencyProtocol) -> dict[str, ComponentCost]:
    return {"encoder": encoder_cost(arch, protocol.batch, protocol.src_len), "decoder": decoder_cost(arch, protocol)}


def _decoder_only_components(arch: LMArch, protocol: LMProtocol) -> dict[str, ComponentCost]:
    return {
        "prefill": lm_prefill_cost(arch, protocol.batch, protocol.prompt_len),
        "decode": lm_decode_cost(arch, protocol),
    }


# family name -> (arch, protocol) -> the cost of each of the family's components, in its order
COMPONENT_COSTS: FamilyRegistry[Callable[[Any, Any], dict[str, ComponentCost]]] = FamilyRegistry(
    "component cost model", {ENCODER_DECODER: _encoder_decoder_components, DECODER_ONLY: _decoder_only_components}
)


@lru_cache(maxsize=1 << 16)
def protocol_cost(arch: Arch | LMArch, protocol: Protocol | None = None) -> ProtocolCost:
    """Params plus the cost of each component of the protocol's family (encoder and decoder;
    prefill and decode) under ``protocol`` (None: the default of the arch's family) with uniform
    routing (memoised: search and feature extraction ask for the same archs many times; treat
    the result as read-only)."""
    protocol = default_protocol(arch) if protocol is None else protocol
    if protocol.family is not arch.family:
        raise UserError(f"arch {arch.arch_id} is {arch.family.name}; a {protocol.family.name} protocol cannot time it")
    components = COMPONENT_COSTS.for_family(arch.family)(arch, protocol)
    return ProtocolCost(params=param_count(arch), components=components)
