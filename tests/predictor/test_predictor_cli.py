"""`moenas fit / evaluate / predict` in-process, on synthetic profile datasets (labelled as such)."""

import json
from dataclasses import replace

import pytest

from moenas.arch import SearchSpace
from moenas.cli import main
from moenas.data.profiles import read_profiles, write_profiles
from moenas.predictor.synthetic import PROTOCOL, make_profiles, write_synthetic

FAST = ["--model", "gbt", "--folds", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("profiles")
    return {
        "train": write_synthetic(d / "tiny_a.parquet", "tiny", 90, "a", seed=0),
        "hold": write_synthetic(d / "tiny_a_hold.parquet", "tiny", 40, "a", seed=5),
        "new": write_synthetic(d / "tiny_c.parquet", "tiny", 60, "c", seed=7),
        "dir": d,
    }


@pytest.fixture(scope="module")
def predictor(data):
    out = data["dir"] / "pred"
    assert main(["fit", "--data", str(data["train"]), *FAST, "--out", str(out), "--plots"]) == 0
    return out


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_fit_writes_predictor_report_and_plots(predictor, data, capsys):
    assert (predictor / "model.skops").is_file() and (predictor / "predictor.json").is_file()
    assert (predictor / "cv_predicted_vs_measured.png").stat().st_size > 1000
    assert (predictor / "learning_curve.png").is_file()
    meta = json.loads((predictor / "predictor.json").read_text())
    assert meta["metrics"]["learning_curve"][0]["n_train"] == 25 and meta["dataset"]["synthetic"]
    # never overwrite an existing --out
    assert main(["fit", "--data", str(data["train"]), *FAST, "--out", str(predictor)]) == 2
    assert "--overwrite" in _err(capsys)


def test_fit_json(data, capsys):
    out = data["dir"] / "pred_json"
    assert (
        main(
            [
                "fit",
                "--data",
                str(data["train"]),
                "--model",
                "flops-linear",
                "--out",
                str(out),
                "--no-learning-curve",
                "--json",
            ]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["chosen"] == "flops-linear" and {"mape", "kendall_tau", "within_10"} <= set(rep["report"]["cv"])


def test_evaluate_and_predict(predictor, data, capsys, tmp_path):
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "--predictor", str(predictor), "--data", str(data["hold"]), "--json", "--plots", str(tmp_path)]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    h = rep["holdout"]
    assert h["n"] == 40 and h["mape"] < 10 and 0 <= h["coverage"] <= 100 and h["noise_floor_mape"] > 0
    assert (tmp_path / "holdout_predicted_vs_measured.png").is_file()
    assert main(["evaluate", "--predictor", str(predictor), "--data", str(data["hold"])]) == 0
    assert "Kendall" not in capsys.readouterr().err
    archs = tmp_path / "a.jsonl"
    df, _ = read_profiles(data["hold"])
    archs.write_text("\n".join(df["arch_json"].unique()[:3]) + "\n")
    assert main(["predict", "--predictor", str(predictor), str(archs), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    assert len(preds) == 3 and all(p["lower_ms"] <= p["mean_ms"] <= p["upper_ms"] for p in preds)
    assert main(["predict", "--predictor", str(predictor), str(archs)]) == 0
    assert "arch_id" in capsys.readouterr().out


def test_transfer_cli(predictor, data, capsys):
    out = data["dir"] / "pred_c"
    assert main(["fit", "--base", str(predictor), "--data", str(data["new"]), "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["report"]
    assert rep["n_samples"] == 20 and {"transfer", "scratch_20", "base_uncorrected"} <= set(rep["holdout"]["rows"])
    assert [b["features"][0] for b in rep["blend"]] == ["scale", "flops_encoder"]
    assert abs(sum(b["weight"] for b in rep["blend"]) - 1) < 1e-3
    assert main(["fit", "--base", str(predictor), "--data", str(data["new"]), "--out", str(out), "--overwrite"]) == 0
    assert "corrections blended: scale " in capsys.readouterr().out


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The decoder-only family's: synthetic lm-tiny data of device "a" and of device "c", and a
    predictor fitted on "a" through the CLI (flops-linear: the family's paths in a fraction of
    gbt's time, whose fitting, transfer and saving cost seconds)."""
    d = tmp_path_factory.mktemp("lm-profiles")
    out = {
        "train": write_synthetic(d / "lm_a.parquet", "lm-tiny", 60, "a", seed=0),
        "new": write_synthetic(d / "lm_c.parquet", "lm-tiny", 30, "c", seed=7),
        "pred": d / "pred",
        "dir": d,
    }
    fast = ["--model", "flops-linear", "--folds", "3", "--no-learning-curve"]
    assert main(["fit", "--data", str(out["train"]), *fast, "--out", str(out["pred"])]) == 0
    return out


def test_transfer_cli_adapts_a_decoder_only_predictor(lm, capsys, tmp_path):
    out = lm["dir"] / "pred_c"
    argv = ["fit", "--base", str(lm["pred"]), "--data", str(lm["new"]), "--transfer-n", "10", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["report"]
    rows = rep["holdout"]["rows"]
    assert rep["n_samples"] == 10 and rows["transfer"]["mape"] < rows["base_uncorrected"]["mape"]
    assert [b["features"][0] for b in rep["blend"]] == ["scale", "flops_prefill"]
    archs = tmp_path / "a.jsonl"
    archs.write_text("".join(a.to_json() + "\n" for a in SearchSpace.load("lm-tiny").sample_n(3, seed=2)))
    assert main(["predict", "--predictor", str(out), str(archs), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    assert len(preds) == 3 and all(p["lower_ms"] <= p["mean_ms"] <= p["upper_ms"] for p in preds)


def test_an_arch_or_data_of_the_other_family_is_one_line_exit_2(predictor, lm, capsys, tmp_path):
    """A translation predictor given an LM arch, the reverse, and LM data adapted to translation data."""
    capsys.readouterr()
    for pred, other in ((predictor, "lm-tiny"), (lm["pred"], "tiny")):
        space = SearchSpace.load(other)
        (tmp_path / "a.json").write_text(space.sample(0).to_json())
        assert main(["predict", "--predictor", str(pred), str(tmp_path / "a.json")]) == 2
        assert f"family: '{space.family.name}' is not allowed" in _err(capsys)
    ed_data = write_synthetic(tmp_path / "ed.parquet", "tiny", 12, "c")
    assert main(["fit", "--base", str(lm["pred"]), "--data", str(ed_data), "--out", str(tmp_path / "x")]) == 2
    assert "protocol family decoder-only vs encoder-decoder" in _err(capsys) and not (tmp_path / "x").exists()


def _rewrite(src, dst, fn_df=lambda d: d, fn_meta=lambda m: m):
    df, meta = read_profiles(src)
    write_profiles(dst, fn_df(df), fn_meta(meta))
    return dst


def _drop_columns(src, dst, cols):
    """The same file without some columns (written with pyarrow: the writer would add them back)."""
    import pyarrow.parquet as pq

    t = pq.read_table(src)
    pq.write_table(t.drop(cols).replace_schema_metadata(t.schema.metadata), dst)
    return dst


def test_bad_input_one_line_exit_2(predictor, data, capsys, tmp_path):
    capsys.readouterr()
    empty = _rewrite(data["train"], tmp_path / "empty.parquet", lambda d: d.iloc[:0])
    assert main(["fit", "--data", str(empty), *FAST, "--out", str(tmp_path / "x")]) == 2
    assert "empty" in _err(capsys)
    nocols = _drop_columns(data["train"], tmp_path / "nocols.parquet", ["median_ms"])
    assert main(["fit", "--data", str(nocols), *FAST, "--out", str(tmp_path / "x")]) == 2
    assert "missing columns median_ms" in _err(capsys)
    df, meta = make_profiles("tiny", 30, "a", seed=3, protocol=replace(PROTOCOL, beam=4))
    other = tmp_path / "beam4.parquet"
    write_profiles(other, df, meta)
    assert main(["fit", "--data", str(data["train"]), str(other), *FAST, "--out", str(tmp_path / "x")]) == 2
    assert "different latency protocols" in _err(capsys)
    assert main(["evaluate", "--predictor", str(predictor), "--data", str(other)]) == 2
    err = _err(capsys)
    assert "fitted on other data" in err and "protocol beam" in err
    assert main(["fit", "--data", str(data["train"]), "--model", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model" in _err(capsys)
    assert main(["evaluate", "--predictor", str(tmp_path / "missing"), "--data", str(data["hold"])]) == 2
    assert "no such predictor" in _err(capsys)
    assert main(["predict", "--predictor", str(tmp_path / "missing"), str(tmp_path / "a.json")]) == 2
    assert "no such predictor" in _err(capsys)
    assert main(["fit", "--data", str(tmp_path / "nofile.parquet"), *FAST, "--out", str(tmp_path / "x")]) == 2
    assert "no such" in _err(capsys)
    assert not (tmp_path / "x").exists()


def test_help(capsys):
    for cmd in ("fit", "evaluate", "predict"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "--base" in capsys.readouterr().out


def test_a_thread_count_mismatch_is_refused_unless_allowed(predictor, data, capsys, tmp_path):
    """A predictor fitted on 1-thread data scored against archs timed at 2 threads: one line,
    exit 2; with --allow-mismatch a warning naming the difference, and the report."""
    capsys.readouterr()
    two = _rewrite(data["hold"], tmp_path / "two.parquet", lambda d: d.assign(threads_intra=2))
    assert main(["evaluate", "--predictor", str(predictor), "--data", str(two)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "threads_intra 1 (predictor) vs 2" in err and "--allow-mismatch" in err
    assert main(["evaluate", "--predictor", str(predictor), "--data", str(two), "--allow-mismatch", "--json"]) == 0
    out = capsys.readouterr()
    assert "warning" in out.err and "threads_intra 1 (predictor) vs 2" in out.err and '"holdout"' in out.out
    assert main(["fit", "--base", str(predictor), "--data", str(two), "--out", str(tmp_path / "t")]) == 2
    assert "threads_intra" in capsys.readouterr().err and not (tmp_path / "t").exists()
