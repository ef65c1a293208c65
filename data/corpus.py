"""Parallel corpora: line-aligned text files, gettext catalogs, and the shipped demo corpus.

Three sources give the same :class:`Corpus` (train / valid / test lists of (source, target)
pairs plus a short fingerprint of what was read):

* ``load_corpus("default")`` reads the demo corpus shipped in the repository
  (``data/corpora/gettext-en-de.tsv.xz``, checked against its stored SHA-256): English->German
  software messages ("cannot open file", "Save As..."), the same pairs and fingerprint on every
  machine. Real and offline, good enough to see a supernet learn and to rank architectures on
  a laptop; no substitute for WMT.
* ``load_corpus("gettext")`` / ``"gettext:DIR"`` builds such a corpus from the gettext catalogs
  installed on this machine (``/usr/share/locale/de/LC_MESSAGES/*.mo`` or DIR): msgid =
  English, msgstr = German, plural forms paired up (msgid with msgstr[0], msgid_plural with
  msgstr[1]). The shipped corpus was built this way (``data/build_corpus.py``).
* ``load_corpus(DIR)`` reads WMT/IWSLT-style line-aligned files ``train.en``/``train.de``
  (and ``valid.*`` or ``dev.*``, ``test.*`` when present). With only a training pair, a
  deterministic valid/test split is cut from it (by a hash of the source sentence, so the
  same sentence always lands in the same split, whatever the file order). For real work.

Cleaning (both sources): newlines and runs of whitespace collapse to one space; pairs that
are empty, identical on both sides, have no letters, are longer than ``max_words`` words or
have a word-length ratio above ``max_ratio`` are dropped; pairs are de-duplicated by source
sentence (first one kept), which also keeps a sentence out of two splits. Gettext entries
additionally lose their format placeholders (%s, %1$d, %(name)s, {0}, ${var}) and
accelerator markers (_File, &File).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from moenas.arch.checks import read_text
from moenas.arch.errors import UserError

Pair = tuple[str, str]
T = TypeVar("T")
DEFAULT_LOCALE_DIR = "/usr/share/locale/de/LC_MESSAGES"
CLEANING_VERSION = 1  # bump when cleaning changes, so fingerprints (and cached tokenizers) change
MO_MAGIC = 0x950412DE


@dataclass(frozen=True)
class Corpus:
    """Train / valid / test pairs and where they came from.

    fingerprint: 16 hex chars over the inputs (file names, sizes, SHA-256s) and the cleaning
    settings; the tokenizer cache and checkpoints key on it. ``info`` records the counts and
    the input files for metadata."""

    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]
    fingerprint: str
    source: str
    src_lang: str = "en"
    tgt_lang: str = "de"
    info: dict = field(default_factory=dict, compare=False)

    def texts(self) -> Iterable[str]:
        """Every training sentence, both sides (what the tokenizer learns from)."""
        for s, t in self.train:
            yield s
            yield t

    def summary(self) -> dict:
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
        }


# ---- the .mo binary format ---------------------------------------------------------------------
def read_mo(path: str | Path) -> list[Pair]:
    """(msgid, msgstr) pairs of one compiled gettext catalog, header and untranslated skipped.

    Format (GNU gettext manual, "The Format of GNU MO Files"): magic, revision, N, offset of
    the original-strings table, offset of the translations table; each table holds N
    (length, offset) pairs. A msgid may carry a context ("ctx\\x04msgid") and a plural
    ("msgid\\x00msgid_plural"); a plural msgstr is "form0\\x00form1...". Contexts are dropped;
    msgid pairs with form 0, msgid_plural with form 1."""
    p = Path(path)
    data = p.read_bytes()
    if len(data) < 20:
        raise UserError(f"{p}: not a gettext .mo file (too short)")
    for order in ("<", ">"):
        if struct.unpack(order + "I", data[:4])[0] == MO_MAGIC:
            break
    else:
        raise UserError(f"{p}: not a gettext .mo file (bad magic number)")
    _rev, n, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])

    def entry(table: int, i: int) -> bytes:
        length, off = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
        if off + length > len(data):
            raise UserError(f"{p}: corrupt .mo file (string {i} runs past the end)")
        return data[off : off + length]

    if max(orig_off, trans_off) + 8 * n > len(data):
        raise UserError(f"{p}: corrupt .mo file (string tables run past the end)")
    raw = [(entry(orig_off, i), entry(trans_off, i)) for i in range(n)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            m = re.search(rb"charset=([A-Za-z0-9_.:-]+)", msgstr)
            if m:
                charset = m.group(1).decode("ascii")
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    out: list[Pair] = []
    for msgid, msgstr in raw:
        if not msgid or not msgstr:
            continue
        try:
            src, tgt = msgid.decode(charset), msgstr.decode(charset)
        except UnicodeDecodeError:
            continue
        src = src.split("\x04", 1)[-1]
        srcs, tgts = src.split("\x00"), tgt.split("\x00")
        out.append((srcs[0], tgts[0]))
        if len(srcs) > 1 and len(tgts) > 1:
            out.append((srcs[1], tgts[1]))
    return out


# ---- cleaning ----------------------------------------------------------------------------------
_PRINTF = re.compile(
    r"%(?:\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|Z|t)?[diouxXeEfFgGaAcspnmC%]"
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGrsac]"
    r"|%<PRI[a-zA-Z0-9]+>"
)
_BRACES = re.compile(r"\$\{[^}\s]*\}|\{[A-Za-z0-9_.:!]*\}")
_ENTITY = re.compile(r"&(?:amp|lt|gt|quot|apos|nbsp);")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&nbsp;": " "}
_ACCEL_AMP = re.compile(r"(?<![&\w])&(?=\w)")
_ACCEL_UND = re.compile(r"(?<![\w])_(?=[^\W_])")
_EMPTY_QUOTES = re.compile(r"'\s?'|\"\s?\"|`\s?'|``|“\s?”|„\s?“|‘\s?’|‚\s?‘|«\s?»|»\s?«|\(\s*\)|\[\s*\]|<\s*>")
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"[^\W\d_]")


def normalize_space(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def clean_message(text: str) -> str:
    """One gettext message -> plain text: placeholders and accelerators out, whitespace
    collapsed, quotes left empty by a removed placeholder removed."""
    text = _PRINTF.sub(lambda m: "%" if m.group(0) == "%%" else " ", text)
    text = _BRACES.sub(" ", text)
    text = _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text)
    text = _ACCEL_AMP.sub("", text)
    text = _ACCEL_UND.sub("", text)
    text = text.replace("\\n", " ").replace("\\t", " ")
    text = normalize_space(text)
    text = _EMPTY_QUOTES.sub("", text)
    text = re.sub(r"\s+([,.:;!?])", r"\1", normalize_space(text))
    text = re.sub(r"^[\s,.:;]+", "", text)
    return normalize_space(text)


def filter_pairs(
    pairs: Iterable[Pair], max_words: int = 80, max_ratio: float = 3.0, max_chars: int | None = None
) -> tuple[list[Pair], dict]:
    """Whitespace-normalise, drop bad pairs, de-duplicate by source. Returns (pairs, counts of
    what was dropped and why)."""
    out: list[Pair] = []
    seen: set[str] = set()
    dropped = {"empty": 0, "identical": 0, "no_letters": 0, "too_long": 0, "ratio": 0, "duplicate": 0}
    for s, t in pairs:
        s, t = normalize_space(s), normalize_space(t)
        if not s or not t:
            dropped["empty"] += 1
            continue
        if s.casefold() == t.casefold():
            dropped["identical"] += 1
            continue
        if not _LETTER.search(s) or not _LETTER.search(t):
            dropped["no_letters"] += 1
            continue
        ns, nt = len(s.split()), len(t.split())
        if ns > max_words or nt > max_words or (max_chars and max(len(s), len(t)) > max_chars):
            dropped["too_long"] += 1
            continue
        if max(ns, nt) > max_ratio * min(ns, nt) and max(ns, nt) > 3:
            dropped["ratio"] += 1
            continue
        if s in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(s)
        out.append((s, t))
    return out, dropped


def split_pairs(
    pairs: Sequence[Pair], valid_frac: float = 0.05, test_frac: float = 0.05, min_eval: int = 1, max_eval: int = 2000
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Deterministic train/valid/test split by the source sentence (:func:`split_by_hash`)."""
    return split_by_hash(pairs, lambda p: p[0], valid_frac, test_frac, min_eval, max_eval, "pairs")


