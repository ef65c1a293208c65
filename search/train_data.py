"""What a training run reads, per model family: the corpus, its tokenizer, the training stream
and the fixed validation batches.

Translation (encoder-decoder): parallel pairs (``data/corpus.py``) in token-count batches of
pairs (``data/batching.py: BatchStream``). Language model (decoder-only): a text corpus
(``data/text_corpus.py``) whose documents become one token stream, each followed by EOS, cut
into ``block_len`` blocks (``token_stream``, ``cut_blocks``); batches of ``max_tokens //
block_len`` blocks (``BlockStream``). Both use the same BPE tokenizer pipeline
(``data/tokenizer.py``), sized to the space's vocabulary and cached by corpus fingerprint.
What differs is one :class:`FamilyData` per family, looked up in :data:`TRAIN_DATA`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.distributed as dist

from moenas.arch import UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily
from moenas.arch.space import AnySpace
from moenas.data.batching import (
    Batch,
    BatchStream,
    BlockStream,
    LMBatch,
    cut_blocks,
    encode_pairs,
    fixed_batches,
    fixed_block_batches,
    token_stream,
)
from moenas.data.corpus import check_corpus_spec, load_corpus
from moenas.data.text_corpus import load_text_corpus
from moenas.data.tokenizer import SubwordTokenizer, get_tokenizer

from .train_config import TrainConfig


def check_corpus_for(family: ModelFamily, spec: str) -> None:
    """A one-line UserError, before any work, unless ``spec`` names a corpus of ``family``'s kind."""
    TRAIN_DATA.for_family(family).check_corpus(spec)


def load_corpus_for(family: ModelFamily, spec: str) -> Any:
    """The corpus ``spec`` names, of the kind ``family`` trains on: a text corpus for a language
    model, a parallel corpus for translation."""
    data = TRAIN_DATA.for_family(family)
    data.check_corpus(spec)
    return data.load_corpus(spec)


def corpus_and_tokenizer(
    cfg: TrainConfig, space: AnySpace, rank: int = 0, world: int = 1
) -> tuple[Any, SubwordTokenizer]:
    """The run's corpus and its tokenizer (``space.vocab_size`` entries). Under DDP rank 0 goes
    first: it trains and caches the tokenizer, the other ranks then read it."""
    for r in (0, 1):
        if (rank == 0) == (r == 0):
            corpus = load_corpus_for(space.family, cfg.corpus)
            tok = get_tokenizer(corpus, space.vocab_size, cfg.cache_dir)
        if world > 1:
            dist.barrier()
    return corpus, tok


@dataclass
class TrainData:
    """A run's batches: ``stream`` (endless, resumable training batches), ``valid_batches``
    (fixed), and ``describe`` (what the training split holds, for the log)."""

    stream: BatchStream | BlockStream
    valid_batches: list[Batch] | list[LMBatch]
    describe: str


def translation_valid_batches(cfg: TrainConfig, tok: SubwordTokenizer, pairs: Sequence[tuple[str, str]]) -> list[Batch]:
    """Fixed batches of validation ``pairs`` (each side cut to ``max_len``)."""
    return fixed_batches(encode_pairs(tok, pairs, cfg.max_len), cfg.max_tokens)


def lm_blocks(tok: SubwordTokenizer, documents: Sequence[str], block_len: int) -> torch.Tensor:
    """``documents`` as one token stream (EOS after each) cut into blocks (n, block_len + 1)."""
    return cut_blocks(token_stream(tok, documents), block_len)


def lm_valid_blocks(cfg: TrainConfig, corpus: Any, tok: SubwordTokenizer, n_blocks: int | None = None) -> torch.Tensor:
    """The fixed validation blocks (n, L + 1): the first ``n_blocks`` (default
    ``valid_sentences``) of the validation split's stream; UserError when it has none."""
    blocks = lm_blocks(tok, corpus.valid, cfg.block_len)[: n_blocks or cfg.valid_sentences]
    if blocks.shape[0] == 0:
        raise UserError(
            f"corpus {corpus.source}: the validation split holds fewer than {cfg.block_len + 1} tokens "
            "(one block); use more text or a smaller --block-len"
        )
    return blocks


def batches_for(
    cfg: TrainConfig, space: AnySpace, corpus: Any, tok: SubwordTokenizer, rank: int = 0, world: int = 1
) -> TrainData:
    """The training stream (rank ``rank`` of ``world``) and validation batches of ``corpus``."""
    return TRAIN_DATA.for_family(space.family).batches(cfg, corpus, tok, rank, world)


# ---- what each family reads -------------------------------------------------------------------
class FamilyData:
    """What a training run of one model family reads: which corpus specs it accepts, the corpus
    they load, and the run's batches of it."""

    family: ClassVar[ModelFamily]

    def check_corpus(self, spec: str) -> None:
        """A one-line UserError unless ``spec`` names a corpus of this family's kind."""
        raise NotImplementedError

    def load_corpus(self, spec: str) -> Any:
        """The corpus ``spec`` names (already checked with :meth:`check_corpus`)."""
        raise NotImplementedError

    def batches(self, cfg: TrainConfig, corpus: Any, tok: SubwordTokenizer, rank: int, world: int) -> TrainData:
        """The training stream (rank ``rank`` of ``world``) and validation batches of ``corpus``."""
        raise NotImplementedError


class TranslationData(FamilyData):
    """Encoder-decoder translation: a parallel corpus in token-count batches of sentence pairs."""

    family = ENCODER_DECODER

    def check_corpus(self, spec: str) -> None:
        check_corpus_spec(spec)

    def load_corpus(self, spec: str) -> Any:
        return load_corpus(spec)

    def batches(self, cfg: TrainConfig, corpus: Any, tok: SubwordTokenizer, rank: int, world: int) -> TrainData:
        train_ex = encode_pairs(tok, corpus.train, cfg.max_len)
        valid = translation_valid_batches(cfg, tok, corpus.valid[: cfg.valid_sentences])
        stream = BatchStream(train_ex, cfg.max_tokens, seed=cfg.seed, rank=rank, world=world)
        return TrainData(stream, valid, f"{len(corpus.train)} train pairs")


class LanguageModelData(FamilyData):
    """Decoder-only language model: a text corpus as one token stream cut into blocks."""

    family = DECODER_ONLY

    def check_corpus(self, spec: str) -> None:
        if spec != "default" and not Path(spec).is_dir():
            raise UserError(
                f"--corpus {spec}: a language model reads 'default' (the shipped text corpus) or a directory of *.txt files"
            )

    def load_corpus(self, spec: str) -> Any:
        return load_text_corpus(spec)

    def batches(self, cfg: TrainConfig, corpus: Any, tok: SubwordTokenizer, rank: int, world: int) -> TrainData:
        train = lm_blocks(tok, corpus.train, cfg.block_len)
        valid = fixed_block_batches(lm_valid_blocks(cfg, corpus, tok), cfg.max_tokens)
        stream = BlockStream(train, cfg.max_tokens, seed=cfg.seed, rank=rank, world=world)
        return TrainData(
            stream, valid, f"{len(corpus.train)} train documents ({train.shape[0]} blocks of {cfg.block_len} tokens)"
        )


TRAIN_DATA: FamilyRegistry[FamilyData] = FamilyRegistry("training data", (TranslationData(), LanguageModelData()))
