"""Test-only corpus helpers: write a gettext .mo catalog, make toy parallel pairs, write a
line-aligned corpus folder. The library reads these formats (``moenas.data.corpus``); only the
tests write them. Importable as ``toy_corpus`` (tests/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Sequence

from moenas.data.corpus import MO_MAGIC, Pair


def write_mo(path: str | Path, entries: Sequence[tuple[str, str]], charset: str = "UTF-8") -> Path:
    """Write a little-endian .mo catalog. An entry's msgid may hold a
    plural as "one\\x00many" and its msgstr the forms as "form0\\x00form1"."""
    header = ("", f"Content-Type: text/plain; charset={charset}\nPlural-Forms: nplurals=2; plural=(n != 1);\n")
    items = sorted([header, *entries], key=lambda e: e[0].encode(charset))
    ids = [k.encode(charset) for k, _ in items]
    strs = [v.encode(charset) for _, v in items]
    n = len(items)
    orig_off, trans_off = 28, 28 + 8 * n
    pos = trans_off + 8 * n
    tables, blob = [], b""
    for s in ids + strs:
        tables.append((len(s), pos + len(blob)))
        blob += s + b"\x00"
    head = struct.pack("<7I", MO_MAGIC, 0, n, orig_off, trans_off, 0, 0)
    body = b"".join(struct.pack("<2I", *t) for t in tables)
    p = Path(path)
    p.write_bytes(head + body + blob)
    return p


_LEXICON = {
    "det": [("the", "die"), ("a", "eine"), ("every", "jede"), ("no", "keine")],
    "adj": [
        ("red", "rote"),
        ("small", "kleine"),
        ("old", "alte"),
        ("new", "neue"),
        ("empty", "leere"),
        ("hidden", "versteckte"),
        ("large", "große"),
        ("broken", "kaputte"),
    ],
    "noun": [
        ("file", "Datei"),
        ("window", "Fenster"),
        ("key", "Taste"),
        ("list", "Liste"),
        ("page", "Seite"),
        ("table", "Tabelle"),
        ("folder", "Mappe"),
        ("line", "Zeile"),
        ("option", "Option"),
        ("image", "Grafik"),
    ],
    "verb": [
        ("opens", "öffnet"),
        ("closes", "schließt"),
        ("shows", "zeigt"),
        ("hides", "versteckt"),
        ("copies", "kopiert"),
        ("deletes", "löscht"),
    ],
}


def synthetic_pairs(n: int, seed: int = 0) -> list[Pair]:
    """``n`` distinct toy English->German pairs ("the red file opens a new window" ->
    "die rote Datei öffnet eine neue Fenster"): word-by-word with a fixed lexicon, optional
    adjectives and an optional second clause, so a tiny model learns it in a few hundred steps.
    For tests only: it is not language."""
    r = random.Random(seed)
    lex = _LEXICON

    def phrase() -> tuple[list[str], list[str]]:
        d = r.choice(lex["det"])
        src, tgt = [d[0]], [d[1]]
        if r.random() < 0.6:
            a = r.choice(lex["adj"])
            src.append(a[0])
            tgt.append(a[1])
        nn_ = r.choice(lex["noun"])
        return src + [nn_[0]], tgt + [nn_[1]]

    out: list[Pair] = []
    seen: set[str] = set()
    while len(out) < n:
        s1, t1 = phrase()
        v = r.choice(lex["verb"])
        s2, t2 = phrase()
        src, tgt = s1 + [v[0]] + s2, t1 + [v[1]] + t2
        if r.random() < 0.3:
            s3, t3 = phrase()
            v2 = r.choice(lex["verb"])
            src += ["and"] + s3 + [v2[0]]
            tgt += ["und"] + t3 + [v2[1]]
        s = " ".join(src)
        if s in seen:
            continue
        seen.add(s)
        out.append((s, " ".join(tgt)))
    return out


def write_parallel_dir(
    directory: str | Path,
    train: Sequence[Pair],
    valid: Sequence[Pair] = (),
    test: Sequence[Pair] = (),
    src_lang: str = "en",
    tgt_lang: str = "de",
) -> Path:
    """Write pairs as line-aligned files ``DIR/{train,valid,test}.{src,tgt}`` (empty splits skipped)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("valid", valid), ("test", test)):
        if pairs:
            (d / f"{name}.{src_lang}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
            (d / f"{name}.{tgt_lang}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return d
