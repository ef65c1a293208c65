"""Supernet training: loss goes down, resume is exact, checkpoints are safe to load, the
Python API (load_supernet, validation_loss), standalone training, and bad input -> one line."""

import hashlib
import json

import pytest
import torch
import yaml
from micro_spaces import micro
from toy_corpus import synthetic_pairs, write_parallel_dir

from moenas.arch import SearchSpace, UserError
from moenas.cli import main
from moenas.search.checkpoint import load_model, load_supernet, meta_path, read_checkpoint, validation_data
from moenas.search.evaluation import validation_loss
from moenas.search.train_config import TrainConfig, lr_at
from moenas.search.trainer import ArchSampler, train

MICRO = micro()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    space = root / "micro.yaml"
    space.write_text(yaml.safe_dump(MICRO))
    corpus = write_parallel_dir(root / "corpus", synthetic_pairs(700, seed=1))
    return {"root": root, "space": str(space), "corpus": str(corpus), "cache": str(root / "cache")}


def cfg(env, **kw):
    base = dict(
        space=env["space"],
        corpus=env["corpus"],
        cache_dir=env["cache"],
        steps=6,
        max_tokens=256,
        max_len=24,
        warmup=5,
        lr=3e-3,
        valid_sentences=30,
        bleu_sentences=0,
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def quiet(msg):
    pass


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_short_training_lowers_validation_loss(env, tmp_path):
    out = tmp_path / "s.pt"
    meta = train(cfg(env, steps=40, eval_every=40, dropout=0.0, bleu_sentences=8), out, log=quiet)
    start = {r["arch"]: r["val_loss"] for r in meta["history"] if r["step"] == 0}
    end = {r["arch"]: r for r in meta["history"] if r["step"] == 40}
    for name in ("largest", "smallest"):
        assert end[name]["val_loss"] < start[name] - 0.5, (name, start, end)
        assert 0 <= end[name]["bleu"] <= 100
    assert meta["steps"] == 40 and meta["tokens_per_s"] > 0 and meta["world_size"] == 1
    # the checkpoint is plain tensors/containers, and the sidecar JSON says what it holds
    ck = torch.load(out, weights_only=True)
    assert ck["step"] == 40 and ck["kind"] == "supernet"
    side = json.loads(meta_path(out).read_text())
    assert (
        side["supernet"] == "slice"
        and side["space"] == "micro"
        and side["corpus_fingerprint"] == meta["corpus_fingerprint"]
    )
    assert side["tokenizer"].endswith(f"-{MICRO['vocab_size']}.json")
    # the Python API the search uses: inherited-weight validation loss of any archs
    net, m = load_supernet(out)
    batches, pairs = validation_data(m, n_sentences=30)
    space = SearchSpace.from_dict(MICRO)
    losses = validation_loss(net, [space.largest(), space.smallest()], batches)
    assert losses == pytest.approx([end["largest"]["val_loss"], end["smallest"]["val_loss"]], abs=1e-4)
    archs = space.sample_n(3, seed=5)
    again = validation_loss(net, archs, batches)
    assert again == validation_loss(net, archs, batches) and all(0 < x < 10 for x in again)


@pytest.mark.parametrize(
    "kind,sampling,every", [("mos", "sandwich", 0), ("slice", "uniform", 0), ("slice", "uniform", 2)]
)
def test_resume_is_exact(env, tmp_path, kind, sampling, every):
    kw = dict(supernet=kind, sampling=sampling, dropout=0.1, eval_every=3, mos_mode="neuron", largest_every=every)
    straight = tmp_path / "straight.pt"
    train(cfg(env, steps=6, **kw), straight, log=quiet)
    split = tmp_path / "split.pt"
    train(cfg(env, steps=3, **kw), split, log=quiet)
    meta = train(cfg(env, steps=6, **kw), split, resume=True, log=quiet)
    assert meta["steps"] == 6
    a, b = read_checkpoint(straight), read_checkpoint(split)
    assert a["data"] == b["data"] and a["sampler"] == b["sampler"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(st[n], b["optimizer"]["state"][k][n]) for n in st)
    assert [r["val_loss"] for r in a["meta"]["history"]] == [r["val_loss"] for r in b["meta"]["history"]]


def test_largest_every_replaces_every_nth_uniform_draw():
    space = SearchSpace.from_dict(MICRO)
    plain = ArchSampler(space, "uniform", seed=3)
    every = ArchSampler(space, "uniform", seed=3, largest_every=3)
    got = [every.next(step) for step in range(9)]
    assert [len(a) for a in got] == [1] * 9
    assert [got[i][0] for i in (2, 5, 8)] == [space.largest()] * 3
    # the other steps draw the same random archs as plain uniform sampling, in order
    assert [got[i][0] for i in range(9) if i % 3 != 2] == [plain.next(i)[0] for i in range(6)]
    # the sampler's sandwich rule ignores it (TrainConfig refuses the pair: tests/moenas/test_demo.py)
    sandwich = ArchSampler(space, "sandwich", n_random=1, seed=3, largest_every=2)
    assert [len(sandwich.next(s)) for s in range(4)] == [3] * 4


def test_nothing_is_overwritten(env, tmp_path, capsys):
    out = tmp_path / "o.pt"
    train(cfg(env, steps=2), out, log=quiet)
    before = sha(out), sha(meta_path(out))
    with pytest.raises(UserError, match="exists; pass --resume .* or --overwrite"):
        train(cfg(env, steps=2), out, log=quiet)
    rc = main(
        [
            "train",
            "--space",
            env["space"],
            "--corpus",
            env["corpus"],
            "--steps",
            "2",
            "--out",
            str(out),
            "--cache",
            env["cache"],
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "exists" in err
    assert (sha(out), sha(meta_path(out))) == before
    train(cfg(env, steps=2, seed=1), out, overwrite=True, log=quiet)
    assert sha(out) != before[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--space", "nope"], "unknown space 'nope'"),
        (["--corpus", "/nonexistent/dir"], "not 'default', 'gettext[:DIR]' or a directory"),
        (["--resume"], "no such checkpoint"),
        (["--init-from", "x.pt"], "--init-from needs --arch"),
        (["--supernet", "mos", "--mos-experts", "0"], "--mos-experts must be >= 1"),  # TrainConfig, before any data
    ],
)
def test_bad_input_is_one_line(env, tmp_path, capsys, args, message):
    base = {
        "--space": env["space"],
        "--corpus": env["corpus"],
        "--steps": "2",
        "--out": str(tmp_path / "x.pt"),
        "--cache": env["cache"],
    }
    for k in list(base):
        if k in args:
            base.pop(k)
    argv = ["train", *[x for kv in base.items() for x in kv], *args, "--no-progress"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err


def test_bad_corpus_files_are_one_line(env, tmp_path, capsys):
    bad = write_parallel_dir(tmp_path / "bad", synthetic_pairs(40))
    (bad / "train.de").write_text("eins\nzwei\n")
    rc = main(
        [
            "train",
            "--space",
            env["space"],
            "--corpus",
            str(bad),
            "--steps",
            "2",
            "--out",
            str(tmp_path / "y.pt"),
            "--cache",
            env["cache"],
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "has 40 lines but" in err
    assert not (tmp_path / "y.pt").exists()


def test_corrupt_checkpoint_is_a_user_error(env, tmp_path, capsys):
    out = tmp_path / "c.pt"
    train(cfg(env, steps=1), out, log=quiet)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable moenas checkpoint"):
        load_supernet(out)
    rc = main(
        [
            "train",
            "--space",
            env["space"],
            "--corpus",
            env["corpus"],
            "--steps",
            "3",
            "--out",
            str(out),
            "--cache",
            env["cache"],
            "--resume",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not a readable moenas checkpoint" in err
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a moenas checkpoint"):
        read_checkpoint(tmp_path / "other.pt")


def test_standalone_arch_from_inherited_weights(env, tmp_path):
    sup = tmp_path / "sup.pt"
    train(cfg(env, steps=8, supernet="mos"), sup, log=quiet)
    net, meta = load_supernet(sup)
    arch = SearchSpace.from_dict(MICRO).sample(3)
    batches, _ = validation_data(meta)
    inherited = validation_loss(net, [arch], batches)[0]
    out = tmp_path / "one.pt"
    m = train(cfg(env, steps=4, arch=arch.to_json(), init_from=str(sup)), out, log=quiet)
    assert m["kind"] == "standalone" and m["history"][0]["step"] == 0
    assert m["history"][0]["val_loss"] == pytest.approx(inherited, abs=1e-4)  # starts from the inherited weights
    model, mm = load_model(out)
    assert model.arch == arch and mm["arch"] == arch.to_json()
    with pytest.raises(UserError, match="holds a standalone"):
        load_supernet(out)
    # a standalone checkpoint can be fine-tuned further (same arch only)
    more = train(cfg(env, steps=2, arch=arch.to_json(), init_from=str(out)), tmp_path / "more.pt", log=quiet)
    assert more["history"][0]["val_loss"] == m["history"][-1]["val_loss"]
    other = SearchSpace.from_dict(MICRO).smallest().to_json()
    with pytest.raises(UserError, match="holds arch"):
        train(cfg(env, steps=2, arch=other, init_from=str(out)), tmp_path / "other.pt", log=quiet)
    # inherited weights differ from a fresh init
    fresh = train(cfg(env, steps=1, arch=arch.to_json()), tmp_path / "fresh.pt", log=quiet)
    assert fresh["history"][0]["val_loss"] != pytest.approx(inherited, abs=1e-3)


def test_lr_schedule():
    c = TrainConfig(lr=1.0, warmup=10, steps=100)
    assert lr_at(c, 0) == pytest.approx(0.1) and lr_at(c, 9) == pytest.approx(1.0)
    assert lr_at(c, 39) == pytest.approx(0.5)  # inverse sqrt: sqrt(10/40)
    cos = TrainConfig(lr=1.0, warmup=10, steps=110, schedule="cosine")
    assert lr_at(cos, 59) == pytest.approx(0.5) and lr_at(cos, 109) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(UserError, match="unknown sampling"):
        TrainConfig(sampling="random")
