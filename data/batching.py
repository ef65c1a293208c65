"""Token-count batching for translation pairs, deterministic and resumable.

Source sequences are ``ids + [EOS]``; the decoder reads ``[BOS] + ids`` and predicts
``ids + [EOS]`` (fairseq convention). Batches group sentences of similar length (sorted by
length with a seeded random tie-break) so that padding stays small, and hold at most
``max_tokens`` tokens counted as rows x longest sequence (source or target), the quantity
that sets memory. The batch order of epoch ``e`` is a pure function of (seed, e), so a data
position is just (epoch, index) and resuming replays the same stream.

For data parallelism, rank r of w takes batches r, r+w, r+2w, ... of each epoch; every rank
gets the same number of batches (the epoch's last < w batches are dropped).

Language models read one token stream instead (:func:`token_stream`): every document's ids
followed by EOS, the end-of-text separator, cut into blocks of ``block_len`` inputs whose targets
are the same tokens shifted by one (:func:`cut_blocks`). :class:`BlockStream` serves shuffled
batches of whole blocks with the same (epoch, index) position and the same rank split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from moenas.arch.errors import UserError
from moenas.arch.model import BOS, EOS, PAD

Example = tuple[list[int], list[int]]  # (source ids, target ids), without BOS/EOS


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int = 64) -> list[Example]:
    """Tokenise pairs; each side truncated to ``max_len - 1`` ids (room for BOS/EOS)."""
    if not pairs:
        return []
    src = tokenizer.encode_batch([s for s, _ in pairs])
    tgt = tokenizer.encode_batch([t for _, t in pairs])
    return [(s[: max_len - 1], t[: max_len - 1]) for s, t in zip(src, tgt)]


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids + EOS, PAD-padded
    tgt_in: torch.Tensor  # (B, T) BOS + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + EOS (PAD where tgt_in pads)
    n_tokens: int  # non-pad source + target tokens

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.n_tokens)

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        """What the model's forward takes: (src, tgt_in)."""
        return self.src, self.tgt_in

    @property
    def target(self) -> torch.Tensor:
        """The ids the loss predicts, aligned with the model's output positions: tgt_out."""
        return self.tgt_out

    @property
    def n_target_tokens(self) -> int:
        return int(self.tgt_out.ne(PAD).sum())


def collate(examples: Sequence[Example]) -> Batch:
    b = len(examples)
    s_len = max(len(s) for s, _ in examples) + 1
    t_len = max(len(t) for _, t in examples) + 1
    src = torch.full((b, s_len), PAD, dtype=torch.long)
    tgt_in = torch.full((b, t_len), PAD, dtype=torch.long)
    tgt_out = torch.full((b, t_len), PAD, dtype=torch.long)
    n = 0
    for i, (s, t) in enumerate(examples):
        src[i, : len(s) + 1] = torch.tensor(s + [EOS])
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS] + t)
        tgt_out[i, : len(t) + 1] = torch.tensor(t + [EOS])
        n += len(s) + len(t) + 2
    return Batch(src, tgt_in, tgt_out, n)


