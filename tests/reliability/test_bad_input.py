"""Hostile or damaged input is one line, never a crash or a hang.

Deeply nested or non-UTF-8 JSON wherever a file is parsed (arch files, predictor.json, a
dataset's embedded metadata and sidecar, space YAML); metadata of the wrong type in a Parquet
file, a predictor or a checkpoint (one shape check, arch/checks.py:check_fields, used by the
three readers); an arch no model can be built from, given without --space; a string where a
latency belongs; an --n that would sample forever; flags outside what a command can do. Each
gives exit 2, exactly one stderr line starting `moenas `, no traceback, and changes no file."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fast_profile import ENC_DEC_SHAPES, QUIET, fast_rule
from hostile import refused

from moenas.arch import SearchSpace
from moenas.cli import main
from moenas.data.profiles import META_KEY, shipped
from moenas.predictor.api import fit_predictor
from moenas.predictor.dataset import load_dataset

TINY = SearchSpace.load("tiny")
SHIPPED = shipped("tiny-cpu-ort")
DEEP = "[" * 100_000  # RecursionError in json.loads before the fix
DEEP_CLOSED = "[" * 50_000 + "]" * 50_000
NOT_UTF8 = b'\xff\xfe{"a": 1}'
LATIN1 = '{"comment": "caf\xe9"}'.encode("latin-1")
HUGE_INT = '{"top_k": ' + "9" * 5000 + "}"  # ValueError in int(), past JSONDecodeError
FAST = ["--backend", "torch", *ENC_DEC_SHAPES, *fast_rule(), *QUIET]


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pred") / "p"
    pred, _ = fit_predictor(load_dataset([SHIPPED], "total"), "flops-linear", folds=3, with_learning_curve=False)
    pred.save(d)
    return d


def copy_predictor(src: Path, dst: Path, text: str | bytes | None = None, **change) -> Path:
    """A copy of ``src`` whose predictor.json is ``text``, or the original with ``change``."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "predictor.json").read_text())
    write(dst / "predictor.json", text if text is not None else json.dumps({**meta, **change}))
    return dst


def dataset_with(path: Path, meta_blob: bytes | None = None, **columns) -> Path:
    """The shipped tiny dataset with its embedded metadata replaced (None: as is) and
    ``columns`` replaced by the given functions of the frame."""
    table = pq.read_table(SHIPPED)
    kv = dict(table.schema.metadata)
    if meta_blob is not None:
        kv[META_KEY] = meta_blob
    df = table.to_pandas()
    for name, fn in columns.items():
        df[name] = fn(df)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(kv), path)
    return path


def shipped_meta() -> dict:
    return json.loads(pq.read_schema(SHIPPED).metadata[META_KEY])


def good_checkpoint() -> dict:
    """The shape read_checkpoint accepts (no weights: every case breaks it before they matter)."""
    return {
        "format": "moenas-checkpoint",
        "version": 1,
        "kind": "supernet",
        "model": {},
        "step": 0,
        "train_config": {},
        "meta": {"corpus_fingerprint": "f", "tokenizer": "t.json", "train_config": {}},
        "supernet_config": {"space": TINY.to_dict(), "kind": "slice"},
    }


# ---- hostile JSON text -------------------------------------------------------------------------

ARCH_CONSUMERS = {
    "export": lambda a, t, p: ["export", a, "--out", t / "e"],
    "profile --archs": lambda a, t, p: ["profile", "--archs", a, "--space", "tiny", "--out", t / "d.parquet", *FAST],
    "predict": lambda a, t, p: ["predict", "--predictor", p, a],
    "space validate": lambda a, t, p: ["space", "validate", a],
    "space stats": lambda a, t, p: ["space", "stats", a],
    "train --arch": lambda a, t, p: ["train", "--arch", a, "--steps", "1", "--out", t / "s.pt", "--no-progress"],
    "train --eval-arch": lambda a, t, p: [
        "train",
        "--eval-arch",
        a,
        "--steps",
        "1",
        "--out",
        t / "s.pt",
        "--no-progress",
    ],
}


