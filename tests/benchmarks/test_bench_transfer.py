"""benchmarks/bench_transfer.py on the shipped dataset as its own target (rows and methods, not
accuracy figures), and bad targets -> one line, exit 2."""

from __future__ import annotations

import csv

from bench_module import load_bench

from moenas.data.profiles import shipped


def test_rows_per_target_shots_and_method(tmp_path):
    out = tmp_path / "t.csv"
    target = f"self={shipped('tiny-cpu-ort')}"
    assert (
        load_bench("bench_transfer").main(
            ["--target", target, "--shots", "5", "10", "--repeats", "2", "--model", "flops-linear", "--out", str(out)]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    got = {(r["shots"], r["method"]) for r in rows}
    n = len(rows_of_valid_archs())
    n_cv = str(n - n // 5)  # the ceiling row: the transfer fitted on 4 folds of 5
    assert got == {
        ("5", "transfer"),
        ("5", "transfer-full"),
        ("5", "scratch-flops-power"),
        ("5", "base-uncorrected"),
        ("10", "transfer"),
        ("10", "transfer-full"),
        ("10", "scratch-flops-power"),
        ("10", "scratch-flops-linear"),
        ("10", "base-uncorrected"),
        (n_cv, "transfer-all-cv"),
    }
    for r in rows:
        assert (
            r["target"] == "self" and r["base"] == "tiny-cpu-ort" and r["machine"] and 0 <= float(r["mape_mean"]) < 100
        )
    # the base predicts its own device: transferring to it must not make it worse than 2x
    by = {(r["shots"], r["method"]): float(r["mape_mean"]) for r in rows}
    assert by[("10", "transfer")] < 2 * by[("10", "base-uncorrected")] + 1


def rows_of_valid_archs():
    from moenas.predictor.dataset import load_dataset

    return load_dataset([shipped("tiny-cpu-ort")], "total").y


def test_all_pairs_gives_each_ordered_pair_and_the_mean(tmp_path):
    """Two datasets -> two ordered pairs (each the other's base), transfers only, and the mean
    over the pairs per (shots, method)."""
    out = tmp_path / "p.csv"
    a, b = shipped("tiny-cpu-ort"), shipped("tiny-cpu-torch")
    assert (
        load_bench("bench_transfer").main(
            [
                "--base",
                str(a),
                "--target",
                f"tiny-cpu-torch={b}",
                "--all-pairs",
                "--shots",
                "5",
                "--repeats",
                "2",
                "--model",
                "flops-linear",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    pairs = {(r["base"], r["target"]) for r in rows}
    assert pairs == {("tiny-cpu-ort", "tiny-cpu-torch"), ("tiny-cpu-torch", "tiny-cpu-ort"), ("mean", "all pairs")}
    assert not any(r["method"].startswith("scratch") for r in rows)
    mean = {r["method"]: float(r["mape_mean"]) for r in rows if r["base"] == "mean"}
    for m, v in mean.items():
        each = [float(r["mape_mean"]) for r in rows if r["method"] == m and r["base"] != "mean"]
        assert len(each) == 2 and abs(v - sum(each) / 2) < 1e-3


def test_bad_target_is_one_line(tmp_path, capsys):
    assert load_bench("bench_transfer").main(["--target", "nope", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NAME=PATH" in err and not (tmp_path / "x.csv").exists()
