"""A joint source/target BPE tokenizer (or, for a language model, one over its text corpus),
trained locally and cached by corpus fingerprint: :func:`get_tokenizer` takes any corpus with
``texts()`` and a ``fingerprint``.

HF ``tokenizers`` BPE (NFKC normalisation, SentencePiece-style Metaspace pre-tokenisation so
that decoding restores the spaces) with the special tokens at the ids the model expects:
``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3 (:data:`moenas.arch.model.SPECIAL_IDS`). The
vocabulary is sized to the search space's ``vocab_size``; a small corpus may fill fewer
entries, which only leaves some embedding rows unused.

The trained tokenizer is a JSON file under the cache directory (``--cache``,
``$MOENAS_CACHE`` or ``~/.cache/moenas``): ``tokenizers/bpe-<fingerprint>-<vocab>.json``, so
the same corpus and vocabulary size never train twice, and a changed corpus never reuses a
stale tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from moenas.arch.errors import UserError
from moenas.arch.files import atomic_write
from moenas.arch.model import BOS, EOS, PAD, UNK

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0, 1, 2, 3


def default_cache_dir() -> Path:
    return Path(os.environ.get("MOENAS_CACHE") or Path.home() / ".cache" / "moenas")


class SubwordTokenizer:
    """Text <-> ids. ``encode`` adds no BOS/EOS (batching adds them); ``decode`` drops
    special tokens."""

    def __init__(self, tokenizer, path: Path | None = None):
        self._tok = tokenizer
        self.path = path
        for i, name in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(name) != i:
                raise UserError(f"{path or 'tokenizer'}: special token {name} must have id {i}")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD, BOS, EOS, UNK

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    @classmethod
    def load(cls, path: str | Path) -> "SubwordTokenizer":
        from tokenizers import Tokenizer

        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: no such tokenizer file")
        try:
            return cls(Tokenizer.from_file(str(p)), p)
        except Exception as e:  # tokenizers raises its own exception type for bad JSON
            raise UserError(
                f"{p}: not a tokenizer file ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            ) from None


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A fresh BPE ``tokenizers.Tokenizer`` learned from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size <= len(SPECIAL_TOKENS):
        raise UserError(f"vocab_size {vocab_size} is too small for a tokenizer")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def tokenizer_path(fingerprint: str, vocab_size: int, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "tokenizers" / f"bpe-{fingerprint}-{vocab_size}.json"


def get_tokenizer(corpus, vocab_size: int, cache_dir: str | Path | None = None) -> SubwordTokenizer:
    """The cached tokenizer for (corpus fingerprint, vocab size); trained and saved if absent.

    The file is written to a temporary name and renamed, so concurrent processes (DDP ranks)
    never read a half-written file."""
    path = tokenizer_path(corpus.fingerprint, vocab_size, cache_dir)
    if path.is_file():
        return SubwordTokenizer.load(path)
    tok = train_tokenizer(corpus.texts(), vocab_size)
    atomic_write(path, tok.save)
    return SubwordTokenizer(tok, path)