@pytest.mark.parametrize(
    "text, needle",
    [
        (DEEP, "nested too deeply"),
        (DEEP_CLOSED, "nested too deeply"),
        (NOT_UTF8, "not UTF-8"),
        (LATIN1, "not UTF-8"),
        ("{", "malformed arch JSON"),
        (HUGE_INT, "Exceeds the limit"),
    ],
)
@pytest.mark.parametrize("consumer", list(ARCH_CONSUMERS))
def test_hostile_arch_file_is_one_line(predictor, tmp_path, capsys, consumer, text, needle):
    arch = write(tmp_path / "arch.json", text)
    refused(ARCH_CONSUMERS[consumer](arch, tmp_path, predictor), capsys, tmp_path, needle)


@pytest.mark.parametrize(
    "text, needle",
    [(DEEP, "nested too deeply"), (NOT_UTF8, "not UTF-8"), ("[1]", "not a moenas predictor"), ("{not json", "corrupt")],
)
def test_hostile_predictor_json_is_one_line(predictor, tmp_path, capsys, text, needle):
    p = copy_predictor(predictor, tmp_path / "p", text)
    arch = write(tmp_path / "arch.json", TINY.smallest().to_json())
    refused(["predict", "--predictor", p, arch], capsys, tmp_path, needle)
    refused(["evaluate", "--predictor", p, "--data", SHIPPED], capsys, tmp_path, needle)
    refused(["fit", "--data", SHIPPED, "--base", p, "--out", tmp_path / "t"], capsys, tmp_path, needle)


@pytest.mark.parametrize(
    "blob, needle",
    [
        (DEEP.encode(), "nested too deeply"),
        (NOT_UTF8, "not UTF-8"),
        (b"[1, 2]", "not a moenas"),
        (b"{", "corrupt"),
        (HUGE_INT.encode(), "Exceeds the limit"),
    ],
)
def test_hostile_embedded_metadata_is_one_line(tmp_path, capsys, blob, needle):
    data = dataset_with(tmp_path / "d.parquet", blob)
    refused(["fit", "--data", data, "--model", "flops-linear", "--out", tmp_path / "p"], capsys, tmp_path, needle)
    refused(["profile", "merge", data, "--out", tmp_path / "m.parquet"], capsys, tmp_path, needle)


@pytest.mark.parametrize("text", [DEEP, NOT_UTF8, "{", HUGE_INT])
def test_hostile_sidecar_of_a_reshaped_dataset_is_one_line(tmp_path, capsys, text):
    data = tmp_path / "r.parquet"
    pq.write_table(pq.read_table(SHIPPED).replace_schema_metadata({}), data)  # pandas-style: no moenas metadata
    write(tmp_path / "r.parquet.json", text)
    refused(["fit", "--data", data, "--model", "flops-linear", "--out", tmp_path / "p"], capsys, tmp_path, "sidecar")


@pytest.mark.parametrize(
    "text", ["a: " + DEEP_CLOSED, b"name: \xff\n", "a: [", "- 1\n- 2\n", "vocab_size: " + "9" * 5000]
)
def test_hostile_space_yaml_is_one_line(tmp_path, capsys, text):
    space = write(tmp_path / "s.yaml", text)
    refused(["space", "info", "--space", space], capsys, tmp_path)
    refused(["space", "sample", "--space", space], capsys, tmp_path)


