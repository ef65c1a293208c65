"""The standalone sub-Transformer built from an Arch (encoder-decoder, pre-norm, MoE FFNs).

Shapes: B batch, S source length, T target length, D embed width (encoder De, decoder Dd),
Q = qkv_dim, H heads, V vocabulary. Token ids follow :data:`SPECIAL_IDS`.

Three entry points matter beyond training's ``forward``:
  * ``encode(src)`` -> the last K encoder layers' outputs, K = the largest decoder cross span;
  * ``cross_kv(states)`` -> each decoder layer's cross-attention keys/values, computed once
    per sentence (fairseq caches them the same way);
  * ``step(tokens, cache, cross)`` -> one incremental decoder step with a self-attention KV cache.
These are what ONNX export and latency profiling time (encoder = encode + cross_kv).

The pieces a decoder-only language model (``arch/lm_model.py``) builds from are shared from
here: :class:`Attention`, :class:`EncoderLayer` (a pre-norm self-attention + FFN block; with a
causal bias and a KV cache it is a decoder-only layer), :func:`embed_tokens`,
:func:`causal_bias`, :func:`tied_logits`, :class:`MoEStats` and :func:`seeded`.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Arch, LayerArch, LMArch
from .cost import param_count
from .errors import UserError
from .moe import MoELayer, make_ffn

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_IDS = {"pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK}
NEG_INF = -1e9  # finite, so fully padded rows stay NaN-free (also in ONNX)

KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: (B, H, L, Q/H) each


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position embeddings (fairseq/Vaswani): positions (L,) -> (L, dim)."""
    half = dim // 2
    freq = torch.exp(
        torch.arange(half, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / max(half - 1, 1))
    )
    angles = positions.to(torch.float32).unsqueeze(1) * freq.unsqueeze(0)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


def embed_tokens(
    emb: nn.Embedding, tokens: torch.Tensor, drop: nn.Module, start: int | torch.SymInt = 0
) -> torch.Tensor:
    """tokens (B, L) at positions start .. start+L-1 -> (B, L, D): the embedding scaled by
    sqrt(D) plus sinusoid positions (fairseq), then dropout."""
    pos = torch.arange(tokens.shape[1], device=tokens.device) + start
    return drop(emb(tokens) * math.sqrt(emb.embedding_dim) + sinusoid(pos, emb.embedding_dim))


def causal_bias(q_len: int, past_len: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """(q_len, past_len + q_len) additive mask: query i (at position past_len + i) sees the
    keys at positions <= its own, NEG_INF above."""
    return torch.full((q_len, past_len + q_len), NEG_INF, device=device).triu(past_len + 1)


def tied_logits(norm: nn.Module, emb: nn.Embedding, x: torch.Tensor) -> torch.Tensor:
    """Output projection tied to the embedding, after the final norm: (..., D) -> (..., V)."""
    return norm(x) @ emb.weight.t()


class Attention(nn.Module):
    """Multi-head attention whose queries (width q_dim) and keys/values (width kv_dim) may differ."""

    def __init__(self, q_dim: int, kv_dim: int, qkv_dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, qkv_dim // heads
        self.q_proj = nn.Linear(q_dim, qkv_dim)
        self.k_proj = nn.Linear(kv_dim, qkv_dim)
        self.v_proj = nn.Linear(kv_dim, qkv_dim)
        self.out_proj = nn.Linear(qkv_dim, q_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, Q) -> (B, H, L, Q/H)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def kv(self, mem: torch.Tensor) -> KV:
        return self._split(self.k_proj(mem)), self._split(self.v_proj(mem))

    def self_attend(
        self, h: torch.Tensor, past: KV | None = None, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KV]:
        """h (B, L, D) attends to its own keys/values, appended to ``past`` (B, H, t, Q/H) when
        given -> (output (B, L, D), keys/values of t + L positions: the grown cache)."""
        k, v = self.kv(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        return self.attend(h, k, v, bias), (k, v)

    def attend(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, Lq, q_dim) attends to k, v (B, H, Lk, Q/H); bias broadcasts to (B, H, Lq, Lk)."""
        q = self._split(self.q_proj(x)) * self.head_dim**-0.5
        scores = q @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias
        out = F.softmax(scores, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and FFN: an encoder layer, and (causal bias, KV cache, through
    :meth:`block`) a decoder-only language model's layer."""

    def __init__(self, dim: int, layer: LayerArch, qkv_dim: int, top_k: int, dropout: float, moe_backend: str):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, dim, qkv_dim, layer.heads)
        self.ffn = make_ffn(dim, layer.experts, top_k, moe_backend)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.block(x, None, bias)[0]

    def block(self, x: torch.Tensor, past: KV | None, bias: torch.Tensor | None) -> tuple[torch.Tensor, KV]:
        """x (B, L, D) -> (B, L, D) and this layer's keys/values (``past`` grown by L)."""
        h = self.norm1(x)
        out, kv = self.attn.self_attend(h, past, bias)
        x = x + self.drop(out)
        return x + self.drop(self.ffn(self.norm2(x))), kv


class DecoderLayer(nn.Module):
    def __init__(
        self, dim: int, enc_dim: int, layer: LayerArch, qkv_dim: int, top_k: int, dropout: float, moe_backend: str
    ):
        super().__init__()
        self.cross_span = layer.cross_span or 1
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, dim, qkv_dim, layer.heads)
        self.cross_attn = Attention(dim, enc_dim, qkv_dim, layer.cross_heads or layer.heads)
        self.ffn = make_ffn(dim, layer.experts, top_k, moe_backend)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cross: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
        past: KV | None = None,
        self_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KV]:
        """x (B, L, D). With ``past`` the new keys/values are appended to it (incremental step)."""
        h = self.norm1(x)
        out, kv = self.self_attn.self_attend(h, past, self_bias)
        x = x + self.drop(out)
        x = x + self.drop(self.cross_attn.attend(self.norm2(x), *cross))
        return x + self.drop(self.ffn(self.norm3(x))), kv


