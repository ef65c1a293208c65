"""`moenas demo` end to end at micro sizes: the transfer path, a supernet, search with its dense
baseline, the finalists measured and the answer chosen, BLEU and translations in the report, the
answer exported and translated by onnxruntime; and bad settings rejected in one line before any work."""

import json

import pytest
from demo_flags import demo_flags
from toy_corpus import synthetic_pairs, write_parallel_dir

from moenas.arch import UserError
from moenas.cli import main

SMALL = demo_flags(population=6, valid_sentences=12, bleu_sentences=6)


@pytest.mark.slow
def test_demo_transfer_path_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOENAS_CACHE", str(tmp_path / "cache"))
    corpus = write_parallel_dir(tmp_path / "corpus", synthetic_pairs(300, seed=4))
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--corpus", str(corpus), *SMALL, "--json"])
    s = json.loads(capsys.readouterr().out)
    fin, picks = s["final"], s["picks"]
    assert rc == (0 if fin["winner"] else 1)  # 1 only when no finalist met the budget when measured
    f = s["facts"]
    assert f["profile"]["archs_valid"] == 6
    assert f["predictor"]["path"].startswith("transfer from tiny-cpu-ort") and f["predictor"]["n_holdout"] == 2
    assert set(f["supernet"]) == {"largest", "smallest"}
    # a family whose every finalist missed the budget when measured (a busy machine) has no pick
    for role in [r for r in ("searched", "dense", "random") if fin[r]]:
        assert 0 <= picks[role]["bleu"] <= 100 and len(picks[role]["samples"]) == 3 and picks[role]["measured_ms"] > 0
    readme = (out / "README.md").read_text()
    assert readme.splitlines()[2].startswith("**Answer.**" if fin["winner"] else "**Nothing to deploy:**")
    assert "| stage | seconds |" in readme and "random search, same evaluations" in readme
    if fin["winner"]:
        assert picks["winner"]["meets_budget"] and fin["verdict"].startswith("Deploy")
        assert (out / "model" / "tokenizer.json").is_file() and f["deploy"]["source"]
        assert "BLEU" in readme and "## Translations" in readme and f["deploy"]["output"] in readme
    assert "| source | reference | output |" in (out / "search" / "report.md").read_text()
    # a rerun reuses every stage's output (the demo is resumable) and gives the same winner
    rc2 = main(["demo", "--out", str(out), "--corpus", str(corpus), *SMALL, "--json"])
    s2 = json.loads(capsys.readouterr().out)
    assert rc2 == rc and s2["final"] == s["final"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--transfer-n", "0"], "--transfer-n must be >= 1"),
        (["--train-steps", "-1"], "--train-steps must be >= 0"),
        (["--from-scratch", "--profile-n", "0"], "--profile-n must be >= 1"),
        (["--train-lr", "-1"], "--train-lr must be > 0"),
        (["--max-latency-ms", "0"], "--max-latency-ms must be > 0"),
        (["--scale", "wmt"], "--scale wmt needs --corpus DIR"),
        (["--corpus", "defualt"], "--corpus defualt: not 'default', 'gettext[:DIR]' or a directory"),
        (["--corpus", "gettext:/no/such/locale"], "no gettext catalogs (*.mo) in /no/such/locale"),
    ],
)
def test_bad_demo_settings_are_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_paper_scale_path_runs_end_to_end(tmp_path, capsys, monkeypatch):
    """`moenas demo --scale wmt --corpus DIR` (automoe-wmt space, transfer from the shipped
    automoe-wmt dataset) with every stage shrunk, on real parallel text: a slice of the gettext
    corpus written as line-aligned files, as a user's WMT directory would be."""
    from moenas.data.corpus import load_corpus

    monkeypatch.setenv("MOENAS_CACHE", str(tmp_path / "cache"))
    pairs = load_corpus("default").train[:400]
    corpus = write_parallel_dir(tmp_path / "wmt", pairs)
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--scale",
        "wmt",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        *SMALL,
        "--train-steps",
        "1",
        "--train-max-tokens",
        "256",
        "--no-dense",
        "--transfer-n",
        "3",
        "--transfer-holdout",
        "0",
        "--search-workers",
        "1",
        "--json",
    ]
    # the later flags win: automoe-wmt archs take seconds each to export and time, and each search
    # worker would load its own copy of the 348M-parameter supernet (the pool is tested at tiny scale)
    rc = main(argv)
    s = json.loads(capsys.readouterr().out)
    assert rc == (0 if s["final"]["winner"] else 1)
    assert s["config"]["space"] == "automoe-wmt" and s["facts"]["predictor"]["path"].startswith(
        "transfer from automoe-wmt"
    )
    assert "dense" not in s["picks"]
    if s["final"]["winner"]:
        assert s["picks"]["searched"]["measured_ms"] > 0 and s["picks"]["searched"]["bleu"] is not None
        assert (out / "model" / "encoder.onnx").is_file() and (out / "model" / "tokenizer.json").is_file()
    else:  # a busy host can time every finalist over the budget: then one line says how far over
        assert "over" in s["final"]["verdict"] and not (out / "model").exists()