# ---- metadata of the wrong type ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"reference": "x"}, "'reference' must be dict"),
        ({"runs": 5}, "'runs' must be list"),
        ({"runs": [1]}, "runs[0]"),
        ({"counts": "x"}, "'counts' must be dict"),
        ({"protocol": [1]}, "'protocol' must be dict"),
        ({"reference": {"checks": [1, 2]}}, "reference.checks[0]"),
        ({"reference": {"checks": [{"median_ms": "fast"}]}}, "'median_ms' must be"),
        ({"reference": {"checks": 3}}, "'checks' must be list"),
        ({"schema_version": "1"}, "schema version"),
    ],
)
def test_wrong_types_in_a_datasets_metadata_are_one_line(tmp_path, capsys, change, needle):
    data = dataset_with(tmp_path / "d.parquet", json.dumps({**shipped_meta(), **change}).encode())
    refused(["fit", "--data", data, "--model", "flops-linear", "--out", tmp_path / "p"], capsys, tmp_path, needle)
    refused(["profile", "merge", data, "--out", tmp_path / "m.parquet"], capsys, tmp_path, needle)
    refused(["profile", "--resume", "--space", "tiny", "--n", "1", "--out", data, *FAST], capsys, tmp_path, needle)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"protocol": "abc"}, "'protocol' must be dict"),
        ({"protocol": {"batch": "x"}}, "protocol batch must be a number"),
        ({"protocol": {"beam": 0}}, "protocol beam must be >= 1"),
        ({"metrics": 5}, "'metrics' must be dict"),
        ({"metrics": {"learning_curve": [1]}}, "learning_curve[0]"),
        ({"metrics": {"learning_curve": [{"n_train": 5}]}}, "lacks the field 'mape'"),
        ({"versions": "x"}, "'versions' must be dict"),
        ({"space": 7}, "'space' must be str"),
        ({"train_arch_ids": "abc"}, "'train_arch_ids' must be list"),
        ({"format_version": True}, "'format_version' must be int"),
    ],
)
def test_wrong_types_in_predictor_json_are_one_line(predictor, tmp_path, capsys, change, needle):
    p = copy_predictor(predictor, tmp_path / "p", **change)
    arch = write(tmp_path / "arch.json", TINY.smallest().to_json())
    refused(["predict", "--predictor", p, arch], capsys, tmp_path, needle)
    refused(["evaluate", "--predictor", p, "--data", SHIPPED], capsys, tmp_path, needle)


def _broken(change: dict, drop: tuple = (), meta: dict | None = None) -> dict:
    ck = {**good_checkpoint(), **change}
    for key in drop:
        del ck[key]
    if meta is not None:
        ck["meta"] = meta
    return ck


@pytest.mark.parametrize(
    "ck, needle",
    [
        (_broken({}, drop=("kind",)), "lacks the field 'kind'"),
        (_broken({"kind": 3}), "'kind' must be str"),
        (_broken({"kind": "other"}), "unknown checkpoint kind"),
        (_broken({"step": "x"}), "'step' must be int"),
        (_broken({"meta": [1]}), "'meta' must be dict"),
        (_broken({}, meta={"tokenizer": "t", "train_config": {}}), "lacks the field 'corpus_fingerprint'"),
        (
            _broken({}, meta={"corpus_fingerprint": 5, "tokenizer": "t", "train_config": {}}),
            "'corpus_fingerprint' must be str",
        ),
        (
            _broken({}, meta={"corpus_fingerprint": "f", "tokenizer": "t", "train_config": {}, "history": 3}),
            "'history' must be list",
        ),
        (_broken({"supernet_config": None}), "'supernet_config' must be dict"),
        (_broken({"supernet_config": {"space": "tiny", "kind": "slice"}}), "'space' must be dict"),
        (_broken({"kind": "standalone", "supernet_config": None}), "lacks the field 'arch'"),
        (_broken({"train_config": {"steps": "x"}}), "--steps must be a number"),
        (_broken({"train_config": {"lr": -1}}), "--lr must be > 0"),
        ([1, 2], "not a moenas checkpoint"),
    ],
)
def test_wrong_types_in_a_checkpoint_are_one_line(tmp_path, capsys, ck, needle):
    path = tmp_path / "c.pt"
    torch.save(ck, path)
    arch = write(tmp_path / "arch.json", TINY.smallest().to_json())
    refused(["export", arch, "--supernet", path, "--out", tmp_path / "e"], capsys, tmp_path, needle)
    refused(["train", "--resume", "--steps", "2", "--out", path, "--no-progress"], capsys, tmp_path, needle)