def batch_indices(
    examples: Sequence[Example], max_tokens: int, shuffle: bool = True, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """Indices of each batch for one epoch (see the module docstring)."""
    if not examples:
        return []
    r = random.Random(f"{seed}:{epoch}")
    order = list(range(len(examples)))
    keys = [r.random() for _ in order] if shuffle else [0.0] * len(order)
    size = [max(len(s), len(t)) + 1 for s, t in examples]
    order.sort(key=lambda i: (size[i], keys[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, size[i])
        if cur and new_longest * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, new_longest = [], size[i]
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    if shuffle:
        r.shuffle(batches)
    return batches


class _Stream:
    """An endless, resumable stream of training batches over epochs; a subclass says which
    items form each batch of an epoch (``_plan``) and how a batch is built (``_make``).

    ``state_dict()`` -> {"epoch", "index"}: the next batch to yield; ``load_state_dict`` puts
    the stream back there."""

    def __init__(self, seed: int, rank: int, world: int):
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch, self.index = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None
        if not self._epoch_batches(0):
            raise UserError(f"too few training batches ({len(self._plan(0))}) for {world} processes")

    def _plan(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def _make(self, idx: list[int]):
        raise NotImplementedError

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            allb = self._plan(epoch)
            usable = len(allb) // self.world * self.world
            self._cache = (epoch, allb[:usable][self.rank :: self.world])
        return self._cache[1]

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        batches = self._epoch_batches(self.epoch)
        if self.index >= len(batches):
            self.epoch, self.index = self.epoch + 1, 0
            batches = self._epoch_batches(self.epoch)
        idx = batches[self.index]
        self.index += 1
        return self._make(idx)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class BatchStream(_Stream):
    """Translation batches of at most ``max_tokens`` tokens (:func:`batch_indices`), endless
    and resumable (see :class:`_Stream`)."""

    def __init__(self, examples: Sequence[Example], max_tokens: int, seed: int = 0, rank: int = 0, world: int = 1):
        if not examples:
            raise UserError("no training examples to batch")
        longest = max(max(len(s), len(t)) + 1 for s, t in examples)
        if max_tokens < longest:
            raise UserError(f"max_tokens {max_tokens} is below the longest sequence ({longest} tokens)")
        self.examples, self.max_tokens = examples, max_tokens
        super().__init__(seed, rank, world)

    def _plan(self, epoch: int) -> list[list[int]]:
        return batch_indices(self.examples, self.max_tokens, True, self.seed, epoch)

    def _make(self, idx: list[int]) -> Batch:
        return collate([self.examples[i] for i in idx])


def fixed_batches(examples: Sequence[Example], max_tokens: int) -> list[Batch]:
    """A fixed, unshuffled list of batches (validation)."""
    return [collate([examples[i] for i in idx]) for idx in batch_indices(examples, max_tokens, shuffle=False)]


# ---- language models: one token stream cut into blocks ------------------------------------------


def token_stream(tokenizer, documents: Sequence[str]) -> torch.Tensor:
    """Every document's ids followed by EOS (the end-of-text separator, so the model learns
    where a document ends and never reads one as the continuation of another without it), all
    concatenated in order: (N,) int64."""
    ids: list[int] = []
    for doc in tokenizer.encode_batch(list(documents)) if documents else []:
        ids += doc
        ids.append(EOS)
    return torch.tensor(ids, dtype=torch.long)


def cut_blocks(stream: torch.Tensor, block_len: int) -> torch.Tensor:
    """The stream (N,) as consecutive blocks (n, block_len + 1), n = (N - 1) // block_len: block
    i holds tokens i*L .. (i+1)*L, so its first L are inputs and its last L their next-token
    targets, and neighbours share one token (every token but the first is a target once). A tail
    shorter than a block is dropped."""
    n = max((stream.numel() - 1) // block_len, 0)
    if n == 0:
        return torch.zeros((0, block_len + 1), dtype=torch.long)
    return stream[: n * block_len + 1].unfold(0, block_len + 1, block_len).contiguous()


@dataclass
class LMBatch:
    ids: torch.Tensor  # (B, L) input ids
    target: torch.Tensor  # (B, L) the next token at every position
    n_tokens: int  # input tokens (B x L)

    def to(self, device) -> "LMBatch":
        return LMBatch(self.ids.to(device), self.target.to(device), self.n_tokens)

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        """What the model's forward takes: (ids,)."""
        return (self.ids,)

    @property
    def n_target_tokens(self) -> int:
        return int(self.target.ne(PAD).sum())


def block_batch(blocks: torch.Tensor) -> LMBatch:
    """Blocks (B, L + 1) -> inputs = blocks[:, :-1], targets = blocks[:, 1:]."""
    return LMBatch(blocks[:, :-1], blocks[:, 1:], blocks[:, :-1].numel())


def block_rows(max_tokens: int, block_len: int) -> int:
    """Blocks per batch: as many as ``max_tokens`` holds; UserError when not even one fits."""
    if max_tokens < block_len:
        raise UserError(f"max_tokens {max_tokens} is below the block length ({block_len} tokens)")
    return max_tokens // block_len


class BlockStream(_Stream):
    """Training batches of ``max_tokens // block_len`` blocks (B, L + 1), in a fresh seeded order
    each epoch (the last batch of an epoch may be smaller), endless and resumable."""

    def __init__(self, blocks: torch.Tensor, max_tokens: int, seed: int = 0, rank: int = 0, world: int = 1):
        if blocks.shape[0] == 0:
            raise UserError("no training blocks: the training text is shorter than one block")
        self.blocks, self.rows = blocks, block_rows(max_tokens, blocks.shape[1] - 1)
        super().__init__(seed, rank, world)

    def _plan(self, epoch: int) -> list[list[int]]:
        order = list(range(self.blocks.shape[0]))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return [order[i : i + self.rows] for i in range(0, len(order), self.rows)]

    def _make(self, idx: list[int]) -> LMBatch:
        return block_batch(self.blocks[idx])


def fixed_block_batches(blocks: torch.Tensor, max_tokens: int) -> list[LMBatch]:
    """Blocks (n, L + 1) in order as batches of ``max_tokens // L`` rows (validation)."""
    rows = block_rows(max_tokens, blocks.shape[1] - 1)
    return [block_batch(blocks[i : i + rows]) for i in range(0, blocks.shape[0], rows)]
