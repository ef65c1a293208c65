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
        assert int(r["measurements"]) >= 2 + 1 and int(r["reference_checks"]) >= 2 and r["device"]
    bias = rows[-1]
    assert 0.5 < float(bias["latency_ratio_median"]) < 2.0 and int(bias["archs_valid"]) >= 1


def test_follow_against_group_and_bad_methods(tmp_path, capsys):
    out = tmp_path / "f.csv"
    assert load_bench("bench_ref_timing").main(["--quick", "--methods", "group", "follow", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["ref_timing"] for r in rows[:4]] == ["group", "follow", "follow", "group"]
    assert [r["run"] for r in rows[4:]] == ["mean group", "mean follow", "bias"] and rows[-1][
        "ref_timing"
    ] == "follow / group"
    capsys.readouterr()
    assert (
        load_bench("bench_ref_timing").main(
            ["--quick", "--methods", "group", "group", "--out", str(tmp_path / "x.csv")]
        )
        == 2
    )
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "x.csv").exists()


def test_write_stamped_keeps_other_machines_rows(tmp_path):
    """A rerun replaces this machine's rows and keeps another machine's."""
    w = load_bench("bench_ref_timing").write_stamped
    fp = {
        "cpu_model": "A",
        "cpu_cores": 2,
        "fingerprint_id": "aaa",
        "onnxruntime_version": "1",
        "torch_version": "2",
        "moenas_version": "0",
    }
    out = tmp_path / "s.csv"
    w([{"run": "1", "x": 1.0}], out, fp, {})
    w([{"run": "1", "x": 2.0}], out, {**fp, "fingerprint_id": "bbb", "cpu_model": "B"}, {})
    w([{"run": "1", "x": 3.0, "y": 4}], out, {**fp, "fingerprint_id": "bbb", "cpu_model": "B"}, {})
    rows = list(csv.DictReader(out.open()))
    assert [(r["fingerprint_id"], r["x"]) for r in rows] == [("aaa", "1.0"), ("bbb", "3.0")] and rows[1]["y"] == "4"
