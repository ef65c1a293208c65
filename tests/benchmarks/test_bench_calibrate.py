"""benchmarks/bench_calibrate.py: refuses without the second machine's dataset; the eval sets
and the rescale rows on a small synthetic pair (no timing, nothing asserted about a machine)."""

from __future__ import annotations

import numpy as np
import pytest
from bench_module import load_bench

from moenas.data.profiles import write_profiles
from moenas.predictor.dataset import load_dataset
from moenas.predictor.synthetic import make_profiles


@pytest.fixture(scope="module")
def bench():
    mod = load_bench("bench_calibrate")
    return mod


def test_absent_second_dataset_exits_2(bench, tmp_path, capsys):
    assert bench.main(["--other", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "absent" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def _write(path, seed, ref_ms, k=1.0):
    df, meta = make_profiles("tiny", 40, "a", seed=seed)
    for c in ("median_ms", "p10_ms", "p90_ms", "mean_ms"):
        df[c] = df[c] * k
    df["ref_before_ms"] = ref_ms
    df["ref_after_ms"] = ref_ms
    write_profiles(path, df, meta)
    return path


def test_rescaled_rows_remove_a_pure_scale(bench, tmp_path):
    a, b = _write(tmp_path / "a.parquet", 0, 8.0), _write(tmp_path / "b.parquet", 1, 16.0, k=2.0)
    rows = bench.rows_for("flops-linear", load_dataset([a]), load_dataset([b]), bench.eval_sets(b), seed=0)
    by = {(r["eval_archs"], r["correction"].split(" ")[0]): r for r in rows}
    assert by[("valid", "uncorrected")]["mape"] > 40
    assert by[("valid", "rescaled")]["factor"] == pytest.approx(2.0)
    assert by[("valid", "rescaled")]["mape"] < 10 and np.isfinite(by[("valid", "rescaled")]["kendall_tau"])
    bench.write_csv(tmp_path / "out.csv", rows)
    assert "versions" in (tmp_path / "out.csv").read_text().splitlines()[0]


def test_component_rows_find_the_scale_of_each_component(bench, tmp_path):
    """B is A's device twice as slow: every component's ratio is 2, the reference factor (2) is
    the best constant, and each component is named once."""
    a, b = _write(tmp_path / "a.parquet", 0, 8.0), _write(tmp_path / "b.parquet", 1, 16.0, k=2.0)
    rows = bench.component_rows("flops-linear", a, b, 2.0, seed=0)
    assert [r["component"] for r in rows] == ["total", "encoder", "decoder"]
    for r in rows:
        assert r["ratio_p10"] <= r["ratio_median"] <= r["ratio_p90"]
        assert abs(r["ratio_median"] - 2.0) < 0.05  # the predictor's own error moves it a little
        assert abs(r["mape_best_constant"] - r["mape_reference_factor"]) < 0.5
