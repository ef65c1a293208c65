"""benchmarks/bench_transfer.py on the shipped dataset as its own target (rows and methods, not
accuracy figures), and bad targets -> one line, exit 2."""
from __future__ import annotations

import csv

from bench_module import load_bench

from moenas.data.profiles import shipped


def test_rows_per_target_shots_and_method(tmp_path):
    out = tmp_path / "t.csv"
    target = f"self={shipped('tiny-cpu-ort')}"
    assert load_bench("bench_transfer").main(["--target", target, "--shots", "5", "10", "--repeats", "2",
                                              "--model", "flops-linear", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    got = {(r["shots"], r["method"]) for r in rows}
    assert got == {("5", "transfer"), ("5", "scratch-flops-power"), ("5", "base-uncorrected"),
                   ("10", "transfer"), ("10", "scratch-flops-power"), ("10", "scratch-flops-linear"), ("10", "base-uncorrected")}
    for r in rows:
        assert r["target"] == "self" and r["machine"] and 0 <= float(r["mape_mean"]) < 100
    # the base predicts its own device: transferring to it must not make it worse than 2x
    by = {(r["shots"], r["method"]): float(r["mape_mean"]) for r in rows}
    assert by[("10", "transfer")] < 2 * by[("10", "base-uncorrected")] + 1


def test_bad_target_is_one_line(tmp_path, capsys):
    assert load_bench("bench_transfer").main(["--target", "nope", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NAME=PATH" in err and not (tmp_path / "x.csv").exists()
