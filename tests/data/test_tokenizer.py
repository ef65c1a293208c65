"""BPE tokenizer (special ids, round trip, cache keyed by fingerprint + vocab) and batching."""

import os

import pytest
import torch
from toy_corpus import synthetic_pairs

from moenas.arch import UserError
from moenas.arch.model import BOS, EOS, PAD
from moenas.data.batching import BatchStream, batch_indices, collate, encode_pairs, fixed_batches
from moenas.data.corpus import Corpus
from moenas.data.tokenizer import SubwordTokenizer, get_tokenizer, tokenizer_path


@pytest.fixture(scope="module")
def corpus():
    pairs = synthetic_pairs(400)
    return Corpus(pairs[:360], pairs[360:380], pairs[380:], fingerprint="f" * 16, source="synthetic")


def test_special_ids_and_round_trip(corpus, tmp_path):
    tok = get_tokenizer(corpus, 120, tmp_path)
    assert [tok._tok.token_to_id(t) for t in ("<pad>", "<s>", "</s>", "<unk>")] == [PAD, BOS, EOS, 3]
    assert tok.vocab_size <= 120
    for s, t in corpus.valid:
        assert tok.decode(tok.encode(s)) == s and tok.decode(tok.encode(t)) == t
    assert all(i > 3 for i in tok.encode(corpus.valid[0][0]))
    assert tok.decode([BOS] + tok.encode("the file") + [EOS, PAD]) == "the file"


def test_cache_is_keyed_by_fingerprint_and_vocab(corpus, tmp_path):
    tok = get_tokenizer(corpus, 120, tmp_path)
    path = tokenizer_path(corpus.fingerprint, 120, tmp_path)
    assert tok.path == path and path.is_file()
    mtime = os.stat(path).st_mtime_ns
    again = get_tokenizer(corpus, 120, tmp_path)  # loaded, not retrained
    assert again.path == path and os.stat(path).st_mtime_ns == mtime
    assert again.encode("the red file") == tok.encode("the red file")
    assert get_tokenizer(corpus, 100, tmp_path).path != path
    other = Corpus(corpus.train[:200], corpus.valid, corpus.test, fingerprint="e" * 16, source="synthetic")
    assert get_tokenizer(other, 120, tmp_path).path != path
    assert sorted(p.name for p in (tmp_path / "tokenizers").iterdir()) == sorted(
        [f"bpe-{'e' * 16}-120.json", f"bpe-{'f' * 16}-100.json", f"bpe-{'f' * 16}-120.json"]
    )


def test_corrupt_tokenizer_file_is_a_user_error(tmp_path):
    p = tmp_path / "tok.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="not a tokenizer file"):
        SubwordTokenizer.load(p)


def test_collate_adds_bos_eos_and_pads():
    b = collate([([5, 6, 7], [8]), ([9], [10, 11])])
    assert b.src.tolist() == [[5, 6, 7, EOS], [9, EOS, PAD, PAD]]
    assert b.tgt_in.tolist() == [[BOS, 8, PAD], [BOS, 10, 11]]
    assert b.tgt_out.tolist() == [[8, EOS, PAD], [10, 11, EOS]]
    assert b.n_tokens == (4 + 2) + (2 + 3)  # non-pad source + target-output tokens


def test_batches_respect_token_budget_and_cover_each_example_once(corpus, tmp_path):
    tok = get_tokenizer(corpus, 120, tmp_path)
    ex = encode_pairs(tok, corpus.train, max_len=16)
    assert max(max(len(s), len(t)) for s, t in ex) <= 15
    idx = batch_indices(ex, max_tokens=200, seed=1, epoch=0)
    assert sorted(i for b in idx for i in b) == list(range(len(ex)))
    for b in idx:
        assert len(b) * max(max(len(ex[i][0]), len(ex[i][1])) + 1 for i in b) <= 200
    assert idx == batch_indices(ex, 200, seed=1, epoch=0) != batch_indices(ex, 200, seed=1, epoch=1)
    assert sum(b.src.shape[0] for b in fixed_batches(ex, 200)) == len(ex)


def test_stream_resumes_and_shards(corpus, tmp_path):
    tok = get_tokenizer(corpus, 120, tmp_path)
    ex = encode_pairs(tok, corpus.train, max_len=16)
    a = BatchStream(ex, 150, seed=2)
    first = [next(a).src for _ in range(len(a._epoch_batches(0)) + 3)]  # crosses an epoch boundary
    b = BatchStream(ex, 150, seed=2)
    for _ in range(5):
        next(b)
    c = BatchStream(ex, 150, seed=2)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(x, next(c).src) for x in first[5:])
    r0, r1 = BatchStream(ex, 150, seed=2, rank=0, world=2), BatchStream(ex, 150, seed=2, rank=1, world=2)
    s0, s1 = r0._epoch_batches(0), r1._epoch_batches(0)
    assert len(s0) == len(s1) and not ({i for b in s0 for i in b} & {i for b in s1 for i in b})
    with pytest.raises(UserError, match="max_tokens 4 is below"):
        BatchStream(ex, 4)
