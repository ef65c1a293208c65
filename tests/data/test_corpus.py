"""Corpora: the .mo reader, gettext cleaning, parallel files, splits, fingerprints, bad input."""

import json
import os
from pathlib import Path

import pytest
from toy_corpus import synthetic_pairs, write_mo, write_parallel_dir

from moenas.arch import UserError
from moenas.data.corpus import (
    clean_message,
    filter_pairs,
    load_corpus,
    load_gettext_corpus,
    load_parallel_dir,
    read_mo,
    split_pairs,
)

# Entries chosen for the cleaning rules; each comment names the rule it exercises.
ENTRIES = [
    ("cannot open '%s': %s", "kann »%s« nicht öffnen: %s"),  # printf placeholders + emptied quotes
    ("%(count)d files in {0}", "%(count)d Dateien in {0}"),  # python-named and brace placeholders
    ("Save _As...", "Speichern _unter..."),  # GTK accelerator
    ("&Open", "&Öffnen"),  # Qt/KDE accelerator (mid-word & is kept: AT&T)
    ("menu\x04Quit", "Beenden"),  # msgctxt is dropped
    ("one file\x00%d files", "eine Datei\x00%d Dateien"),  # plural: both forms become pairs
    ("Linux", "Linux"),  # identical -> dropped
    ("%s: %s", "%s: %s"),  # nothing left -> dropped
    ("untranslated", ""),  # empty msgstr -> skipped
    ("word " * 60, "Wort " * 60),  # too long -> dropped
    ("100%% done", "100%% erledigt"),  # literal percent kept
]


def make_locale(tmp_path: Path, n_filler: int = 0, name: str = "app.mo") -> Path:
    d = tmp_path / "LC_MESSAGES"
    d.mkdir(exist_ok=True)
    filler = [(s, t) for s, t in synthetic_pairs(n_filler, seed=3)]
    write_mo(d / name, ENTRIES + filler)
    return d


def test_read_mo_round_trips_plural_and_context(tmp_path):
    p = write_mo(tmp_path / "x.mo", [("a\x04b", "B"), ("one\x00many", "eins\x00viele"), ("x", "")])
    assert sorted(read_mo(p)) == [("b", "B"), ("many", "viele"), ("one", "eins")]


@pytest.mark.parametrize(
    "blob", [b"", b"\x00" * 40, b"\xde\x12\x04\x95" + b"\xff" * 16]
)  # empty, bad magic, bad tables
def test_read_mo_rejects_garbage(tmp_path, blob):
    p = tmp_path / "bad.mo"
    p.write_bytes(blob)
    with pytest.raises(UserError, match="mo file"):
        read_mo(p)


def test_clean_message_rules():
    assert clean_message("cannot open '%s': %s") == "cannot open:"
    assert clean_message("%(count)d files in {0}") == "files in"
    assert clean_message("Save _As...") == "Save As..."
    assert clean_message("&Open and R&amp;D") == "Open and R&D"
    assert clean_message("file_name stays") == "file_name stays"
    assert clean_message("100%% done %1$lu") == "100% done"
    assert clean_message("line one\nline   two") == "line one line two"


def test_gettext_corpus_cleans_and_fingerprints(tmp_path):
    d = make_locale(tmp_path, n_filler=60)
    os.symlink(d / "app.mo", d / "alias.mo")  # a symlinked catalog is read once
    c = load_gettext_corpus(d, min_pairs=20)
    pairs = dict(c.train + c.valid + c.test)
    assert pairs["Save As..."] == "Speichern unter..."
    assert pairs["Open"] == "Öffnen"
    assert pairs["Quit"] == "Beenden"
    assert pairs["one file"] == "eine Datei" and pairs["files"] == "Dateien"
    assert pairs["100% done"] == "100% erledigt"
    assert "Linux" not in pairs and "untranslated" not in pairs
    assert not any(len(s.split()) > 40 for s in pairs)
    assert not any("%s" in s or "{0}" in s for s in pairs)
    assert c.info["files"] == 1 and c.info["dropped"]["identical"] >= 1
    assert len(c.fingerprint) == 16 and c.fingerprint == load_gettext_corpus(d, min_pairs=20).fingerprint
    # splits are disjoint by source sentence
    srcs = [set(s for s, _ in split) for split in (c.train, c.valid, c.test)]
    assert not (srcs[0] & srcs[1]) and not (srcs[0] & srcs[2]) and not (srcs[1] & srcs[2])
    # a changed catalog changes the fingerprint
    write_mo(d / "app.mo", ENTRIES + synthetic_pairs(61, seed=3))
    assert load_gettext_corpus(d, min_pairs=20).fingerprint != c.fingerprint


def test_gettext_corpus_too_small_is_a_clear_error(tmp_path):
    d = make_locale(tmp_path)
    with pytest.raises(UserError, match="at least 1000 English-German pairs.*--corpus DIR"):
        load_gettext_corpus(d)
    with pytest.raises(UserError, match="gave 0"):
        load_gettext_corpus(tmp_path / "nowhere")


# the shipped corpus: counts and fingerprint are the same on every machine, whatever its locales
SHIPPED_COUNTS = (39328, 1000, 1000)
SHIPPED_FINGERPRINT = "be6629b87313ae2f"


