"""`moenas train`'s flags come from TrainConfig's fields: every field has its flag and default in
--help, and the flags map back onto the same config (no training here)."""

import dataclasses

import pytest

from moenas.cli import build_parser
from moenas.commands.train import _FLAGS, settings_from_args
from moenas.search.train_config import TrainConfig

FIELDS = dataclasses.fields(TrainConfig)


def _parse(*argv: str):
    return build_parser().parse_args(["train", "--out", "x.pt", *argv])


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    return _squeeze(capsys.readouterr().out)


def _squeeze(text: str) -> str:
    return "".join(text.split())  # argparse wraps lines, also at hyphens


def test_help_shows_every_setting_with_its_default(capsys):
    text = _help(capsys)
    for f in FIELDS:
        if f.name == "progress":
            assert "--no-progress" in text
            continue
        flag = _FLAGS.get(f.name, f"--{f.name.replace('_', '-')}")
        assert flag in text, flag
        if f.name == "eval_archs":
            assert _squeeze("(default: largest, smallest)") in text
        elif f.default is not None and f.name != "steps":
            assert _squeeze(f"{f.metadata['help']} (default: {f.default})") in text, f.name


def test_default_flags_give_the_default_config():
    assert TrainConfig(**settings_from_args(_parse("--steps", "7"))) == TrainConfig(steps=7)


def test_each_flag_sets_its_field():
    args = _parse(
        "--steps",
        "3",
        "--lr",
        "0.5",
        "--cache",
        "tok",
        "--no-progress",
        "--supernet",
        "mos",
        "--eval-arch",
        "smallest",
        "--mos-hidden",
        "8",
        "--beta2",
        "0.9",
        "--sandwich-random",
        "4",
        "--label-smoothing",
        "0.2",
        "--block-len",
        "64",
    )
    got = TrainConfig(**settings_from_args(args))
    assert got == TrainConfig(
        steps=3,
        lr=0.5,
        cache_dir="tok",
        progress=False,
        supernet="mos",
        eval_archs=["smallest"],
        mos_hidden=8,
        beta2=0.9,
        sandwich_random=4,
        label_smoothing=0.2,
        block_len=64,
    )
