"""bench_demo: a finished seed is read, not run again; each row's figures come from the fields
they name; other machines' rows stay in the CSV."""

import csv
import json

import pytest
from bench_module import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_demo")


def pick(arch_id, ms, loss, bleu, meets=True):
    return {
        "arch_id": arch_id,
        "measured_ms": ms,
        "loss": loss,
        "loss_se": 0.1,
        "bleu": bleu,
        "ffn_share": 0.12,
        "meets_budget": meets,
    }


def summary(winner="d1"):
    picks = {
        "searched": pick("m1", 11.2, 3.762, 9.0),
        "dense": pick("d1", 9.66, 3.773, 9.8),
        "random": pick("r1", 11.9, 3.764, 9.3, meets=False),
    }
    if winner:
        picks["winner"] = picks["dense"]
    return {
        "final": {
            "winner": winner,
            "winner_role": "dense" if winner else None,
            "loss_diff": -0.011,
            "loss_diff_se": 0.007,
            "pool": {"searched": 9, "dense": 22, "random-search": 1},
            "verdict": "Deploy the dense arch `d1`: ...",
        },
        "picks": picks,
        "facts": {
            "budget_ms": 11.56,
            "supernet": {"largest": {"val_loss": 3.706, "bleu": 9.8}, "smallest": {"val_loss": 4.344, "bleu": 6.5}},
        },
        "timings_s": {
            "latency predictor for this machine": 59.4,
            "train the supernet": 304.5,
            "search under 11.6 ms (and its dense variant); finalists measured": 124.9,
            "total": 497.6,
        },
    }


def test_rows_read_the_named_fields_and_finished_seeds_are_not_rerun(bench, tmp_path, monkeypatch):
    for seed, s in ((0, summary()), (1, summary(winner=None))):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "demo.json").write_text(json.dumps(s))
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("a finished seed was run again"))
    out = tmp_path / "bench_demo.csv"
    out.write_text("seed,fingerprint_id\n9,another-machine\n")
    assert bench.main(["--seeds", "0", "1", "--work", str(tmp_path), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["seed"] for r in rows] == ["9", "0", "1"]  # the other machine's row is kept, first
    r0, r1 = rows[1], rows[2]
    assert r0["answer"] == "d1" and r0["answer_meets_budget"] == "True" and r0["dense_measured_ms"] == "9.66"
    assert r0["searched_bleu"] == "9.0" and r0["search_s"] == "124.9" and r0["total_s"] == "497.6"
    assert float(r0["spread_nats"]) == pytest.approx(0.638) and r0["finalists"] == "32"
    assert r1["answer"] == "" and r1["answer_meets_budget"] == "False"


def test_a_seed_whose_demo_wrote_nothing_stops_the_benchmark(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: None)
    with pytest.raises(SystemExit, match="wrote no"):
        bench.main(["--seeds", "5", "--work", str(tmp_path), "--out", str(tmp_path / "x.csv")])
