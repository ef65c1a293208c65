"""The decoder-only causal language model built from an LMArch (pre-norm, MoE FFNs).

Shapes: B batch, L sequence length, t cache length, D embed width, Q = qkv_dim, H heads,
V vocabulary. Token ids follow ``model.SPECIAL_IDS``; there is no padding mask: with causal
attention, padding at the end of a row changes none of the positions before it (a loss
ignores the padded targets).

The layers are the encoder-decoder model's pre-norm self-attention blocks
(``model.EncoderLayer``) with a causal bias, the embedding and positions are its
``embed_tokens``, and the output projection is tied to the embedding as its decoder's is.

Entry points, as the latency protocol (``LMProtocol``) times them:
  * ``forward(ids)`` -> logits at every position (training, scoring);
  * ``prefill(ids)`` -> the last position's logits and the KV cache of the prompt;
  * ``step(tokens, cache)`` -> one decode step on the cache, and the cache grown by one.

:func:`greedy_stream` is the one greedy decoding loop with its stop rules (EOS, a token budget,
the context length), over any prefill/step pair: the torch model's (:func:`greedy_generate`)
and the exported ONNX graphs' (``moenas.search.lm_deploy.OnnxGenerator``), so the two agree by
construction up to the logits.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .arch import LMArch
from .model import (
    EOS,
    KV,
    PAD,
    EncoderLayer,
    MoEStats,
    causal_bias,
    check_fits_memory,
    embed_tokens,
    seeded,
    tied_logits,
)


class CausalLM(MoEStats, nn.Module):
    """A decoder-only Transformer exactly as one LMArch describes it (see module docstring)."""

    def __init__(self, arch: LMArch, dropout: float = 0.0, moe_backend: str = "torch"):
        super().__init__()
        self.arch = arch
        d = arch.decoder.embed_dim
        self.embed = nn.Embedding(arch.vocab_size, d, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        self.layers = nn.ModuleList(
            EncoderLayer(d, lay, arch.qkv_dim, arch.top_k, dropout, moe_backend) for lay in arch.decoder.layers
        )
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def _stacks(self) -> Iterable[tuple[str, nn.ModuleList]]:
        return (("decoder", self.layers),)

    def _run(self, ids: torch.Tensor, cache: list[KV] | None) -> tuple[torch.Tensor, list[KV]]:
        """ids (B, L) after a cache of t positions (None: t = 0) -> final states (B, L, D) before
        the norm, and each layer's keys/values (B, H, t + L, Q/H)."""
        past = 0 if cache is None else cache[0][0].shape[2]
        length = ids.shape[1]
        bias = None if length == 1 else causal_bias(length, past, ids.device)  # one new token sees everything
        x = embed_tokens(self.embed, ids, self.drop, past)
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer.block(x, None if cache is None else cache[i], bias)
            new_cache.append(kv)
        return x, new_cache

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm and the output projection tied to the embedding: (..., D) -> (..., V)."""
        return tied_logits(self.norm, self.embed, x)

    def forward(self, ids: torch.Tensor, hidden: bool = False):
        """ids (B, L) -> logits (B, L, V), position i seeing ids[:, :i+1].

        ``hidden=True`` returns (final states (B, L, D) after the norm, output weight (V, D))
        instead, so that training can fuse the projection into its loss."""
        x, _ = self._run(ids, None)
        if hidden:
            return self.norm(x), self.embed.weight
        return self.logits(x)

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[KV]]:
        """The prompt ids (B, L) in one pass -> the last position's logits (B, V) and the cache
        of L positions per layer (only the last position goes through the output projection)."""
        x, cache = self._run(ids, None)
        return self.logits(x[:, -1]), cache

    def step(self, tokens: torch.Tensor, cache: list[KV]) -> tuple[torch.Tensor, list[KV]]:
        """One decode step: tokens (B, 1) at position t -> logits (B, V), cache grown to t + 1."""
        x, cache = self._run(tokens, cache)
        return self.logits(x[:, -1]), cache

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, steps: int) -> torch.Tensor:
        """Greedy continuation: prompt ids (B, L) -> the next ``steps`` tokens (B, steps)."""
        logits, cache = self.prefill(ids)
        out = []
        for i in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            out.append(nxt)
            if i + 1 < steps:
                logits, cache = self.step(nxt, cache)
        return torch.cat(out, dim=1)


def build_lm_model(arch: LMArch, seed: int | None = 0, dropout: float = 0.0, moe_backend: str = "torch") -> CausalLM:
    """A freshly initialised CausalLM (seeded, so the same arch gives the same weights); an arch
    whose fp32 weights exceed this machine's memory is one UserError line."""
    check_fits_memory(arch)
    return seeded(seed, lambda: CausalLM(arch, dropout=dropout, moe_backend=moe_backend))


# prefill(prompt ids) -> (logits (1, V), cache); step(token, cache) -> (logits (1, V), cache). The
# logits are a torch tensor or a numpy array, the cache whatever the pair passes between calls.
Prefill = Callable[[Sequence[int]], tuple[Any, Any]]
Step = Callable[[int, Any], tuple[Any, Any]]


def greedy_stream(
    prefill: Prefill, step: Step, prompt: Sequence[int], max_new_tokens: int, context_length: int, eos: int = EOS
) -> Iterator[int]:
    """Greedy continuation of one prompt (batch 1), yielded token by token as it is chosen.

    Stops at ``eos`` (not yielded), after ``max_new_tokens`` tokens, or when prompt +
    continuation reach ``context_length`` tokens (positions beyond it were never trained). The
    prefill runs once on the whole prompt; each later token costs one ``step`` on the cache,
    and the last token chosen is never fed back (its step would compute logits nobody reads)."""
    budget = min(max_new_tokens, context_length - len(prompt))
    if budget <= 0:
        return
    logits, cache = prefill(prompt)
    for i in range(budget):
        token = int(logits.argmax())  # (1, V): the flat argmax is the row's; first maximum on ties
        if token == eos:
            return
        yield token
        if i + 1 < budget:
            logits, cache = step(token, cache)


def stop_reason(n_prompt: int, n_new: int, max_new_tokens: int, context_length: int) -> str:
    """Why :func:`greedy_stream` stopped after ``n_new`` tokens: ``eos``, ``max_new_tokens``
    or ``context_length`` (the smaller budget, when both were reached)."""
    if n_new < min(max_new_tokens, context_length - n_prompt):
        return "eos"
    return "max_new_tokens" if max_new_tokens <= context_length - n_prompt else "context_length"


@torch.no_grad()
def greedy_generate(model: CausalLM, prompt: Sequence[int], max_new_tokens: int, context_length: int) -> list[int]:
    """The torch model's greedy continuation of ``prompt`` (ids, batch 1) under
    :func:`greedy_stream`'s stop rules: the reference an exported model must reproduce, and a
    sample continuation for reports."""
    device = model.embed.weight.device

    def prefill(ids: Sequence[int]) -> tuple[torch.Tensor, list[KV]]:
        return model.prefill(torch.tensor([list(ids)], dtype=torch.long, device=device))

    def step(token: int, cache: list[KV]) -> tuple[torch.Tensor, list[KV]]:
        return model.step(torch.tensor([[token]], dtype=torch.long, device=device), cache)

    return list(greedy_stream(prefill, step, prompt, max_new_tokens, context_length))