# ---- input the code could not compute with ----------------------------------------------------


def _arch_dict(**change) -> dict:
    d = json.loads(TINY.smallest().to_json())
    for path, value in change.items():
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    "arch, needle",
    [
        (_arch_dict(**{"encoder.layers.0.heads": 3}), "not divisible by 3 heads"),  # unflatten's RuntimeError
        (_arch_dict(**{"encoder.layers.0.heads": 256}), "not divisible by 256 heads"),  # head dim 0: ZeroDivisionError
        (_arch_dict(**{"decoder.layers.0.cross_heads": 5}), "not divisible by 5 heads"),
        (_arch_dict(**{"decoder.layers.0.cross_span": 7}), "exceeds the 2 encoder layer(s)"),
        (_arch_dict(**{"encoder.embed_dim": 0}), "encoder.embed_dim: must be >= 1"),
        (_arch_dict(**{"qkv_dim": -128}), "qkv_dim: must be >= 1"),
        (
            _arch_dict(**{"encoder.embed_dim": 10**9}),
            "encoder.embed_dim: 1000000000 is beyond any Transformer's (at most 131072)",
        ),
        (_arch_dict(**{"vocab_size": 10**9}), "vocab_size: 1000000000 is beyond"),
    ],
)
@pytest.mark.parametrize("command", ["export", "profile", "space stats"])
def test_arch_that_fits_no_space_without_space_is_one_line(tmp_path, capsys, arch, needle, command):
    path = write(tmp_path / "arch.json", json.dumps(arch))
    argv = {
        "export": ["export", path, "--out", tmp_path / "e"],
        "space stats": ["space", "stats", path],
        "profile": ["profile", "--archs", path, "--out", tmp_path / "d.parquet", *FAST],
    }[command]
    refused(argv, capsys, tmp_path, needle)


def test_an_arch_whose_weights_exceed_the_machines_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import moenas.arch.model as model

    monkeypatch.setattr(
        model, "memory_limit_bytes", lambda: 1 << 20
    )  # a 1 MiB machine: the tiny arch's 4 MB do not fit
    path = write(tmp_path / "arch.json", TINY.smallest().to_json())
    refused(["export", path, "--out", tmp_path / "e"], capsys, tmp_path, "GiB in fp32, more than this machine's")


@pytest.mark.parametrize(
    "spoil, needle",
    [
        (
            {"median_ms": lambda df: df["median_ms"].where(df.index != 3, float("nan"))},
            "row(s) with an empty 'median_ms'",
        ),
        (
            {"median_ms": lambda df: df["median_ms"].where(df.index != 3, -1.0)},
            "median_ms -1.0 is not a positive number",
        ),
        (
            {"component": lambda df: pd.Series(range(len(df)), index=df.index) % 3},
            "component '0' is not one of encoder, decoder, total",
        ),
        ({"arch_id": lambda df: df["arch_id"].where(df.index != 5, "")}, "row(s) with an empty 'arch_id'"),
    ],
)
def test_resume_refuses_rows_that_cannot_be_measurements(tmp_path, capsys, spoil, needle):
    data = dataset_with(tmp_path / "d.parquet", **spoil)
    refused(
        ["profile", "--resume", "--allow-mixed", "--space", "tiny", "--n", "1", "--out", data, *FAST],
        capsys,
        tmp_path,
        needle,
    )


def test_resume_refuses_a_dataset_without_rows(tmp_path, capsys):
    table = pq.read_table(SHIPPED)
    data = tmp_path / "d.parquet"
    pq.write_table(table.slice(0, 0), data)  # the schema and metadata, no row
    refused(
        ["profile", "--resume", "--allow-mixed", "--space", "tiny", "--n", "1", "--out", data, *FAST],
        capsys,
        tmp_path,
        "holds no rows to resume",
    )


