"""The benchmark and tuning scripts' CPU paths (arguments, shape lists, timing, CSV)."""

from __future__ import annotations

import csv

import pytest
import torch
from bench_module import load_bench as load

from moenas.moe_kernels import triton_available


def test_bench_dry_run_writes_csv(tmp_path, capsys):
    bench = load("bench_moe_kernels")
    out = tmp_path / "r.csv"
    # 4 tiny shapes, one timed run each; triton included when the interpreter is on
    assert bench.main(["--dry-run", "--out", str(out), "--max-shapes", "4", "--repeats", "1"]) == 0
    rows = list(csv.DictReader(open(out)))
    impls = {r["impl"] for r in rows}
    assert {"loop", "padded", "dense"} <= impls
    if not torch.cuda.is_available():  # on CPU triton runs only under the interpreter
        assert ("triton" in impls) == triton_available("cpu")
    for col in (
        "device",
        "torch",
        "triton",
        "cuda",
        "tokens",
        "topk",
        "mode",
        "median_ms",
        "tflops",
        "frac_of_ceiling",
        "speedup_vs_loop",
        "speedup_vs_padded",
    ):
        assert col in rows[0]
    assert all(float(r["median_ms"]) > 0 for r in rows)
    assert "wrote" in capsys.readouterr().out


def test_bench_shape_list_and_targets():
    bench = load("bench_moe_kernels")
    shapes = bench.automoe_shapes()
    assert {s.d_model for s in shapes} == {512, 640}
    assert {s.tokens for s in shapes} == {1, 16, 128, 1024, 4096, 16384}
    assert {s.topk for s in shapes} == {1, 2} and {s.mode for s in shapes} == {"fwd", "fwd_bwd"}
    assert min(s.num_experts for s in shapes) == 2 and max(s.num_experts for s in shapes) == 16
    assert all(set(s.hidden_sizes) <= {1024, 2048, 3072} for s in shapes)
    cfg = bench.BenchConfig(512, (1024, 3072), 16384, 2, "fwd")
    res = bench.BenchResult(
        cfg,
        "triton",
        median_ms=1.0,
        useful_gflop=1.0,
        tflops=1.0,
        frac_of_ceiling=0.6,
        speedup_vs_loop=4.0,
        speedup_vs_padded=1.5,
    )
    lines = bench.check_targets([res])
    assert len(lines) == 3 and all(line.startswith("PASS") for line in lines)


def test_bench_without_gpu_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert load("bench_moe_kernels").main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().out


@pytest.mark.skipif(
    not triton_available("cpu") and not torch.cuda.is_available(), reason="needs the Triton interpreter or a GPU"
)
def test_tuner_plan_and_launchers(device, small_config):
    tune = load("tune_moe_kernels")
    assert tune.main(["--dry-run", "--quick"]) == 0
    if not torch.cuda.is_available():
        assert tune.main(["--quick"]) == 2
    # the tuner's single-kernel launches run (tiny layer, small blocks)
    prob = tune.Problem(torch.float16, 32, 12, device, hidden=(16, 40))
    for kind in ("up", "down", "wgrad"):
        getattr(prob, kind)(small_config)()
    assert torch.isfinite(prob.dw).all()
