"""Nonsense is refused before any work, never accepted with exit 0.

Every numeric flag of every command is range-checked (a negative --drift-threshold used to
write a dataset of 0 valid archs; `train --valid-sentences 0` printed val_loss 0.0000); more
folds than archs; an arch with unknown fields or impossible sizes, with or without a space;
`--init-from` a supernet of another space; a `--resume` file whose arch_json column is garbage
(refused, and the file is left exactly as it was). Each refusal is exit 2, exactly one stderr
line starting `moenas `, no traceback, and no file changed."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fast_profile import ENC_DEC_SHAPES, QUIET, fast_rule
from hostile import refused
from micro_spaces import micro

from moenas.arch import Arch, SearchSpace, UserError, shipped_spaces
from moenas.data.profiles import SHIPPED_DIR, read_profiles, shipped, split_profiles
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import check_init_from

TINY = SearchSpace.load("tiny")
SHIPPED = shipped("tiny-cpu-ort")
FAST = ["--backend", "torch", *ENC_DEC_SHAPES, *fast_rule(), *QUIET]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """An arch file and an empty folder standing in for inputs that are never opened."""
    arch = tmp_path / "arch.json"
    arch.write_text(TINY.smallest().to_json() + "\n")
    (tmp_path / "somedir").mkdir()
    return {"arch": arch, "dir": tmp_path / "somedir", "t": tmp_path}


@pytest.fixture(scope="module")
def sixty(tmp_path_factory) -> Path:
    """60 archs of the shipped dataset (a user's `fit --folds 1000` on 60 archs)."""
    root = tmp_path_factory.mktemp("sixty")
    split_profiles(SHIPPED, 60 / 420, 0, root / "rest.parquet", root / "sixty.parquet")
    return root / "sixty.parquet"


# ---- every numeric flag of every command -------------------------------------------------------


def _flags() -> list[tuple[str, list[str], str]]:
    """(command, flags, what the one line says). {arch}, {dir}, {t} are filled in per test."""
    profile = ["profile", "--space", "tiny", "--n", "1", "--out", "{t}/d.parquet", *FAST]
    train = ["train", "--steps", "1", "--out", "{t}/s.pt", "--no-progress"]
    search = ["search", "--supernet", "{arch}", "--predictor", "{dir}", "--max-latency-ms", "5", "--out", "{t}/s"]
    demo = ["demo", "--out", "{t}/demo"]
    cases = [
        *[
            (profile, [f, v], f"{f} must be {w}")
            for f, v, w in [
                ("--n", "0", ">= 1"),
                ("--n", "-3", ">= 1"),
                ("--seed", "-1", ">= 0"),
                ("--threads", "0", ">= 1"),
                ("--inter-threads", "0", ">= 1"),
                ("--repeat-check", "-1", ">= 0"),
                ("--model-seed", "-1", ">= 0"),
                ("--min-runs", "0", ">= 1"),
                ("--max-runs", "5", ">= 6"),
                ("--max-seconds", "0", "> 0"),
                ("--target", "0", "> 0"),
                ("--ref-every", "0", ">= 1"),
                ("--visit-runs", "-1", ">= 0"),
                ("--visit-warmup", "-1", ">= 0"),
                ("--drift-threshold", "-1", "> 0"),
                ("--drift-threshold", "0", "> 0"),
                ("--ref-wait", "-1", ">= 0"),
                ("--ref-retries", "-1", ">= 0"),
                ("--max-remeasure", "-1", ">= 0"),
            ]
        ],
        (profile, ["--drift-threshold", "nan"], "--drift-threshold must be a finite number"),
        (profile, ["--warmup", "-1"], "--warmup must be >= 0"),
        *[
            (profile, [f, "0"], f"protocol {n} must be >= 1")
            for f, n in [
                ("--batch", "batch"),
                ("--src-len", "src_len"),
                ("--decoder-steps", "decoder_steps"),
                ("--beam", "beam"),
            ]
        ],
        (
            ["profile", "split", str(SHIPPED), "--train-out", "{t}/a.parquet", "--holdout-out", "{t}/b.parquet"],
            ["--holdout", "0"],
            "--holdout must be in (0, 1)",
        ),
        (
            ["profile", "split", str(SHIPPED), "--train-out", "{t}/a.parquet", "--holdout-out", "{t}/b.parquet"],
            ["--seed", "-1"],
            "--seed must be >= 0",
        ),
        *[
            (["fit", "--data", str(SHIPPED), "--out", "{t}/p"], [f, v], w)
            for f, v, w in [
                ("--folds", "1", "--folds must be >= 2"),
                ("--seed", "-1", "--seed must be >= 0"),
                ("--confidence", "1", "--confidence must be in (0, 1)"),
                ("--transfer-n", "2", "--transfer-n must be >= 3"),
            ]
        ],
        (["predict", "--predictor", "{dir}", "{arch}"], ["--confidence", "0"], "--confidence must be in (0, 1)"),
        (
            ["evaluate", "--predictor", "{dir}", "--data", str(SHIPPED)],
            ["--confidence", "1.5"],
            "--confidence must be in (0, 1)",
        ),
        (["export", "{arch}", "--out", "{t}/e"], ["--opset", "13"], "--opset must be >= 14"),
        (["export", "{arch}", "--out", "{t}/e"], ["--seed", "-1"], "--seed must be >= 0"),
        *[
            (["translate", "--model", "{dir}"], [f, v], f"{f} must be >= {w}")
            for f, v, w in [("--beam", "0", 1), ("--max-len", "1", 2), ("--threads", "-1", 0)]
        ],
        (["space", "sample"], ["--n", "0"], "--n must be >= 1"),
        (["space", "sample"], ["--seed", "-1"], "--seed must be >= 0"),
        (["space", "stats", "{arch}"], ["--beam", "0"], "protocol beam must be >= 1"),
        *[
            (train, [f, v], f"{f} must be {w}")
            for f, v, w in [
                ("--steps", "-1", ">= 0"),
                ("--lr", "0", "> 0"),
                ("--lr", "-1", "> 0"),
                ("--warmup", "-1", ">= 0"),
                ("--valid-sentences", "0", ">= 1"),
                ("--bleu-sentences", "-1", ">= 0"),
                ("--beam", "0", ">= 1"),
                ("--dropout", "1", "< 1"),
                ("--dropout", "-0.1", ">= 0"),
                ("--label-smoothing", "1", "< 1"),
                ("--clip-norm", "-1", ">= 0"),
                ("--aux-coef", "-1", ">= 0"),
                ("--weight-decay", "-1", ">= 0"),
                ("--max-tokens", "4", ">= 8"),
                ("--max-len", "1", ">= 2"),
                ("--mos-experts", "0", ">= 1"),
                ("--sandwich-random", "-1", ">= 0"),
                ("--eval-every", "-1", ">= 0"),
                ("--save-every", "-1", ">= 0"),
                ("--seed", "-1", ">= 0"),
            ]
        ],
        *[
            (search, [f, v], w)
            for f, v, w in [
                ("--valid-sentences", "-5", "--valid-sentences must be >= 1"),
                ("--valid-sentences", "0", "--valid-sentences must be >= 1"),
                ("--bleu-sentences", "-1", "--bleu-sentences must be >= 0"),
                ("--population", "0", "--population must be >= 1"),
                ("--parents", "0", "--parents must be in 1..population"),
                ("--parents", "999", "--parents must be in 1..population"),
                ("--mutations", "-1", "must be >= 0"),
                ("--crossovers", "-1", "must be >= 0"),
                ("--iterations", "-1", "must be >= 0"),
                ("--mutate-prob", "1.5", "--mutate-prob must be <= 1"),
                ("--workers", "0", "--workers must be >= 1"),
                ("--final-k", "0", "--final-k must be >= 1"),
                ("--final-k", "-2", "--final-k must be >= 1"),
                ("--threads", "0", "--threads must be >= 1"),
                ("--seed", "-1", "--seed must be >= 0"),
                ("--confidence", "1", "--confidence must be in [0, 1)"),
                ("--max-latency-ms", "0", "--max-latency-ms must be > 0"),
                ("--max-latency-ms", "nan", "must be a finite number"),
                ("--max-gflops", "-1", "--max-gflops must be > 0"),
                ("--max-params", "0", "--max-params must be > 0"),
            ]
        ],
        *[
            (demo, [f, v], f"{f} must be {w}")
            for f, v, w in [
                ("--profile-n", "0", ">= 1"),
                ("--transfer-n", "2", ">= 3"),
                ("--transfer-holdout", "-1", ">= 0"),
                ("--profile-seconds", "-1", ">= 0"),
                ("--drift-threshold", "-1", "> 0"),
                ("--train-steps", "-1", ">= 0"),
                ("--train-max-tokens", "4", ">= 8"),
                ("--train-lr", "0", "> 0"),
                ("--train-warmup", "-1", ">= 0"),
                ("--train-dropout", "1", "< 1"),
                ("--max-latency-ms", "-1", "> 0"),
                ("--population", "0", ">= 1"),
                ("--parents", "0", ">= 1"),
                ("--mutations", "-1", ">= 0"),
                ("--crossovers", "-1", ">= 0"),
                ("--iterations", "-1", ">= 0"),
                ("--valid-sentences", "0", ">= 1"),
                ("--bleu-sentences", "-1", ">= 0"),
                ("--final-k", "0", ">= 1"),
                ("--dense-iterations", "-1", ">= 0"),
                ("--search-workers", "-1", ">= 0"),
                ("--seed", "-1", ">= 0"),
            ]
        ],
        (demo, ["--from-scratch", "--profile-n", "5"], "--profile-n must be >= 8"),
        (["calibrate", "--predictor", "{dir}", "--out", "{t}/c"], ["--threads", "0"], "--threads must be >= 1"),
        (["calibrate", "--predictor", "{dir}", "--out", "{t}/c"], ["--checks", "0"], "--checks must be >= 1"),
    ]
    return [(" ".join(cmd[:2]) + " " + " ".join(flags), cmd + flags, needle) for cmd, flags, needle in cases]


@pytest.mark.parametrize("name, argv, needle", _flags(), ids=[c[0] for c in _flags()])
def test_every_numeric_flag_is_range_checked_before_work(files, capsys, name, argv, needle):
    fill = {k: str(v) for k, v in files.items()}
    refused([a.format(**fill) if "{" in a else a for a in argv], capsys, files["t"], needle)
    assert not (files["t"] / "d.parquet").exists() and not (files["t"] / "s.pt").exists()


def test_more_folds_than_archs_is_refused(sixty, tmp_path, capsys):
    refused(
        ["fit", "--data", sixty, "--folds", "1000", "--model", "flops-linear", "--out", tmp_path / "p"],
        capsys,
        tmp_path,
        "more folds than the 60 valid archs",
    )


# ---- archs ---------------------------------------------------------------------------------------


def _mutated(path: str, value) -> dict:
    """The canonical dict of TINY.smallest() with one field (dotted path, list indices as ints) set."""
    d = json.loads(TINY.smallest().to_json())
    *parents, last = path.split(".")
    node = d
    for k in parents:
        node = node[int(k)] if k.isdigit() else node[k]
    node[int(last) if last.isdigit() else last] = value
    return d


IMPOSSIBLE = [
    ("comment", "x", "unknown field(s) 'comment'"),
    ("encoder.depth", 3, "encoder: unknown field(s) 'depth'"),
    ("encoder.layers.0.heds", 2, "encoder.layers[0]: unknown field(s) 'heds'"),
    ("encoder.layers.0.cross_heads", 2, "encoder.layers[0]: unknown field(s) 'cross_heads'"),
    ("decoder.layers.0.expert", [128], "decoder.layers[0]: unknown field(s) 'expert'"),
    ("vocab_size", 0, "vocab_size: must be >= 1"),
    ("qkv_dim", -8, "qkv_dim: must be >= 1"),
    ("top_k", 0, "top_k: must be >= 1"),
    ("encoder.embed_dim", 0, "encoder.embed_dim: must be >= 1"),
    ("decoder.layers.0.heads", -4, "decoder.layers[0].heads: must be >= 1"),
    ("decoder.layers.0.cross_span", 0, "decoder.layers[0].cross_span: must be >= 1"),
    ("decoder.layers.0.cross_span", 3, "exceeds the 2 encoder layer(s)"),
    ("encoder.layers.0.experts.0", 0, "encoder.layers[0].experts[0]: must be >= 1"),
    ("encoder.layers.0.heads", 3, "qkv_dim 128 is not divisible by 3 heads"),
    ("decoder.layers.0.cross_heads", 6, "qkv_dim 128 is not divisible by 6 heads"),
    ("encoder.layers.0.heads", 2.0, "expected an integer"),
    ("encoder.layers.0.heads", True, "expected an integer"),
    ("top_k", "1", "expected an integer"),
    ("schema_version", True, "schema_version"),
    ("encoder.layers", {}, "expected a non-empty list"),
]


@pytest.mark.parametrize("path, value, needle", IMPOSSIBLE, ids=[f"{p}={v!r}" for p, v, _ in IMPOSSIBLE])
def test_structurally_impossible_arch_is_refused_with_or_without_a_space(tmp_path, capsys, path, value, needle):
    d = _mutated(path, value)
    with pytest.raises(UserError, match=re.escape(needle)):
        Arch.from_dict(d)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(d))
    refused(["space", "validate", arch], capsys, tmp_path, needle)
    refused(["space", "validate", arch, "--space", "tiny"], capsys, tmp_path, needle)


