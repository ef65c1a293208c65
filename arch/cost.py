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
``decoder`` = the sum over t = 0 .. decoder_steps-1.

Routing: ``counts`` maps a layer key ('encoder.i' / 'decoder.i') to the token-slots each
expert received; without it every expert gets the expected share tokens*k/E (uniform).
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .arch import Arch, LayerArch
from .protocol import LatencyProtocol

FP32 = 4
Counts = Mapping[str, Sequence[float]]
PARTS = ("attention", "ffn", "router", "experts", "cross_kv", "logits")


@dataclass
class ComponentCost:
    """FLOPs and bytes of one component, split by part (see PARTS)."""

    flops_by_part: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_by_part: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def matmul(self, part: str, m: float, k: int, n: int, batch: float = 1.0) -> None:
        """Account ``batch`` products of (m x k) @ (k x n)."""
        if m <= 0:
            return
        self.flops_by_part[part] += 2.0 * batch * m * k * n
        self.bytes_by_part[part] += FP32 * batch * (m * k + k * n + m * n)

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
    return [tokens * min(top_k, n) / n] * n


def _ffn(c: ComponentCost, layer: LayerArch, dim: int, tokens: float, top_k: int, counts: Sequence[float] | None) -> None:
    if not layer.is_moe:
        c.matmul("ffn", tokens, dim, layer.experts[0])
        c.matmul("ffn", tokens, layer.experts[0], dim)
        return
    c.matmul("router", tokens, dim, len(layer.experts))
    for h, n in zip(layer.experts, expert_loads(layer, tokens, top_k, counts)):
        c.matmul("experts", n, dim, h)
        c.matmul("experts", n, h, dim)


def _attention(c: ComponentCost, q_rows: float, q_dim: int, kv_rows: float, qkv: int, heads: int, batch: float, project_kv: bool) -> None:
    """q/out projections on q_rows, optional k/v projections, and the two products per head."""
    c.matmul("attention", batch * q_rows, q_dim, qkv)
    if project_kv:
        c.matmul("attention", batch * q_rows, q_dim, 2 * qkv)
    hd = qkv // heads
    c.matmul("attention", q_rows, hd, kv_rows, batch * heads)   # scores
    c.matmul("attention", q_rows, kv_rows, hd, batch * heads)   # weights @ values
    c.matmul("attention", batch * q_rows, qkv, q_dim)


def encoder_cost(arch: Arch, batch: int = 1, src_len: int = 30, counts: Counts | None = None) -> ComponentCost:
    """Encoder stack plus every decoder layer's cross keys/values, for (batch, src_len)."""
    c = ComponentCost()
    d, qkv, tokens = arch.encoder.embed_dim, arch.qkv_dim, batch * src_len
    for i, layer in enumerate(arch.encoder.layers):
        _attention(c, src_len, d, src_len, qkv, layer.heads, batch, project_kv=True)
        _ffn(c, layer, d, tokens, arch.top_k, (counts or {}).get(f"encoder.{i}"))
    for layer in arch.decoder.layers:
        c.matmul("cross_kv", batch * src_len * layer.cross_span, d, 2 * qkv)
    return c


def decoder_step_cost(arch: Arch, past_len: int, batch: int = 5, src_len: int = 30, counts: Counts | None = None) -> ComponentCost:
    """One incremental step on ``batch`` rows (batch*beam under the protocol) with a cache of
    ``past_len`` positions, attending to ``src_len`` source positions per cross span."""
    c = ComponentCost()
    d, qkv = arch.decoder.embed_dim, arch.qkv_dim
    for i, layer in enumerate(arch.decoder.layers):
        _attention(c, 1, d, past_len + 1, qkv, layer.heads, batch, project_kv=True)
        _attention(c, 1, d, src_len * layer.cross_span, qkv, layer.cross_heads, batch, project_kv=False)
        _ffn(c, layer, d, batch, arch.top_k, (counts or {}).get(f"decoder.{i}"))
    c.matmul("logits", batch, d, arch.vocab_size)
    return c