def split_by_hash(
    items: Sequence[T],
    key: Callable[[T], str],
    valid_frac: float = 0.05,
    test_frac: float = 0.05,
    min_eval: int = 1,
    max_eval: int = 2000,
    what: str = "items",
) -> tuple[list[T], list[T], list[T]]:
    """Deterministic train/valid/test split: order by SHA-1 of ``key(item)``, take the first
    n_valid as valid, the next n_test as test. Independent of input order and of the machine;
    n = clamp(frac * N, min_eval, max_eval)."""
    n = len(items)
    ordered = sorted(items, key=lambda it: hashlib.sha1(key(it).encode()).digest())
    nv = min(max(int(valid_frac * n), min_eval), max_eval) if valid_frac > 0 else 0
    nt = min(max(int(test_frac * n), min_eval), max_eval) if test_frac > 0 else 0
    if nv + nt >= n:
        raise UserError(f"{n} {what} are too few to split into train/valid/test")
    return ordered[nv + nt :], ordered[:nv], ordered[nv : nv + nt]


def inputs_fingerprint(items: Iterable[tuple[str, int, str]], settings: dict) -> str:
    h = hashlib.sha256()
    for name, size, digest in items:
        h.update(f"{name}\t{size}\t{digest}\n".encode())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- line-aligned parallel files ------------------------------------------------------------------