def test_every_shipped_arch_and_every_sample_still_loads():
    """The stricter Arch.from_dict reads every arch this repository ships or samples."""
    for path in sorted(SHIPPED_DIR.glob("*.parquet")):
        df, _ = read_profiles(path)  # its arch column is checked on reading, too
        for aid, text in df[["arch_id", "arch_json"]].drop_duplicates().itertuples(index=False):
            assert Arch.from_json(text).arch_id == aid
    for name in shipped_spaces():
        space = SearchSpace.load(name)
        for a in space.sample_n(50, seed=3) + [space.largest(), space.smallest()]:
            assert Arch.from_json(a.to_json()) == a


# ---- --init-from another space -----------------------------------------------------------------

MICRO = micro()
MICRO["encoder"]["experts"] = [1, 2]


def _supernet_of(space: dict) -> dict:
    """A checkpoint of the shape read_checkpoint accepts, for a supernet of ``space`` (no weights:
    the refusal comes before any are loaded)."""
    return {
        "format": "moenas-checkpoint",
        "version": 1,
        "kind": "supernet",
        "model": {},
        "step": 0,
        "train_config": {},
        "meta": {"corpus_fingerprint": "f", "tokenizer": "t.json", "train_config": {}},
        "supernet_config": {"space": space, "kind": "slice"},
    }