def decoder_cost(arch: Arch, protocol: LatencyProtocol = LatencyProtocol()) -> ComponentCost:
    """All decoder steps of the protocol, cache growing from 0 (uniform routing)."""
    c = ComponentCost()
    for t in range(protocol.decoder_steps):
        c += decoder_step_cost(arch, t, protocol.decoder_batch, protocol.src_len)
    return c


@dataclass(frozen=True)
class ParamCount:
    total: int   # every weight, all experts
    active: float  # weights one token uses: router + top-k experts (expected, uniform routing)
    embedding: int


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _ffn_params(layer: LayerArch, d: int, top_k: int) -> tuple[int, float]:
    experts = [_linear(d, h) + _linear(h, d) for h in layer.experts]
    if not layer.is_moe:
        return experts[0], float(experts[0])
    router = _linear(d, len(experts), bias=False)
    k = min(top_k, len(experts))
    return router + sum(experts), router + k * sum(experts) / len(experts)


def param_count(arch: Arch) -> ParamCount:
    """Parameters of the SubTransformer built from ``arch`` (output projection tied)."""
    de, dd, q, v = arch.encoder.embed_dim, arch.decoder.embed_dim, arch.qkv_dim, arch.vocab_size
    emb = v * de + v * dd
    total, active = emb + 2 * de + 2 * dd, float(emb + 2 * de + 2 * dd)
    for layer in arch.encoder.layers:
        fixed = 3 * _linear(de, q) + _linear(q, de) + 4 * de
        ffn_total, ffn_active = _ffn_params(layer, de, arch.top_k)
        total, active = total + fixed + ffn_total, active + fixed + ffn_active
    for layer in arch.decoder.layers:
        fixed = 3 * _linear(dd, q) + _linear(q, dd) + _linear(dd, q) + 2 * _linear(de, q) + _linear(q, dd) + 6 * dd
        ffn_total, ffn_active = _ffn_params(layer, dd, arch.top_k)
        total, active = total + fixed + ffn_total, active + fixed + ffn_active
    return ParamCount(total=total, active=active, embedding=emb)


@dataclass(frozen=True)
class ProtocolCost:
    """Everything the cost model says about one arch under one protocol."""

    params: ParamCount
    encoder: ComponentCost
    decoder: ComponentCost

    @property
    def total_flops(self) -> float:
        return self.encoder.flops + self.decoder.flops

    @property
    def total_bytes(self) -> float:
        return self.encoder.bytes + self.decoder.bytes

    def summary(self) -> dict[str, float]:
        """A flat dict: params, FLOPs and bytes per component and per part."""
        out: dict[str, float] = {
            "params_total": self.params.total,
            "params_active": self.params.active,
            "params_embedding": self.params.embedding,
            "flops_total": self.total_flops,
            "bytes_total": self.total_bytes,
        }
        for name, comp in (("encoder", self.encoder), ("decoder", self.decoder)):
            out[f"flops_{name}"] = comp.flops
            out[f"bytes_{name}"] = comp.bytes
            for part in PARTS:
                out[f"flops_{name}_{part}"] = comp.flops_by_part.get(part, 0.0)
                out[f"bytes_{name}_{part}"] = comp.bytes_by_part.get(part, 0.0)
        return out


@lru_cache(maxsize=1 << 16)
def protocol_cost(arch: Arch, protocol: LatencyProtocol = LatencyProtocol()) -> ProtocolCost:
    """Params plus encoder and decoder cost under ``protocol`` with uniform routing (memoised:
    search and feature extraction ask for the same archs many times; treat the result as
    read-only)."""
    return ProtocolCost(
        params=param_count(arch),
        encoder=encoder_cost(arch, protocol.batch, protocol.src_len),
        decoder=decoder_cost(arch, protocol),
    )
