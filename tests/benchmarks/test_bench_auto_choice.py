"""benchmarks/bench_auto_choice.py: rows per split and model, the cv-pick row read off auto's own
scores, resume skips finished splits, the summary's gap; bad input -> one line, exit 2."""

from __future__ import annotations

import csv

from bench_module import load_bench

from moenas.data.profiles import shipped


def test_rows_resume_and_summary(tmp_path, capsys):
    bench = load_bench("bench_auto_choice")
    out = tmp_path / "a.csv"
    args = [
        "--data",  # 140 archs: the same code paths as the 420 of tiny-cpu-ort, a third of the time
        str(shipped("tiny-cpu-torch")),
        "--splits",
        "1",
        "--models",
        "flops-linear",
        "gbt",
        "hybrid",
        "auto",
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    rows = list(csv.DictReader(out.open()))
    models = [r["model"] for r in rows]
    assert models[:4] == ["flops-linear", "gbt", "hybrid", "auto"] and all(r["machine"] for r in rows)
    by = {r["model"]: r for r in rows}
    assert by["auto"]["chosen"].startswith("stack(")
    if "cv-pick" in by:  # the old rule's pick is one of the fitted singles, with its held-out figures
        assert by["cv-pick"]["mape"] == by[by["cv-pick"]["chosen"]]["mape"]
    capsys.readouterr()
    assert bench.main(args[:2] + ["--splits", "2"] + args[4:]) == 0  # split 0 is skipped, split 1 added
    rows2 = list(csv.DictReader(out.open()))
    assert rows2[: len(rows)] == rows and {r["split"] for r in rows2} == {"0", "1"}
    summary = {r["model"]: r for r in csv.DictReader((tmp_path / "a_summary.csv").open())}
    best = summary["auto"]["best_single"]
    assert best in ("flops-linear", "gbt", "hybrid") and float(summary[best]["gap_to_best_single"]) == 0
    assert summary["auto"]["splits"] == "2"


def test_bad_input_is_one_line(tmp_path, capsys):
    bench = load_bench("bench_auto_choice")
    assert bench.main(["--splits", "0", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--splits" in err and not (tmp_path / "x.csv").exists()
    assert bench.main(["--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "x.csv").exists()
