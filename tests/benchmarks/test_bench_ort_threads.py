"""benchmarks/bench_ort_threads.py --quick: ABBA timings at 1 and 2 threads, the per-thread
medians and the ratio row (the rows, not the speeds, are checked)."""

from __future__ import annotations

import csv

from bench_module import load_bench


def test_quick_runs_and_summary(tmp_path):
    out = tmp_path / "t.csv"
    assert load_bench("bench_ort_threads").main(["--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["threads"] for r in rows[:4]] == ["1", "2", "2", "1"]
    assert [r["run"] for r in rows[4:]] == ["median 1 thread(s)", "median 2 thread(s)", "ratio 2 / 1 threads"]
    assert all(float(r["reference_ms"]) > 0 and r["device"] for r in rows[:6])
    ratio = float(rows[-1]["ratio"])
    assert abs(ratio - float(rows[5]["reference_ms"]) / float(rows[4]["reference_ms"])) < 1e-3


def test_bad_rounds_is_one_line(tmp_path, capsys):
    assert load_bench("bench_ort_threads").main(["--rounds", "0", "--out", str(tmp_path / "t.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
