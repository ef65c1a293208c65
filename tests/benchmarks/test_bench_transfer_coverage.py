"""benchmarks/bench_transfer_coverage.py --demo: a folder that holds no demo is one line, exit 2."""

from __future__ import annotations

from bench_module import load_bench


def test_a_folder_without_a_demo_is_one_line(tmp_path, capsys):
    bench = load_bench("bench_transfer_coverage")
    assert bench.main(["--demo", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a moenas demo folder" in err
