"""Supernet training of decoder-only language models: extracted CausalLMs compute what the
supernet computes (slice and MoS), the token stream and its blocks, exact resume, perplexity =
exp(mean token NLL) checked against an independent computation, checkpoints that name their
family, and `moenas train` on a language-model space (bad corpora are one line)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from micro_spaces import micro_lm
from supernets import perturbed
from toy_corpus import synthetic_pairs, write_parallel_dir
from toy_text import toy_paragraphs, write_text_dir

from moenas.arch import LMSearchSpace, UserError
from moenas.arch.family import DECODER_ONLY
from moenas.arch.lm_model import CausalLM, build_lm_model
from moenas.arch.model import EOS
from moenas.cli import main
from moenas.data.batching import BlockStream, cut_blocks, fixed_block_batches, token_stream
from moenas.search.checkpoint import (
    lm_validation_data,
    load_model,
    load_supernet,
    model_for_arch,
    read_checkpoint,
    validation_data,
)
from moenas.search.evaluation import lm_validation
from moenas.search.supernet import LMSuperNet, SupernetConfig, build_supernet, extract, inherited_state_dict
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

# Every gene of an LM space at micro size: 2 widths, 1-2 layers, 1-3 experts of 2 sizes, top-1/2.
MICRO_LM = micro_lm()
SPACE = LMSearchSpace.from_dict(MICRO_LM)
ARCHS = [SPACE.largest(), SPACE.smallest()] + SPACE.sample_n(8, seed=7)
KINDS = [
    ("slice", "layer", "copy"),
    ("mos", "layer", "copy"),
    ("mos", "neuron", "copy"),
    ("mos", "layer", "independent"),
]


def quiet(msg):
    pass


def ids(seed=0, shape=(3, 10)):
    return torch.randint(4, 128, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind,mode,init", KINDS)
def test_extracted_causal_lm_matches_supernet(kind, mode, init):
    net = perturbed(SPACE, kind, mode, init)
    assert isinstance(net, LMSuperNet)
    x = ids()
    for arch in ARCHS:
        sub = extract(net, arch)
        ref = build_lm_model(arch)
        assert type(sub) is CausalLM
        assert {k: v.shape for k, v in inherited_state_dict(net, arch).items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }
        torch.testing.assert_close(net(x, arch), sub(x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(net.aux_loss, sub.aux_loss())
        assert net.expert_counts() == sub.expert_counts()
        for a, b in zip(net(x, arch, hidden=True), sub(x, hidden=True)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert sub.generate(x[:1], 3).shape == (1, 3)  # cached decoding on inherited weights


def test_lm_supernet_slices_and_one_mos_bank():
    net = build_supernet(SPACE)
    small = SPACE.smallest()  # one layer, dense 16-wide FFN, width 16
    net(ids(), small).sum().backward()
    emb = net.w("embed.weight").grad
    assert emb[:, 16:].abs().sum() == 0 and emb[4:, :16].abs().sum() > 0
    fc1 = net.w("layers.0.ffn.experts.0.fc1.weight").grad
    assert fc1[16:].abs().sum() == 0 and fc1[:, 16:].abs().sum() == 0
    assert net.w("layers.1.attn.q_proj.weight").grad is None  # a layer the arch does not have
    one = build_supernet(SPACE, "mos", mos_experts=1).eval()
    plain = build_supernet(SPACE).eval()
    for arch in ARCHS[:4]:  # one bank mixes to itself: MoS with m = 1 is the slice supernet
        torch.testing.assert_close(one(ids(), arch), plain(ids(), arch))
    cfg = SupernetConfig.for_space(SPACE, kind="mos")
    assert (
        cfg.family is DECODER_ONLY and LMSearchSpace.from_dict(SupernetConfig.from_dict(cfg.to_dict()).space) == SPACE
    )


class _Tok:
    def encode_batch(self, texts):
        return [[4 + len(w) for w in t.split()] for t in texts]


def test_token_stream_blocks_and_block_stream():
    stream = token_stream(_Tok(), ["a bb", "ccc"])
    assert stream.tolist() == [5, 6, EOS, 7, EOS]  # EOS ends every document
    s = torch.arange(23)
    blocks = cut_blocks(s, 5)  # (23 - 1) // 5 = 4 blocks of 5 inputs + the next token
    assert blocks.shape == (4, 6) and blocks[1].tolist() == list(range(5, 11))
    assert torch.equal(blocks[:-1, -1], blocks[1:, 0])  # neighbours share one token
    batches = fixed_block_batches(blocks, 10)  # 2 blocks per batch
    assert [b.ids.shape for b in batches] == [(2, 5), (2, 5)] and torch.equal(batches[0].target, blocks[:2, 1:])
    big = cut_blocks(torch.arange(400), 4)  # 99 blocks, 3 a batch: 33 batches an epoch
    stream = BlockStream(big, 12, seed=3)
    seen = torch.cat([next(stream).ids for _ in range(33)])
    assert sorted(seen[:, 0].tolist()) == list(range(0, 396, 4))  # every block once an epoch, shuffled
    assert stream.state_dict() == {"epoch": 0, "index": 33}
    later = [next(stream).ids for _ in range(3)]  # the next epoch's order differs
    again = BlockStream(big, 12, seed=3)
    again.load_state_dict({"epoch": 0, "index": 33})
    assert all(torch.equal(x, next(again).ids) for x in later) and not torch.equal(later[0], seen[:3])
    halves = [set(torch.cat([next(BlockStream(big, 12, seed=3, rank=r, world=2)).ids[:, 0]]).tolist()) for r in (0, 1)]
    assert not halves[0] & halves[1]  # the ranks read different blocks
    with pytest.raises(UserError, match="below the block length"):
        BlockStream(big, 3)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The micro space's YAML, a toy text corpus of 300 paragraphs and a tokenizer cache."""
    root = tmp_path_factory.mktemp("lm")
    (root / "lm-micro.yaml").write_text(yaml.safe_dump(MICRO_LM))
    return {
        "space": str(root / "lm-micro.yaml"),
        "cache": str(root / "cache"),
        "corpus": str(write_text_dir(root / "text", toy_paragraphs(300, seed=1))),
    }


