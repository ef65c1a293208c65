"""Build the shipped language-model corpus once, from a CPython standard library's own text.

    python -m moenas.data.build_text_corpus            # this interpreter's stdlib (3.11 when shipped)

Reads, without importing anything, every ``*.py`` of the standard library (tests, IDLE, lib2to3
and the bundled pip excluded) with :mod:`ast`: the docstring of each module, class and function,
and the language reference topics of ``pydoc_data/topics.py``. Doctest lines (``>>>``,
``...``) are dropped, paragraphs kept whole, short ones (< ``MIN_CHARS``) dropped, duplicates
kept once. Each document is a docstring or a topic, split train / valid / test by its hash.

Writes ``data/corpora/python-docs-en.jsonl.xz`` (one ``{"split", "text"}`` per document),
``python-docs-en.json`` (SHA-256, counts, the Python version it came from) and
``NOTICE.python-docs-en``. The text is the Python Software Foundation's, under the PSF License
Agreement (Python 2.0.1+), not the project's licence.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import lzma
import platform
import sys
import sysconfig
from pathlib import Path
from typing import Any, Iterator

from .corpus import CORPORA_DIR, SPLITS, split_by_hash
from .text_corpus import MIN_CHARS, TEXT_NAME, paragraphs

SKIP_PARTS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "ensurepip",
    "turtledemo",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "__phello__",
}


def stdlib_files(root: Path) -> list[Path]:
    """The standard library's ``*.py`` files worth reading, sorted (machine-independent order)."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if not any(part in SKIP_PARTS or part.startswith("test_") for part in p.relative_to(root).parts)
    )


def docstrings(path: Path) -> Iterator[str]:
    """Module, class and function docstrings of one file, in source order (none if unparsable)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    for node in nodes:
        doc = ast.get_docstring(node)
        if doc:
            yield doc


def topics(root: Path) -> list[str]:
    """The language reference topics of ``pydoc_data/topics.py`` (a dict literal), by name."""
    path = root / "pydoc_data" / "topics.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "topics":
            table = ast.literal_eval(node.value)
            return [table[k] for k in sorted(table)]
    return []


def clean(doc: str) -> str:
    """A document as prose: doctest lines out, paragraphs joined by newlines ('' if too short)."""
    lines = [ln for ln in doc.splitlines() if not ln.lstrip().startswith((">>>", "... "))]
    return "\n".join(paragraphs("\n".join(lines)))


def documents(root: Path) -> list[str]:
    """Every cleaned, non-empty, first-seen document of the stdlib at ``root``."""
    raw = [d for f in stdlib_files(root) for d in docstrings(f)] + topics(root)
    docs = (clean(d) for d in raw)
    return list(dict.fromkeys(d for d in docs if len(d) >= MIN_CHARS))


def build(root: Path, out_dir: Path = CORPORA_DIR, name: str = TEXT_NAME) -> dict[str, Any]:
    """Write the corpus, its manifest and its NOTICE from the stdlib at ``root``."""
    docs = documents(root)
    train, valid, test = split_by_hash(docs, lambda d: d, 0.02, 0.02, what="documents")
    lines = [
        json.dumps({"split": s, "text": t}, ensure_ascii=False)
        for s, part in zip(SPLITS, (train, valid, test))
        for t in part
    ]
    blob = lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    manifest = {
        "file": f"{name}.jsonl.xz",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "documents": {s: len(p) for s, p in zip(SPLITS, (train, valid, test))},
        "chars": {s: sum(map(len, p)) for s, p in zip(SPLITS, (train, valid, test))},
        "built_from": {
            "python": platform.python_version(),
            "stdlib_files": len(stdlib_files(root)),
            "sources": ["docstrings (ast)", "pydoc_data/topics.py"],
        },
        "license": "PSF-2.0",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest["file"]).write_bytes(blob)
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"NOTICE.{name}").write_text(notice(manifest), encoding="utf-8")
    return manifest


def notice(manifest: dict[str, Any]) -> str:
    py = manifest["built_from"]["python"]
    return (
        f"data/corpora/{manifest['file']}: English text from the standard library of CPython {py}:\n"
        "the docstrings of its modules, classes and functions, and the language reference topics of\n"
        "pydoc_data/topics.py, cleaned and split by moenas (data/build_text_corpus.py).\n\n"
        "This text is NOT distributed under the moenas licence (Apache-2.0). It is\n"
        f"Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved, and is distributed\n"
        "under the PSF License Agreement for Python (https://docs.python.org/3/license.html),\n"
        "SPDX identifier PSF-2.0.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]), help="standard library folder"
    )
    ap.add_argument("--out-dir", type=Path, default=CORPORA_DIR)
    a = ap.parse_args(argv)
    if not (a.stdlib / "pydoc_data" / "topics.py").is_file():
        print(f"{a.stdlib}: not a CPython standard library (no pydoc_data/topics.py)", file=sys.stderr)
        return 2
    m = build(a.stdlib, a.out_dir)
    print(
        f"{m['file']}: {sum(m['documents'].values())} documents, {sum(m['chars'].values()) / 1e6:.2f} M characters, "
        f"{m['bytes'] / 1e6:.2f} MB compressed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