def test_too_few_valid_archs_to_transfer_says_why(tmp_path, monkeypatch):
    """A host so noisy that the drift checks flag nearly every arch: one line naming the
    reference's spread and the ways out, not a complaint about a flag the user never set."""
    from types import SimpleNamespace

    from moenas.arch import UserError
    from moenas.data.profiles import read_profiles, shipped, write_profiles
    from moenas.search import demo_latency
    from moenas.search.pipeline import DemoConfig

    df, meta = read_profiles(shipped("tiny-cpu-ort"))
    keep = df["arch_id"].isin(df["arch_id"].drop_duplicates().iloc[:30])
    df = df[keep & (df["repeat_index"] == 0)].copy()
    df["drift_flag"] = df["arch_id"] != df["arch_id"].iloc[0]  # one valid arch of 30
    data = tmp_path / "profiles.parquet"
    write_profiles(data, df.reset_index(drop=True), meta)
    monkeypatch.setattr(demo_latency, "_profile", lambda demo, n, seed, name: data)
    monkeypatch.setattr(demo_latency, "_fit_or_load", lambda demo, ds, name: SimpleNamespace(metadata={}))
    cfg = DemoConfig(out=tmp_path)
    demo = SimpleNamespace(cfg=cfg, path=lambda name: tmp_path / name, facts={}, log=print)
    wanted = cfg.transfer_n + cfg.transfer_holdout
    with pytest.raises(
        UserError, match=rf"only 1 of {wanted} archs were measured validly.*reference model timed .* ms over \d+ checks"
    ):
        demo_latency.transfer_to_this_machine(demo)


def test_printed_train_command_trains_the_demos_supernet(tmp_path):
    """The report's `moenas train` line, parsed by the CLI, is the very TrainConfig the demo trains."""
    import shlex

    from moenas.cli import build_parser
    from moenas.commands.train import settings_from_args
    from moenas.search.pipeline import Demo, DemoConfig
    from moenas.search.train_config import TrainConfig

    for every, want in ((None, 8), (3, 3), (0, 0)):  # tiny's default, an override, off
        demo = Demo(DemoConfig.for_scale("tiny", out=tmp_path, train_largest_every=every))
        args = build_parser().parse_args(shlex.split(demo.train_command())[1:])
        assert TrainConfig(**settings_from_args(args)) == demo.train_config()
        assert demo.train_config().largest_every == want
    # sandwich sampling trains the largest arch every step: the preset rule drops, an explicit one is refused
    assert DemoConfig.for_scale("tiny", out=tmp_path, sampling="sandwich").train_largest_every == 0
    with pytest.raises(UserError, match="uniform sampling only"):
        DemoConfig.for_scale("tiny", out=tmp_path, sampling="sandwich", train_largest_every=4)
    with pytest.raises(UserError, match="uniform sampling only"):
        TrainConfig(sampling="sandwich", largest_every=4)