def cfg(env, **kw):
    """Micro-scale settings: 4 blocks of 16 tokens a batch, 12 validation blocks."""
    return TrainConfig(
        **{
            "space": env["space"],
            "corpus": env["corpus"],
            "cache_dir": env["cache"],
            "steps": 6,
            "max_tokens": 64,
            "block_len": 16,
            "warmup": 2,
            "lr": 3e-3,
            "valid_sentences": 12,
            "progress": False,
            "device": "cpu",
            **kw,
        }
    )


@pytest.mark.parametrize("kind,sampling", [("slice", "uniform"), ("mos", "sandwich")])
def test_lm_resume_is_exact(env, tmp_path, kind, sampling):
    kw = dict(supernet=kind, sampling=sampling, dropout=0.1, eval_every=3, sandwich_random=1)
    straight = tmp_path / "straight.pt"
    train(cfg(env, steps=6, **kw), straight, log=quiet)
    split = tmp_path / "split.pt"
    train(cfg(env, steps=3, **kw), split, log=quiet)
    meta = train(cfg(env, steps=6, **kw), split, resume=True, log=quiet)
    assert meta["steps"] == 6 and meta["family"] == "decoder-only"
    a, b = read_checkpoint(straight), read_checkpoint(split)
    assert a["family"] == "decoder-only" and a["data"] == b["data"] and a["sampler"] == b["sampler"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(st[n], b["optimizer"]["state"][k][n]) for n in st)
    assert a["meta"]["history"] == b["meta"]["history"]
    assert a["train_config"]["label_smoothing"] == 0.0  # off for a language model unless set


def test_perplexity_is_exp_of_mean_token_nll(env, tmp_path):
    out = tmp_path / "p.pt"
    meta = train(cfg(env, steps=8, eval_every=8, dropout=0.0), out, log=quiet)
    last = {r["arch"]: r for r in meta["history"] if r["step"] == 8}
    first = {r["arch"]: r for r in meta["history"] if r["step"] == 0}
    net, m = load_supernet(out, family=DECODER_ONLY)
    blocks = lm_validation_data(m)
    assert blocks.shape == (12, 17)
    for name, arch in (("largest", SPACE.largest()), ("smallest", SPACE.smallest())):
        model = extract(net, arch)
        with torch.no_grad():
            logits = model(blocks[:, :-1])  # the whole validation set in one unfused pass
        nll = F.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten(), reduction="sum") / blocks[:, 1:].numel()
        assert last[name]["val_ppl"] == pytest.approx(math.exp(float(nll)), rel=1e-4)
        assert last[name]["val_loss"] == pytest.approx(float(nll), abs=1e-4)
        assert last[name]["val_loss"] < first[name]["val_loss"]  # it learned something in 8 steps
        value, tokens = lm_validation(model, blocks)
        assert tokens == 12 * 16 and value == pytest.approx(float(nll), abs=1e-5)
        assert lm_validation(net.set_arch(arch), blocks) == (pytest.approx(value, abs=1e-5), tokens)  # the supernet


