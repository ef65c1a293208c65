"""The monolingual corpus: the shipped one is intact and the same everywhere; a user's directory
of text files is split deterministically; bad files give one line."""

import json
import shutil

import pytest

from moenas.arch.errors import UserError
from moenas.data import text_corpus as T
from moenas.data.build_text_corpus import build, clean, documents

PARA = "The quick brown fox jumps over the lazy dog, again and again, in paragraph {}."


def test_the_shipped_corpus_loads_with_its_stored_counts():
    c = T.load_text_corpus("default")
    m = json.loads(T.text_manifest_path().read_text())
    assert {s: len(getattr(c, s)) for s in ("train", "valid", "test")} == m["documents"]
    assert sum(map(len, c.train)) == m["chars"]["train"] > 1_000_000
    assert not set(c.train) & set(c.valid) and not set(c.valid) & set(c.test)
    assert c.fingerprint == T.load_text_corpus("default").fingerprint


def test_a_damaged_shipped_corpus_is_refused(tmp_path, monkeypatch):
    for f in (T.text_data_path(), T.text_manifest_path()):
        shutil.copy(f, tmp_path / f.name)
    blob = bytearray((tmp_path / T.text_data_path().name).read_bytes())
    blob[100] ^= 0xFF
    (tmp_path / T.text_data_path().name).write_bytes(bytes(blob))
    monkeypatch.setattr(T.corpus, "CORPORA_DIR", tmp_path)
    with pytest.raises(UserError, match="damaged"):
        T.load_shipped_text()


def _write_dir(d, n=60):
    d.mkdir()
    (d / "a.txt").write_text("\n\n".join(PARA.format(i) for i in range(n // 2)) + "\n\nshort\n")
    sub = d / "more"
    sub.mkdir()
    (sub / "b.txt").write_text("\n\n".join(PARA.format(i) for i in range(n // 2, n)))
    return d


def test_a_text_directory_splits_by_paragraph_whatever_the_file_order(tmp_path):
    c = T.load_text_corpus(_write_dir(tmp_path / "c"))
    assert len(c.train) + len(c.valid) + len(c.test) == 60 and len(c.valid) == len(c.test) == 3
    assert "short" not in c.train  # below MIN_CHARS
    c2 = T.load_text_dir(tmp_path / "c")
    assert (c.train, c.valid, c.fingerprint) == (c2.train, c2.valid, c2.fingerprint)


@pytest.mark.parametrize(
    "content, message", [(b"", "empty"), (b"   \n\n  ", "empty"), (b"caf\xe9 au lait " * 10, "not UTF-8 text")]
)
def test_a_bad_corpus_file_is_one_line(tmp_path, content, message):
    d = _write_dir(tmp_path / "c")
    (d / "bad.txt").write_bytes(content)
    with pytest.raises(UserError, match=message):
        T.load_text_corpus(d)


def test_a_directory_without_text_or_a_bad_spec_is_refused(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(UserError, match="no \\*.txt files"):
        T.load_text_corpus(tmp_path / "e")
    with pytest.raises(UserError, match="not 'default' or a directory"):
        T.load_text_corpus(tmp_path / "missing")


def test_the_builder_keeps_prose_and_drops_doctests(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pydoc_data").mkdir(parents=True)
    (lib / "test").mkdir()
    (lib / "pydoc_data" / "topics.py").write_text(f"topics = {{'b': {PARA.format('t')!r}, 'a': 'too short'}}\n")
    src = '"""' + PARA.format("module") + '\n\n>>> 1 + 1\n2\n"""\ndef f():\n    """' + PARA.format("f") + '"""\n'
    (lib / "mod.py").write_text(src)
    (lib / "test" / "skipped.py").write_text('"""' + PARA.format("test") + '"""\n')
    docs = documents(lib)
    # the doctest and its output line (too short) go, the test folder is skipped, topics by name
    assert docs == [PARA.format("module"), PARA.format("f"), PARA.format("t")]
    assert clean(">>> x = 1\n" + PARA.format(1)) == PARA.format(1)
    m = build(lib, tmp_path / "out", "toy")
    assert sum(m["documents"].values()) == len(docs) and (tmp_path / "out" / "NOTICE.toy").read_text().count("PSF")
