"""Test-only text corpora for language models: toy English paragraphs (the source side of
``toy_corpus.synthetic_pairs``, a few sentences each) written as a folder of *.txt files, the
format ``moenas.data.text_corpus.load_text_dir`` reads. Importable as ``toy_text``."""

from __future__ import annotations

import random
from pathlib import Path

from toy_corpus import synthetic_pairs


def toy_paragraphs(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct paragraphs of 2-4 toy sentences (each at least 40 characters)."""
    r = random.Random(seed)
    sentences = [s for s, _ in synthetic_pairs(4 * n, seed=seed)]
    out, i = [], 0
    while len(out) < n:
        k = r.randint(2, 4)
        out.append(". ".join(sentences[i : i + k]) + ".")
        i += k
    return out


def write_text_dir(directory: str | Path, paragraphs: list[str], files: int = 2) -> Path:
    """The paragraphs spread over ``files`` UTF-8 files ``part<i>.txt``, blank-line separated."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        (d / f"part{f}.txt").write_text("\n\n".join(paragraphs[f::files]) + "\n", encoding="utf-8")
    return d
