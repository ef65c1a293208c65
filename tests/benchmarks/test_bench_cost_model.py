"""benchmarks/bench_cost_model.py: the baseline is read from git and both implementations run
side by side on a few archs (the rows, not the speeds, are checked)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
from bench_module import load_bench

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    if (
        shutil.which("git") is None
        or subprocess.run(
            ["git", "rev-parse", "--verify", "e0ea322^{commit}"], cwd=ROOT, capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("needs the git history down to the default baseline e0ea322 (read from it)")
    mod = load_bench("bench_cost_model")
    return mod


def test_rows_for_every_measurement(bench, tmp_path):
    out = tmp_path / "cost.csv"
    assert bench.main(["--spaces", "tiny", "--n", "60", "--n-scalar", "5", "--rounds", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["what"] for r in rows] == ["features", "vector_cost", "predict", "protocol_cost"]
    for r in rows:
        assert float(r["before_archs_per_s"]) > 0 and float(r["after_archs_per_s"]) > 0
        assert r["baseline"] and r["machine"] and "numpy=" in r["versions"]