def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[Pair]:
    """Line-aligned source/target files -> pairs (raw; filter with :func:`filter_pairs`)."""
    sp, tp = Path(src_path), Path(tgt_path)
    for p in (sp, tp):
        if not p.is_file():
            raise UserError(f"{p}: no such file")
    src, tgt = _read_lines(sp), _read_lines(tp)
    if not src or not any(line.strip() for line in src):
        raise UserError(f"{sp}: the file is empty")
    if not tgt or not any(line.strip() for line in tgt):
        raise UserError(f"{tp}: the file is empty")
    if len(src) != len(tgt):
        raise UserError(f"{sp} has {len(src)} lines but {tp} has {len(tgt)}: parallel files must be line-aligned")
    return list(zip(src, tgt))


def _read_lines(p: Path) -> list[str]:
    return read_text(p).splitlines()


def _find_split(d: Path, names: Sequence[str], src_lang: str, tgt_lang: str) -> tuple[Path, Path] | None:
    for name in names:
        s, t = d / f"{name}.{src_lang}", d / f"{name}.{tgt_lang}"
        if s.exists() or t.exists():
            if not (s.is_file() and t.is_file()):
                missing = t if s.exists() else s
                raise UserError(f"{missing}: missing (its partner {s if missing is t else t} exists)")
            return s, t
    return None


