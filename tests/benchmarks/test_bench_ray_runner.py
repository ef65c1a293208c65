"""benchmarks/bench_ray_runner.py at micro size on a 2-step tiny supernet: every runner and both
workloads get a row, every runner returns the in-process values, the CSV names the machine and
versions. Nothing is asserted about a speed."""

from __future__ import annotations

import csv

import pytest
from bench_module import load_bench
from toy_corpus import synthetic_pairs, write_parallel_dir  # tests/helpers

from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train


@pytest.fixture(scope="module")
def bench():
    mod = load_bench("bench_ray_runner")
    return mod


def test_absent_supernet_exits_2(bench, tmp_path, capsys):
    assert bench.main(["--supernet", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no such supernet" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


@pytest.mark.slow  # ~30 s: a process pool, a Ray cluster and four actors started, each once
def test_micro_run_writes_a_row_per_runner_and_workload(bench, tmp_path):
    pytest.importorskip("ray")
    corpus = write_parallel_dir(tmp_path / "corpus", synthetic_pairs(200, seed=2))
    ckpt = tmp_path / "supernet.pt"
    train(
        TrainConfig(
            space="tiny",
            corpus=str(corpus),
            cache_dir=str(tmp_path / "cache"),
            steps=1,
            max_tokens=256,
            max_len=24,
            warmup=1,
            valid_sentences=4,
            bleu_sentences=0,
            progress=False,
            device="cpu",
        ),
        ckpt,
        log=lambda m: None,
    )
    out = tmp_path / "bench.csv"
    assert bench.main(["--supernet", str(ckpt), "--quick", "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["measure"], r["runner"], r["workers"]) for r in rows} == {
        (m, n, str(w)) for m in ("fitness", "overhead") for n, w in bench.RUNNERS
    }
    assert all(r["same_values"] == "True" for r in rows)
    assert all(float(r["archs_per_s"]) > 0 and r["ray"] not in ("", "unknown") and r["device"] for r in rows)