@pytest.mark.parametrize("locales", ["empty", "missing"])
def test_default_corpus_is_the_shipped_one_without_any_host_catalog(tmp_path, monkeypatch, locales):
    d = tmp_path / "locale"
    if locales == "empty":
        d.mkdir()
    monkeypatch.setenv("MOENAS_LOCALE_DIR", str(d))
    c = load_corpus("default")
    assert (len(c.train), len(c.valid), len(c.test)) == SHIPPED_COUNTS
    assert c.fingerprint == SHIPPED_FINGERPRINT and c.source == "shipped:gettext-en-de"
    srcs = [set(s for s, _ in split) for split in (c.train, c.valid, c.test)]
    assert not (srcs[0] & srcs[1]) and not (srcs[0] & srcs[2]) and not (srcs[1] & srcs[2])
    assert ("alignment", "Ausrichtung") in c.test


def test_the_shipped_corpus_names_its_sources_and_their_licences():
    from moenas.data.corpus import CORPORA_DIR, manifest_path

    m = json.loads(manifest_path().read_text())
    notice = (CORPORA_DIR / "NOTICE").read_text()
    assert m["pairs"] == dict(zip(("train", "valid", "test"), SHIPPED_COUNTS))
    assert "NOT distributed under the moenas licence" in notice
    for p in m["packages"]:
        assert p["version"] and p["licenses"] and f"{p['package']} | {p['version']} |" in notice


def test_a_damaged_shipped_corpus_is_one_line(tmp_path, monkeypatch):
    import moenas.data.corpus as corpus

    for name in ("gettext-en-de.tsv.xz", "gettext-en-de.json"):
        (tmp_path / name).write_bytes((corpus.CORPORA_DIR / name).read_bytes())
    blob = bytearray((tmp_path / "gettext-en-de.tsv.xz").read_bytes())
    blob[100] ^= 0xFF
    (tmp_path / "gettext-en-de.tsv.xz").write_bytes(bytes(blob))
    monkeypatch.setattr(corpus, "CORPORA_DIR", tmp_path)
    with pytest.raises(UserError, match="damaged.*restore it from git"):
        load_corpus("default")


def test_corpus_specs_gettext_and_bad_values(tmp_path):
    d = make_locale(tmp_path, n_filler=1200)
    c = load_corpus(f"gettext:{d}")
    assert c.source == f"gettext:{d}" and len(c.train) > 1000
    with pytest.raises(UserError, match="no gettext catalogs"):
        load_corpus(f"gettext:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="not 'default', 'gettext"):
        load_corpus("defualt")


def test_filter_pairs_dedupes_and_limits():
    pairs = [
        ("a b", "c d"),
        ("a b", "x y"),
        ("", "x"),
        ("same", "Same"),
        ("w " * 90, "v " * 90),
        ("one", "eins zwei drei vier fünf"),
    ]
    out, dropped = filter_pairs(pairs, max_words=80, max_ratio=3.0)
    assert out == [("a b", "c d")]
    assert dropped == {"empty": 1, "identical": 1, "no_letters": 0, "too_long": 1, "ratio": 1, "duplicate": 1}


def test_split_is_deterministic_and_order_independent():
    pairs = synthetic_pairs(200)
    a = split_pairs(pairs)
    b = split_pairs(list(reversed(pairs)))
    assert a == b and len(a[1]) == 10 and len(a[2]) == 10 and len(a[0]) == 180


def test_parallel_dir_with_and_without_splits(tmp_path):
    pairs = synthetic_pairs(300)
    d1 = write_parallel_dir(tmp_path / "one", pairs)
    c1 = load_parallel_dir(d1)
    assert len(c1.train) + len(c1.valid) + len(c1.test) == 300 and c1.valid and c1.test
    d2 = write_parallel_dir(tmp_path / "three", pairs[:250], pairs[250:280], pairs[280:])
    c2 = load_corpus(d2)
    assert (len(c2.train), len(c2.valid), len(c2.test)) == (250, 30, 20)
    assert c1.fingerprint != c2.fingerprint
    (d2 / "valid.en").rename(d2 / "dev.en")
    (d2 / "valid.de").rename(d2 / "dev.de")
    assert len(load_corpus(d2).valid) == 30


def test_parallel_dir_bad_input(tmp_path):
    pairs = synthetic_pairs(50)
    d = write_parallel_dir(tmp_path / "c", pairs)
    (d / "train.de").write_text("".join(t + "\n" for _, t in pairs[:-1]))
    with pytest.raises(UserError, match="has 50 lines but .* has 49"):
        load_parallel_dir(d)
    (d / "train.de").write_text("")
    with pytest.raises(UserError, match="train.de: the file is empty"):
        load_parallel_dir(d)
    (d / "train.de").unlink()
    with pytest.raises(UserError, match="train.de: missing"):
        load_parallel_dir(d)
    with pytest.raises(UserError, match="no such corpus directory"):
        load_parallel_dir(tmp_path / "absent")
    e = write_parallel_dir(tmp_path / "tiny", pairs[:5])
    with pytest.raises(UserError, match="only 5 usable training pairs"):
        load_parallel_dir(e)
    (e / "train.en").write_bytes(b"\xff\xfe bad\n" * 5)
    with pytest.raises(UserError, match="not UTF-8"):
        load_parallel_dir(e)