@pytest.mark.parametrize("column", ["median_ms", "n_runs", "drift_flag"])
def test_a_string_where_a_number_belongs_is_one_line(tmp_path, capsys, column):
    def spoil(df):
        s = df[column].astype(str)
        s.iloc[0] = "fast"
        return s

    data = dataset_with(tmp_path / "d.parquet", **{column: spoil})
    refused(
        ["fit", "--data", data, "--model", "flops-linear", "--out", tmp_path / "p"],
        capsys,
        tmp_path,
        f"column {column!r}",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["space", "sample", "--n", "1000000000000"],
        ["profile", "--space", "tiny", "--n", "1000000000000", "--out", "{t}/d.parquet", *FAST],
        ["demo", "--from-scratch", "--profile-n", "1000000000000", "--out", "{t}/demo"],
    ],
)
def test_an_n_that_would_sample_for_ever_says_the_maximum(tmp_path, capsys, argv):
    refused([a.replace("{t}", str(tmp_path)) for a in argv], capsys, tmp_path, "at most 1000000")


def test_an_n_above_a_small_spaces_size_says_its_size(tmp_path, capsys):
    one = {
        "name": "one",
        "vocab_size": 16,
        "qkv_dim": 4,
        "encoder": {"embed_dim": 4, "layers": 1, "heads": 1, "experts": 1, "expert_sizes": 4},
        "decoder": {
            "embed_dim": 4,
            "layers": 1,
            "heads": 1,
            "experts": 1,
            "expert_sizes": 4,
            "cross_heads": 1,
            "cross_span": 1,
        },
    }
    space = write(tmp_path / "one.yaml", yaml.safe_dump(one))
    refused(["space", "sample", "--space", space, "--n", "2"], capsys, tmp_path, "holds 1 archs")
    assert main(["space", "sample", "--space", str(space), "--n", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["export", "{arch}", "--opset", "3", "--out", "{t}/e"], "--opset must be >= 14"),
        (["export", "{arch}", "--opset", "99", "--out", "{t}/e"], "--opset must be <= 23"),
        (["train", "--lr", "-1", "--steps", "1", "--out", "{t}/s.pt"], "--lr must be > 0"),
        (["train", "--lr", "nan", "--steps", "1", "--out", "{t}/s.pt"], "--lr must be a finite number"),
        (["kernels", "--device", "tpu"], "invalid choice"),
        (["demo", "--profile-n", "0", "--out", "{t}/demo"], "--profile-n must be >= 1"),
        (["demo", "--from-scratch", "--profile-n", "0", "--out", "{t}/demo"], "--profile-n must be >= 1"),
    ],
)
def test_the_listed_crashes_are_one_line(tmp_path, capsys, argv, needle):
    arch = write(tmp_path / "arch.json", TINY.smallest().to_json())
    refused([a.replace("{arch}", str(arch)).replace("{t}", str(tmp_path)) for a in argv], capsys, tmp_path, needle)


@pytest.mark.parametrize(
    "manifest, needle",
    [
        (DEEP, "nested too deeply"),
        (NOT_UTF8, "not UTF-8"),
        ("[1]", "not a moenas export"),
        ('{"format": "moenas-onnx-export"}', "lacks the field 'arch'"),
        ('{"format": "moenas-onnx-export", "arch": {}, "encoder": "e.onnx", "decoder": {}}', "'encoder' must be dict"),
        ('{"format": "moenas-onnx-export", "arch": {}, "encoder": {}, "decoder": {}}', "lacks the field 'file'"),
    ],
)
def test_hostile_export_manifest_is_one_line(tmp_path, capsys, manifest, needle):
    from moenas.profiler.onnx_export import FORMAT, MANIFEST

    model = tmp_path / "model"
    model.mkdir()
    write(model / MANIFEST, manifest.replace("moenas-onnx-export", FORMAT) if isinstance(manifest, str) else manifest)
    sentences = write(tmp_path / "in.txt", "hello\n")
    refused(["translate", "--model", model, "--input", sentences], capsys, tmp_path, needle)