class MoEStats:
    """What a model with MoE layers reports after a forward; its layers are named by
    ``_stacks()``: (stack name, layers with an ``ffn``) pairs."""

    def _stacks(self) -> Iterable[tuple[str, nn.ModuleList]]:
        raise NotImplementedError

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE layers' load-balancing losses from the last forward (0 if dense)."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def moe_layers(self) -> list[MoELayer]:
        return [m for m in self.modules() if isinstance(m, MoELayer)]

    def expert_counts(self) -> dict[str, list[int]]:
        """Token-slots per expert in the last forward, keyed 'encoder.i' / 'decoder.i'."""
        out = {}
        for name, layers in self._stacks():
            for i, layer in enumerate(layers):
                if isinstance(layer.ffn, MoELayer) and layer.ffn.expert_counts is not None:
                    out[f"{name}.{i}"] = layer.ffn.expert_counts.tolist()
        return out


class SubTransformer(MoEStats, nn.Module):
    """An encoder-decoder Transformer exactly as one Arch describes it (see module docstring)."""

    def __init__(self, arch: Arch, dropout: float = 0.0, moe_backend: str = "torch"):
        super().__init__()
        self.arch = arch
        de, dd = arch.encoder.embed_dim, arch.decoder.embed_dim
        self.enc_embed = nn.Embedding(arch.vocab_size, de, padding_idx=PAD)
        self.dec_embed = nn.Embedding(arch.vocab_size, dd, padding_idx=PAD)
        nn.init.normal_(self.enc_embed.weight, std=de**-0.5)
        nn.init.normal_(self.dec_embed.weight, std=dd**-0.5)
        self.enc_layers = nn.ModuleList(
            EncoderLayer(de, lay, arch.qkv_dim, arch.top_k, dropout, moe_backend) for lay in arch.encoder.layers
        )
        self.dec_layers = nn.ModuleList(
            DecoderLayer(dd, de, lay, arch.qkv_dim, arch.top_k, dropout, moe_backend) for lay in arch.decoder.layers
        )
        self.enc_norm, self.dec_norm = nn.LayerNorm(de), nn.LayerNorm(dd)
        self.drop = nn.Dropout(dropout)
        self.n_states = min(arch.max_cross_span, len(arch.encoder.layers))

    # ---- building blocks ------------------------------------------------------------------
    def _embed(self, emb: nn.Embedding, tokens: torch.Tensor, start: int | torch.SymInt = 0) -> torch.Tensor:
        return embed_tokens(emb, tokens, self.drop, start)

    def _stacks(self) -> Iterable[tuple[str, nn.ModuleList]]:
        return (("encoder", self.enc_layers), ("decoder", self.dec_layers))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> states (K, B, S, De): the last K layer outputs, each through the final
        encoder norm; and the source padding mask (B, S), True at padding."""
        pad = src.eq(PAD)
        bias = (pad.to(torch.float32) * NEG_INF)[:, None, None, :]
        x = self._embed(self.enc_embed, src)
        outs = []
        for layer in self.enc_layers:
            x = layer(x, bias)
            outs.append(x)
        return torch.stack([self.enc_norm(o) for o in outs[-self.n_states :]]), pad

    def cross_kv(
        self, states: torch.Tensor, pad: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Per decoder layer: cross keys/values over the last ``cross_span`` encoder outputs,
        joined along the sequence: (B, H, span*S, Q/H) each, plus the matching padding bias."""
        out = []
        for layer in self.dec_layers:
            span = layer.cross_span
            mem = torch.cat(list(states[-span:]), dim=1)
            bias = None
            if pad is not None:
                bias = (pad.repeat(1, span).to(torch.float32) * NEG_INF)[:, None, None, :]
            out.append((*layer.cross_attn.kv(mem), bias))
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output projection tied to the decoder embedding: (..., Dd) -> (..., V)."""
        return tied_logits(self.dec_norm, self.dec_embed, x)

    # ---- training / scoring ---------------------------------------------------------------
    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, hidden: bool = False):
        """Teacher forcing: src (B, S), tgt_in (B, T) (starting with BOS) -> logits (B, T, V).

        ``hidden=True`` returns (final decoder states (B, T, Dd), output weight (V, Dd))
        instead, so that training can fuse the projection into its loss (search/loss.py)."""
        states, pad = self.encode(src)
        cross = self.cross_kv(states, pad)
        causal = causal_bias(tgt_in.shape[1], 0, src.device)
        x = self._embed(self.dec_embed, tgt_in)
        for layer, c in zip(self.dec_layers, cross):
            x, _ = layer(x, c, None, causal)
        if hidden:
            return self.dec_norm(x), self.dec_embed.weight
        return self.logits(x)

    # ---- incremental decoding -------------------------------------------------------------
    def step(self, tokens: torch.Tensor, cache: list[KV] | None, cross: list) -> tuple[torch.Tensor, list[KV]]:
        """One decoder step: tokens (B, 1), cache per layer (B, H, t, Q/H) or None at t = 0
        -> logits (B, V) and the cache grown to t + 1."""
        start = 0 if cache is None else cache[0][0].shape[2]
        x = self._embed(self.dec_embed, tokens, start)
        new_cache = []
        for i, (layer, c) in enumerate(zip(self.dec_layers, cross)):
            x, kv = layer(x, c, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.logits(x[:, -1]), new_cache

    @torch.no_grad()
    def generate(
        self, src: torch.Tensor, beam: int = 5, max_len: int | None = None, len_penalty: float = 1.0
    ) -> list[list[int]]:
        """Beam search (beam=1: greedy). src (B, S) -> B token lists, without BOS/EOS."""
        states, pad = self.encode(src)
        cross = [
            tuple(None if t is None else t.repeat_interleave(beam, 0) for t in c) for c in self.cross_kv(states, pad)
        ]
        return beam_search(
            lambda tokens, cache: self.step(tokens, cache, cross),
            src.shape[0],
            beam,
            max_len or max_new_tokens(src.shape[1]),
            self.arch.vocab_size,
            src.device,
            len_penalty,
        )


# How long an output may grow: fairseq's max_len_a * S + max_len_b (recommended for WMT), S the
# source length in ids with its EOS; translation also caps it at MAX_LENGTH (the training's max_len).
MAX_LEN_A, MAX_LEN_B, MAX_LENGTH = 1.2, 10, 64


def max_new_tokens(src_len: int, max_length: int | None = None) -> int:
    """Decoding steps allowed for a source of ``src_len`` ids (EOS included): a translation stops
    at EOS or after this many tokens (the export's manifest states the same rule for clients)."""
    n = int(MAX_LEN_A * src_len) + MAX_LEN_B
    return n if max_length is None else min(max_length, n)


def beam_search(
    step, bsz: int, beam: int, max_len: int, vocab: int, device: torch.device | str = "cpu", len_penalty: float = 1.0
) -> list[list[int]]:
    """Batched beam search over any incremental decoder (the torch model, or the exported
    ONNX graphs: one algorithm, so both decode alike).

    ``step(tokens (B*beam, 1), cache | None) -> (logits (B*beam, V), cache)``, the cache a list
    of (k, v) tensors whose first dim is B*beam (reordered here as beams are chosen). Finished
    beams stay in the beam with their score frozen; the best hypothesis is chosen by
    score / length**len_penalty (fairseq's normalisation). Returns B lists without BOS/EOS."""
    tokens = torch.full((bsz * beam, 1), BOS, dtype=torch.long, device=device)
    scores = torch.zeros(bsz, beam, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand from beam 0 only
    done = torch.zeros(bsz * beam, dtype=torch.bool, device=device)
    lengths = torch.zeros(bsz * beam, device=device)
    cache = None
    for _ in range(max_len):
        logits, cache = step(tokens[:, -1:], cache)
        lp = F.log_softmax(logits.float(), dim=-1)
        lp[done] = float("-inf")
        lp[done, EOS] = 0.0  # a finished beam only "extends" with EOS at no cost
        cand = (scores.reshape(-1, 1) + lp).reshape(bsz, beam * vocab)
        scores, flat = cand.topk(beam, dim=-1)
        sel = (torch.arange(bsz, device=device) * beam).unsqueeze(1).add(flat // vocab).reshape(-1)
        tok = (flat % vocab).reshape(-1, 1)
        lengths = lengths[sel] + (~done[sel]).float()
        done = done[sel] | tok.squeeze(1).eq(EOS)
        tokens = torch.cat([tokens[sel], tok], dim=1)
        cache = [(k[sel], v[sel]) for k, v in cache]
        if bool(done.all()):
            break
    norm = (scores.reshape(-1) / lengths.clamp(min=1) ** len_penalty).reshape(bsz, beam)
    best = norm.argmax(dim=-1) + torch.arange(bsz, device=device) * beam
    out = []
    for row in tokens[best, 1:].tolist():
        out.append(row[: row.index(EOS)] if EOS in row else row)
    return out


def build_model(arch: Arch, seed: int | None = 0, dropout: float = 0.0, moe_backend: str = "torch") -> SubTransformer:
    """A freshly initialised SubTransformer (seeded, so the same arch gives the same weights).
    An arch whose fp32 weights alone exceed this machine's memory is one line, not an allocation
    traceback. A decoder-only arch is refused: ``lm_model.build_lm_model`` builds it."""
    if not isinstance(arch, Arch):
        raise UserError(f"arch {arch.arch_id} is {arch.family.name}: build it with moenas.arch.lm_model.build_lm_model")
    check_fits_memory(arch)
    return seeded(seed, lambda: SubTransformer(arch, dropout=dropout, moe_backend=moe_backend))


def seeded(seed: int | None, make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` under torch seed ``seed`` (the global RNG is left as it was); unseeded: as is."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make()
    return make()


def memory_limit_bytes() -> int | None:
    """This process's memory: the cgroup's limit when one is set, else the physical memory."""
    try:
        text = open("/sys/fs/cgroup/memory.max").read().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(arch: Arch | LMArch) -> None:
    """UserError when the arch's fp32 parameters alone do not fit this machine's memory."""
    params = param_count(arch).total
    need, have = 4 * params, memory_limit_bytes()
    if have is not None and need > have:
        widths = (
            f"{arch.encoder.embed_dim}/{arch.decoder.embed_dim}"
            if isinstance(arch, Arch)
            else f"{arch.decoder.embed_dim}"
        )
        raise UserError(
            f"arch {arch.arch_id}: its {params / 1e9:.3g}G parameters need {need / 2**30:.1f} GiB "
            f"in fp32, more than this machine's {have / 2**30:.1f} GiB (embed_dim "
            f"{widths}, vocab_size {arch.vocab_size})"
        )
