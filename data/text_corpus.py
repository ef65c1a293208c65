"""Monolingual text for language models: the shipped corpus, or plain-text files a user brings.

A :class:`TextCorpus` is a list of documents per split. The shipped one
(``data/corpora/python-docs-en.jsonl.xz``, built once by ``data/build_text_corpus.py``) is
English technical prose: the docstrings of CPython 3.11's standard library and its language
reference topics (``pydoc_data``), under the PSF licence (``data/corpora/NOTICE.python-docs-en``).
It is the same on every machine, so a tokenizer, a perplexity and a checkpoint mean the same
everywhere.

``--corpus DIR``: every ``*.txt`` file under DIR (UTF-8), one document per paragraph (blank-line
separated), split by a hash of each paragraph (:func:`moenas.data.corpus.split_by_hash`), so the
split does not depend on file order or the machine.
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from moenas.arch.errors import UserError

from . import corpus
from .corpus import SPLITS, file_sha256, inputs_fingerprint, normalize_space, read_shipped, split_by_hash

TEXT_NAME = "python-docs-en"
MIN_CHARS = 40  # shorter paragraphs (headings, stray lines) carry no prose to learn from


@dataclass(frozen=True)
class TextCorpus:
    """Documents per split and where they came from. ``fingerprint``: 16 hex chars over the
    inputs and the cleaning settings (the tokenizer cache and checkpoints key on it)."""

    train: list[str]
    valid: list[str]
    test: list[str]
    fingerprint: str
    source: str
    info: dict = field(default_factory=dict, compare=False)

    def texts(self) -> Iterable[str]:
        """The training documents (what the tokenizer learns from)."""
        return iter(self.train)

    def summary(self) -> dict:
        chars = {s: sum(map(len, getattr(self, s))) for s in SPLITS}
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            **{s: len(getattr(self, s)) for s in SPLITS},
            "chars": chars,
        }


def text_data_path(name: str = TEXT_NAME) -> Path:
    return corpus.CORPORA_DIR / f"{name}.jsonl.xz"


def text_manifest_path(name: str = TEXT_NAME) -> Path:
    return corpus.CORPORA_DIR / f"{name}.json"


def load_shipped_text(name: str = TEXT_NAME) -> TextCorpus:
    """The shipped text corpus, its bytes checked against the stored SHA-256."""
    path = text_data_path(name)
    manifest, blob, digest = read_shipped(path, text_manifest_path(name), name)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for line in lzma.decompress(blob).decode("utf-8").splitlines():
        rec = json.loads(line)
        splits[rec["split"]].append(rec["text"])
    fp = inputs_fingerprint([(path.name, len(blob), digest)], {"kind": "shipped-text"})
    return TextCorpus(
        splits["train"],
        splits["valid"],
        splits["test"],
        fp,
        f"shipped:{name}",
        {"file": str(path), "sha256": digest, "built_from": manifest.get("built_from")},
    )


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs of ``text``, whitespace collapsed, the short ones dropped."""
    out = (normalize_space(p) for p in text.replace("\r\n", "\n").split("\n\n"))
    return [p for p in out if len(p) >= MIN_CHARS]


def read_text_file(path: Path) -> str:
    """The UTF-8 text of one file; one-line UserError when it is empty or not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded)") from None
    if not text.strip():
        raise UserError(f"{path}: empty (a corpus file needs text)")
    return text


def load_text_dir(directory: str | Path, valid_frac: float = 0.05, test_frac: float = 0.05) -> TextCorpus:
    """Every ``*.txt`` file under ``directory`` (sorted), split by paragraph hash."""
    d = Path(directory)
    files = sorted(p for p in d.rglob("*.txt") if p.is_file())
    if not files:
        raise UserError(f"--corpus {d}: no *.txt files (plain UTF-8 text, paragraphs separated by blank lines)")
    docs = list(dict.fromkeys(p for f in files for p in paragraphs(read_text_file(f))))
    if not docs:
        raise UserError(f"--corpus {d}: no paragraph of at least {MIN_CHARS} characters")
    train, valid, test = split_by_hash(docs, lambda x: x, valid_frac, test_frac, what="paragraphs")
    settings = {"kind": "text-dir", "min_chars": MIN_CHARS, "valid": valid_frac, "test": test_frac}
    fp = inputs_fingerprint(((str(f.relative_to(d)), f.stat().st_size, file_sha256(f)) for f in files), settings)
    return TextCorpus(train, valid, test, fp, f"dir:{d}", {"files": [str(f) for f in files]})


def load_text_corpus(spec: str | Path = "default") -> TextCorpus:
    """``"default"`` -> the shipped corpus; a directory -> :func:`load_text_dir`."""
    spec = str(spec)
    if spec == "default":
        return load_shipped_text()
    if not Path(spec).is_dir():
        raise UserError(f"--corpus {spec}: not 'default' or a directory of *.txt files")
    return load_text_dir(spec)