def load_parallel_dir(
    directory: str | Path,
    src_lang: str = "en",
    tgt_lang: str = "de",
    max_words: int = 80,
    max_ratio: float = 3.0,
    min_pairs: int = 20,
    valid_frac: float = 0.05,
    test_frac: float = 0.05,
) -> Corpus:
    """``DIR/train.{src,tgt}`` (required), ``DIR/{valid,dev}.*`` and ``DIR/test.*`` (optional;
    cut from train when absent), cleaned with :func:`filter_pairs`."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such corpus directory (expected train.{src_lang} and train.{tgt_lang} inside)")
    train_files = _find_split(d, ["train"], src_lang, tgt_lang)
    if train_files is None:
        raise UserError(f"{d}: no train.{src_lang}/train.{tgt_lang} pair found")
    valid_files = _find_split(d, ["valid", "dev"], src_lang, tgt_lang)
    test_files = _find_split(d, ["test"], src_lang, tgt_lang)
    used = [f for fs in (train_files, valid_files, test_files) if fs for f in fs]
    settings = {
        "kind": "parallel",
        "max_words": max_words,
        "max_ratio": max_ratio,
        "valid_frac": valid_frac,
        "test_frac": test_frac,
        "cleaning": CLEANING_VERSION,
    }
    fp = inputs_fingerprint(((f.name, f.stat().st_size, file_sha256(f)) for f in used), settings)
    train, dropped = filter_pairs(read_parallel(*train_files), max_words, max_ratio)
    if valid_files is None or test_files is None:
        if len(train) < min_pairs:
            raise UserError(
                f"{d}: only {len(train)} usable training pairs after cleaning (at least {min_pairs} needed)"
            )
        train, cut_valid, cut_test = split_pairs(
            train, valid_frac if valid_files is None else 0, test_frac if test_files is None else 0
        )
    valid = filter_pairs(read_parallel(*valid_files), max_words, max_ratio)[0] if valid_files else cut_valid
    test = filter_pairs(read_parallel(*test_files), max_words, max_ratio)[0] if test_files else cut_test
    if len(train) < min_pairs:
        raise UserError(f"{d}: only {len(train)} usable training pairs after cleaning (at least {min_pairs} needed)")
    if not valid:
        raise UserError(f"{d}: no usable validation pairs")
    info = {"files": [str(f) for f in used], "dropped": dropped}
    return Corpus(train, valid, test, fp, str(d), src_lang, tgt_lang, info)


# ---- the embedded gettext corpus ----------------------------------------------------------------
def gettext_catalogs(locale_dir: str | Path = DEFAULT_LOCALE_DIR) -> list[Path]:
    """The .mo files in ``locale_dir``, symlinks to files already listed dropped, sorted."""
    d = Path(locale_dir)
    if not d.is_dir():
        return []
    seen: set[Path] = set()
    out = []
    for p in sorted(d.glob("*.mo")):
        real = p.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        out.append(p)
    return out


def load_gettext_corpus(
    locale_dir: str | Path | None = None,
    max_words: int = 40,
    max_chars: int = 300,
    max_ratio: float = 3.0,
    min_pairs: int = 1000,
    valid_frac: float = 0.03,
    test_frac: float = 0.03,
    max_eval: int = 1000,
) -> Corpus:
    """English->German pairs from the installed gettext catalogs (see the module docstring).

    ``locale_dir`` defaults to $MOENAS_LOCALE_DIR or /usr/share/locale/de/LC_MESSAGES."""
    d = Path(locale_dir or os.environ.get("MOENAS_LOCALE_DIR") or DEFAULT_LOCALE_DIR)
    files = gettext_catalogs(d)
    settings = {
        "kind": "gettext",
        "max_words": max_words,
        "max_chars": max_chars,
        "max_ratio": max_ratio,
        "valid_frac": valid_frac,
        "test_frac": test_frac,
        "max_eval": max_eval,
        "cleaning": CLEANING_VERSION,
    }
    items = []
    raw: list[Pair] = []
    bad: list[str] = []
    for f in files:
        items.append((f.name, f.stat().st_size, file_sha256(f)))
        try:
            raw += [(clean_message(s), clean_message(t)) for s, t in read_mo(f)]
        except UserError:
            bad.append(f.name)
    fp = inputs_fingerprint(items, settings)
    pairs, dropped = filter_pairs(raw, max_words, max_ratio, max_chars)
    if len(pairs) < min_pairs:
        raise UserError(
            f"the default corpus needs at least {min_pairs} English-German pairs but {d} gave {len(pairs)} "
            f"(from {len(files)} .mo files); install German translations (e.g. the 'locales' and "
            f"language packs) or pass --corpus DIR with train.en/train.de"
        )
    train, valid, test = split_pairs(pairs, valid_frac, test_frac, max_eval=max_eval)
    info = {
        "locale_dir": str(d),
        "files": len(files),
        "bytes": sum(i[1] for i in items),
        "raw_pairs": len(raw),
        "unreadable": bad,
        "dropped": dropped,
    }
    return Corpus(train, valid, test, fp, f"gettext:{d}", "en", "de", info)


# ---- the shipped demo corpus ----------------------------------------------------------------------
# data/corpora/gettext-en-de.tsv.xz: the cleaned pairs, one "split<TAB>source<TAB>target" line each,
# built once from one Debian machine's German catalogs (data/build_corpus.py), with its SHA-256,
# counts and source packages in gettext-en-de.json and their licences in data/corpora/NOTICE.
# Why shipped: read on the fly, the corpus was whatever catalogs the host had (86 on one machine,
# none on a slim image), so tokenizer, BLEU and checkpoints differed from machine to machine.
CORPORA_DIR = Path(__file__).parent / "corpora"
NAME = "gettext-en-de"
SPLITS = ("train", "valid", "test")


def data_path(name: str = NAME) -> Path:
    return CORPORA_DIR / f"{name}.tsv.xz"


def manifest_path(name: str = NAME) -> Path:
    return CORPORA_DIR / f"{name}.json"


# ---- reading -------------------------------------------------------------------------------------
def load_shipped_corpus(name: str = NAME) -> Corpus:
    """The shipped corpus, its bytes checked against the stored SHA-256 (UserError if damaged)."""
    path = data_path(name)
    manifest, blob, digest = read_shipped(path, manifest_path(name), name)
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for line in lzma.decompress(blob).decode("utf-8").splitlines():
        split, src, tgt = line.split("\t")
        splits[split].append((src, tgt))
    fp = inputs_fingerprint([(path.name, len(blob), digest)], {"kind": "shipped", "cleaning": manifest.get("cleaning")})
    info = {
        "file": str(path),
        "sha256": digest,
        "packages": len(manifest.get("packages", [])),
        "built_from": manifest.get("built_from"),
    }
    return Corpus(splits["train"], splits["valid"], splits["test"], fp, f"shipped:{name}", "en", "de", info)


def read_shipped(path: Path, mpath: Path, name: str) -> tuple[dict, bytes, str]:
    """(manifest, compressed bytes, their SHA-256) of a shipped corpus; one-line UserError when
    a file cannot be read or the bytes are not the ones the manifest stores."""
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        blob = path.read_bytes()
    except (OSError, ValueError) as e:
        raise UserError(
            f"{mpath.parent}: the shipped corpus {name!r} cannot be read ({type(e).__name__}); "
            "restore data/corpora/ from git"
        ) from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest.get("sha256"):
        raise UserError(
            f"{path}: damaged (SHA-256 {digest[:12]}... is not the stored {str(manifest.get('sha256'))[:12]}...); "
            "restore it from git"
        )
    return manifest, blob, digest


def load_corpus(spec: str | Path = "default", **kwargs) -> Corpus:
    """``"default"`` -> the shipped demo corpus (the same on every machine); ``"gettext"`` or
    ``"gettext:DIR"`` -> built from this machine's catalogs (:func:`load_gettext_corpus`); a
    directory -> :func:`load_parallel_dir`."""
    spec = check_corpus_spec(spec)
    if spec == "default":
        return load_shipped_corpus()
    if spec == "gettext" or spec.startswith("gettext:"):
        return load_gettext_corpus(spec.partition(":")[2] or None, **kwargs)
    return load_parallel_dir(spec, **kwargs)


def check_corpus_spec(spec: str | Path) -> str:
    """``spec`` as a string when it names a corpus (before any work); a one-line UserError for
    an unknown value or a ``gettext:DIR`` without catalogs."""
    spec = str(spec)
    if spec in ("default", "gettext"):
        return spec
    if spec.startswith("gettext:"):
        d = spec.partition(":")[2]
        if not gettext_catalogs(d):
            raise UserError(f"--corpus {spec}: no gettext catalogs (*.mo) in {d or 'an empty path'}")
        return spec
    if not Path(spec).is_dir():
        raise UserError(f"--corpus {spec}: not 'default', 'gettext[:DIR]' or a directory with train.en/train.de")
    return spec