def test_checkpoints_name_their_family(env, tmp_path):
    lm = tmp_path / "lm.pt"
    train(cfg(env, steps=1), lm, log=quiet)
    arch = SPACE.sample(1)
    standalone = tmp_path / "one.pt"
    m = train(cfg(env, steps=1, arch=arch.to_json(), init_from=str(lm)), standalone, log=quiet)
    assert m["kind"] == "standalone" and m["family"] == "decoder-only"
    assert load_model(standalone, family=DECODER_ONLY)[0].arch == arch
    fresh = train(cfg(env, steps=1, arch=arch.to_json()), tmp_path / "fresh.pt", log=quiet)  # a new CausalLM
    assert fresh["history"][0]["val_loss"] != m["history"][0]["val_loss"]
    assert model_for_arch(lm, arch, family=DECODER_ONLY)[0].arch == arch
    tr_space = tmp_path / "micro.yaml"
    tr_space.write_text(
        yaml.safe_dump(
            {
                "name": "micro",
                "vocab_size": 97,
                "qkv_dim": 16,
                "top_k": [1],
                "encoder": {"embed_dim": 16, "layers": 1, "heads": 2, "experts": 1, "expert_sizes": 16},
                "decoder": {
                    "embed_dim": 16,
                    "layers": 1,
                    "heads": 2,
                    "cross_heads": 2,
                    "cross_span": 1,
                    "experts": 1,
                    "expert_sizes": 16,
                },
            }
        )
    )
    pairs = write_parallel_dir(tmp_path / "pairs", synthetic_pairs(120, seed=3))
    mt = tmp_path / "mt.pt"
    train(cfg(env, steps=1, space=str(tr_space), corpus=str(pairs), max_tokens=256, bleu_sentences=0), mt, log=quiet)
    assert read_checkpoint(mt)["family"] == "encoder-decoder"
    for call, match in [
        (lambda: load_supernet(lm), f"{lm}: holds a language model"),
        (lambda: load_model(standalone), "holds a language model"),
        (lambda: model_for_arch(lm, arch), "holds a language model"),
        (lambda: validation_data(load_supernet(lm, family=None)[1]), "holds a language model"),
        (lambda: load_supernet(mt, family=DECODER_ONLY), f"{mt}: holds a translation model"),
        (lambda: lm_validation_data(load_supernet(mt)[1]), "holds a translation model"),
    ]:
        with pytest.raises(UserError, match=match) as e:
            call()
        assert "\n" not in str(e.value)
    torch.save({**read_checkpoint(lm), "family": "encoder-decoder"}, tmp_path / "liar.pt")
    with pytest.raises(UserError, match="damaged checkpoint .family 'encoder-decoder' but it holds a decoder-only"):
        read_checkpoint(tmp_path / "liar.pt")


def run_cli(capsys, *argv):
    rc = main(["train", *argv, "--no-progress"])
    return rc, capsys.readouterr()


def test_cli_trains_lm_tiny(env, tmp_path, capsys):
    out = tmp_path / "lm-tiny.pt"
    rc, cap = run_cli(
        capsys,
        "--space",
        "lm-tiny",
        "--corpus",
        env["corpus"],
        "--steps",
        "2",
        "--out",
        str(out),
        "--cache",
        env["cache"],
        "--max-tokens",
        "32",
        "--block-len",
        "16",
        "--valid-sentences",
        "2",
        "--sampling",
        "uniform",
        "--json",
    )
    assert rc == 0, cap.err
    meta = json.loads(cap.out)
    assert meta["family"] == "decoder-only" and meta["space"] == "lm-tiny" and meta["steps"] == 2
    assert meta["tokenizer"].endswith("-4096.json") and meta["train_config"]["block_len"] == 16
    assert {r["arch"] for r in meta["history"]} == {"largest", "smallest"}
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-4) for r in meta["history"])
    assert "perplexity" in cap.err and "train documents" in cap.err


def test_cli_bad_text_corpus_is_one_line(env, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "a.txt").write_bytes(b"caf\xe9 " * 40)
    tiny = write_text_dir(tmp_path / "tiny", toy_paragraphs(3, seed=2), files=1)
    cases = [
        (str(empty), "no *.txt files"),
        (str(binary), "not UTF-8 text"),
        ("gettext", "a language model reads"),
        (str(tiny), "fewer than"),
    ]
    for corpus, message in cases:
        out = tmp_path / "bad.pt"
        rc, cap = run_cli(
            capsys,
            "--space",
            env["space"],
            "--corpus",
            corpus,
            "--steps",
            "2",
            "--out",
            str(out),
            "--cache",
            env["cache"],
            "--block-len",
            "64",
        )
        assert rc == 2 and cap.err.count("\n") == 1 and message in cap.err, (corpus, cap.err)
        assert not out.exists()