@pytest.mark.parametrize(
    "space, needle",
    [
        (dict(MICRO), "a supernet of space 'micro', not of --space 'tiny'"),
        (dict(MICRO, name="tiny"), "(same name, other genes)"),
    ],
)
def test_init_from_a_supernet_of_another_space_is_refused(files, capsys, space, needle):
    ck = files["t"] / "other.pt"
    torch.save(_supernet_of(space), ck)
    refused(
        [
            "train",
            "--arch",
            files["arch"],
            "--init-from",
            ck,
            "--steps",
            "1",
            "--out",
            files["t"] / "s.pt",
            "--no-progress",
        ],
        capsys,
        files["t"],
        needle,
    )


def test_init_from_a_supernet_of_the_same_space_passes_the_check(tmp_path):
    ck = tmp_path / "same.pt"
    torch.save(_supernet_of(TINY.to_dict()), ck)
    yaml_copy = tmp_path / "tiny-copy.yaml"  # the same genes under a file name: the same space
    yaml_copy.write_text(yaml.safe_dump(TINY.to_dict()))
    for space in ("tiny", str(yaml_copy)):
        check_init_from(TrainConfig(space=space, arch=TINY.smallest().to_json(), init_from=str(ck)))


# ---- --resume of a dataset with a garbage arch column -----------------------------------------


def _with_arch_column(src: Path, dst: Path, fn) -> Path:
    table = pq.read_table(src)
    df = table.to_pandas()
    df["arch_json"] = fn(df)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table.schema.metadata), dst)
    return dst


@pytest.mark.parametrize(
    "spoil, needle",
    [
        (lambda df: df["arch_json"].where(df.index >= 3, "garbage"), "is not an arch"),
        (lambda df: df["arch_json"].where(df.index >= 3, '{"encoder": {}}'), "is not an arch"),
        (
            lambda df: df["arch_json"].where(df["arch_id"] != df["arch_id"].iloc[0], TINY.largest().to_json()),
            "is not the id",
        ),
    ],
)
def test_resume_of_a_dataset_with_a_garbage_arch_column_is_refused_and_leaves_it(tmp_path, capsys, spoil, needle):
    data = _with_arch_column(SHIPPED, tmp_path / "d.parquet", spoil)
    refused(["profile", "--resume", "--space", "tiny", "--n", "2", "--out", data, *FAST], capsys, tmp_path, needle)
    refused(["fit", "--data", data, "--model", "flops-linear", "--out", tmp_path / "p"], capsys, tmp_path, needle)
