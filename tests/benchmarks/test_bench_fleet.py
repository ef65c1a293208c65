"""benchmarks/bench_fleet.py --quick: the CSV has a row per run and device, node b's finished rows
survive its kill, and the resumed campaign merges one dataset per device (rows, not speeds)."""

from __future__ import annotations

import csv

import pytest
from bench_module import load_bench

pytest.importorskip("ray")


@pytest.mark.slow
def test_quick_campaign_rows(tmp_path):
    mod = load_bench("bench_fleet")
    out = tmp_path / "fleet.csv"
    assert mod.main(["--quick", "--out", str(out)]) == 0
    rows = {(r["run"][0], r["fleet_device"]): r for r in csv.DictReader(out.open())}
    assert set(rows) == {("1", "a"), ("1", "b"), ("2", "a"), ("2", "b")}
    killed = rows[("1", "b")]
    assert killed["chunks_done"] == "1" and int(killed["chunks_failed"]) == 1 and killed["complete"] == "False"
    assert int(killed["finished_rows_before_kill"]) == 1 and killed["lost_finished_rows"] == "0"
    for d in ("a", "b"):
        r = rows[("2", d)]
        assert (
            r["complete"] == "True" and r["archs_valid"] == "2" and r["rows"] == "6" and r["merged_fingerprints"] == "1"
        )
        assert r["fingerprint_id"] and r["ray"] and r["moenas"]
