"""benchmarks/bench_ref_timing.py --quick: four runs in ABBA order under both reference timings,
the per-method means and the bias row (the rows, not the speeds, are checked)."""
from __future__ import annotations

import csv

from bench_module import load_bench


def test_quick_runs_and_summary(tmp_path):
    out = tmp_path / "r.csv"
    assert load_bench("bench_ref_timing").main(["--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["ref_timing"] for r in rows[:4]] == ["alone", "group", "group", "alone"]
    assert [r["run"] for r in rows[4:]] == ["mean alone", "mean group", "bias"]
    for r in rows[:4]:
        assert int(r["measurements"]) >= 3 + 1 and int(r["reference_checks"]) >= 2 and r["device"]
    bias = rows[-1]
    assert 0.5 < float(bias["latency_ratio_median"]) < 2.0 and int(bias["archs_valid"]) >= 1
