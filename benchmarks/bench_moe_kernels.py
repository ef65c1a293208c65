#!/usr/bin/env python
"""Benchmark the heterogeneous grouped-expert FFN (moenas.moe_kernels) against its baselines.

Claim measured (on an H100): with experts of mixed hidden sizes in one layer the
Triton kernels are >= 1.3x faster than padding every expert to the largest size and running a
uniform batched matmul, >= 3x faster than a PyTorch loop over experts at >= 4k tokens, and reach
>= 50% of a dense matmul with the same useful FLOPs (the ceiling) at 16k tokens.

Implementations timed for every shape:
  triton  moe_ffn(backend="triton")
  loop    moe_ffn_reference: a PyTorch loop over experts (gathers each expert's tokens)
  padded  experts padded to max(h_e), tokens gathered into [E, cap, D] (cap = largest expert
          load, nothing dropped), torch.baddbmm for both layers
  dense   one dense matmul pair with the same useful FLOPs and no routing (the ceiling)

Shapes (AutoMoE): model dim 512 and 640; 2 to 16 experts with sizes from {1024, 2048, 3072}
(plus a uniform 8 x 2048 layer); 1 to 16k tokens; top-1 and top-2; forward and forward+backward.

Usage:
  python benchmarks/bench_moe_kernels.py --out benchmarks/results/moe_kernels_<device>.csv
  python benchmarks/bench_moe_kernels.py --quick          # a 36-shape subset (~1 min)
  python benchmarks/bench_moe_kernels.py --dry-run        # CPU: torch baselines at tiny sizes,
                                                          # exercises shapes, timing and CSV
                                                          # (+ triton if TRITON_INTERPRET=1)
Exit status: 0 done; 2 no CUDA GPU (without --dry-run), or bad arguments.
Times are medians (triton.testing.do_bench on CUDA; wall clock on CPU).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from moenas.moe_kernels import moe_ffn, moe_ffn_reference, triton_available

IMPLS = ("triton", "loop", "padded", "dense")
SIZES = (1024, 2048, 3072)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class BenchConfig:
    d_model: int
    hidden_sizes: tuple[int, ...]
    tokens: int
    topk: int
    mode: str  # "fwd" | "fwd_bwd"
    dtype: str = "bf16"

    @property
    def num_experts(self) -> int:
        return len(self.hidden_sizes)

    @property
    def mixed(self) -> bool:
        return len(set(self.hidden_sizes)) > 1

    @property
    def label(self) -> str:
        kind = "mixed" if self.mixed else "uniform"
        return f"D{self.d_model}-E{self.num_experts}-{kind}"


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    impl: str
    median_ms: float
    useful_gflop: float
    tflops: float
    frac_of_ceiling: float
    speedup_vs_loop: float
    speedup_vs_padded: float

    def row(self, env: dict) -> dict:
        c = self.config
        r = dict(env)
        r.update(
            dtype=c.dtype,
            d_model=c.d_model,
            num_experts=c.num_experts,
            hidden_sizes="-".join(map(str, c.hidden_sizes)),
            mixed=int(c.mixed),
            tokens=c.tokens,
            topk=c.topk,
            mode=c.mode,
        )
        r.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"})
        return r


def automoe_shapes(quick: bool = False, dtype: str = "bf16") -> list[BenchConfig]:
    expert_sets = [
        (1024, 3072),  # 2 experts
        (1024, 2048, 3072, 2048),  # 4
        tuple(SIZES[i % 3] for i in range(8)),  # 8
        tuple(SIZES[i % 3] for i in range(16)),  # 16
        (2048,) * 8,  # uniform reference point
    ]
    dims, tokens = (512, 640), (1, 16, 128, 1024, 4096, 16384)
    if quick:
        expert_sets = [expert_sets[1], expert_sets[3], expert_sets[4]]
        dims, tokens = (512,), (128, 4096, 16384)
    return [
        BenchConfig(d, hs, t, k, mode, dtype)
        for d in dims
        for hs in expert_sets
        for t in tokens
        for k in (1, 2)
        for mode in ("fwd", "fwd_bwd")
    ]


def dry_run_shapes() -> list[BenchConfig]:
    return [
        BenchConfig(32, hs, t, k, mode, "fp32")
        for hs in ((16, 48), (16, 32, 48))
        for t in (1, 8, 64)
        for k in (1, 2)
        for mode in ("fwd", "fwd_bwd")
    ]


# ----------------------------------------------------------------------------- problem + impls


def make_problem(cfg: BenchConfig, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    dt = DTYPES[cfg.dtype]
    t, d, e, k = cfg.tokens, cfg.d_model, cfg.num_experts, cfg.topk
    hs = cfg.hidden_sizes
    logits = torch.randn(t, e, generator=g)
    tw, ids = torch.softmax(logits, -1).topk(k, dim=-1)
    tw = tw / tw.sum(-1, keepdim=True)
    w2t = torch.cat([torch.randn(h, d, generator=g) / math.sqrt(h) for h in hs])
    p = dict(
        x=torch.randn(t, d, generator=g),
        tw=tw,
        w1=torch.randn(sum(hs), d, generator=g) / math.sqrt(d),
        b1=torch.randn(sum(hs), generator=g) * 0.02,
        w2t=w2t,
        b2=torch.randn(e, d, generator=g) * 0.02,
    )
    p = {n: v.to(device=device, dtype=dt) for n, v in p.items()}
    p["ids"] = ids.to(device)
    p["grad"] = torch.randn(t, d, generator=g).to(device=device, dtype=dt)
    counts = torch.bincount(ids.reshape(-1), minlength=e).tolist()
    p["useful_fwd_flop"] = 4.0 * d * sum(c * h for c, h in zip(counts, hs))
    return p


class Padded:
    """Pad every expert to max(h_e) and the token dimension to the largest expert load."""

    def __init__(self, w1, b1, w2t, b2, hs):
        e, d, hmax = len(hs), w1.shape[1], max(hs)
        self.w1 = w1.new_zeros(e, d, hmax)
        self.b1 = w1.new_zeros(e, 1, hmax)
        self.w2 = w1.new_zeros(e, hmax, d)
        off = 0
        with torch.no_grad():
            for i, h in enumerate(hs):
                self.w1[i, :, :h] = w1[off : off + h].t()
                self.b1[i, 0, :h] = b1[off : off + h]
                self.w2[i, :h] = w2t[off : off + h]
                off += h
        self.b2 = b2.detach().clone()[:, None, :]
        self.params = [self.w1, self.b1, self.w2, self.b2]

    def __call__(self, x, ids, tw):
        t, k = ids.shape
        e = self.w1.shape[0]
        flat = ids.reshape(-1)
        counts = torch.bincount(flat, minlength=e)
        cap = int(counts.max())  # host sync, as capacity-based implementations do
        sorted_e, order = torch.sort(flat, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(flat.numel(), device=x.device) - starts[sorted_e]
        tok = order // k
        buf = x.new_zeros(e, cap, x.shape[1])
        buf = buf.index_put((sorted_e, pos), x[tok])
        h = F.relu(torch.baddbmm(self.b1, buf, self.w1))
        y = torch.baddbmm(self.b2, h, self.w2)[sorted_e, pos]
        y = y.float() * tw.reshape(-1)[order].float()[:, None]
        return torch.zeros(t, x.shape[1], device=x.device).index_add_(0, tok, y).to(x.dtype)


class Dense:
    """Ceiling: relu(X @ W1) @ W2 over the T*k slots with h chosen for the same useful FLOPs."""

    def __init__(self, p, cfg: BenchConfig):
        m, d = cfg.tokens * cfg.topk, cfg.d_model
        h = max(64, int(round(p["useful_fwd_flop"] / (4.0 * m * d) / 64)) * 64)
        self.flop_fwd = 4.0 * m * d * h
        g = torch.Generator().manual_seed(1)
        dev, dt = p["x"].device, p["x"].dtype
        self.x = torch.randn(m, d, generator=g).to(dev, dt)
        self.w1 = (torch.randn(d, h, generator=g) / math.sqrt(d)).to(dev, dt)
        self.w2 = (torch.randn(h, d, generator=g) / math.sqrt(h)).to(dev, dt)
        self.grad = torch.randn(m, d, generator=g).to(dev, dt)
        self.params = [self.x, self.w1, self.w2]

    def __call__(self):
        return F.relu(self.x @ self.w1) @ self.w2


def build_fn(impl: str, cfg: BenchConfig, p: dict):
    """Return (callable, tensors whose .grad to reset, useful fwd FLOPs of this callable)."""
    bwd = cfg.mode == "fwd_bwd"
    hs = cfg.hidden_sizes
    names = ("x", "tw", "w1", "b1", "w2t", "b2")
    leaves = {n: p[n].detach().clone().requires_grad_(bwd) for n in names}
    flop = p["useful_fwd_flop"]
    if impl == "dense":
        dense = Dense(p, cfg)
        for t in dense.params:
            t.requires_grad_(bwd)
        fwd, grad, params, flop = dense, dense.grad, dense.params, dense.flop_fwd
    elif impl == "padded":
        pad = Padded(p["w1"], p["b1"], p["w2t"], p["b2"], hs)
        for t in pad.params:
            t.requires_grad_(bwd)
        x, tw = leaves["x"], leaves["tw"]
        fwd, grad, params = (lambda: pad(x, p["ids"], tw)), p["grad"], pad.params + [x, tw]
    else:
        a = (leaves["x"], p["ids"], leaves["tw"], leaves["w1"], leaves["b1"], leaves["w2t"], leaves["b2"], hs)
        if impl == "loop":
            fwd = lambda: moe_ffn_reference(*a)  # noqa: E731
        else:
            fwd = lambda: moe_ffn(*a, backend="triton")  # noqa: E731
        grad, params = p["grad"], list(leaves.values())
    if not bwd:

        def fn():
            with torch.no_grad():
                fwd()

        return fn, None, flop

    def fn():
        fwd().backward(grad)

    return fn, params, 3.0 * flop


def bench_ms(fn, device, grad_to_none, cpu_repeats: int = 5) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"))
    fn()  # warm-up
    ts = []
    for _ in range(cpu_repeats):
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def run_config(cfg: BenchConfig, impls, device, cpu_repeats: int = 5) -> list[BenchResult]:
    p = make_problem(cfg, device)
    times, flops = {}, {}
    for impl in impls:
        try:
            fn, g2n, flop = build_fn(impl, cfg, p)
            times[impl] = bench_ms(fn, device, g2n, cpu_repeats)
            flops[impl] = flop
        except Exception as exc:  # keep going (OOM, unsupported config): record NaN
            print(
                f"  {cfg.label} T={cfg.tokens} k={cfg.topk} {cfg.mode} {impl}: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            times[impl], flops[impl] = float("nan"), float("nan")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    useful = p["useful_fwd_flop"] * (3.0 if cfg.mode == "fwd_bwd" else 1.0)
    ceiling_tflops = flops.get("dense", float("nan")) / times.get("dense", float("nan")) / 1e9
    out = []
    for impl in impls:
        ms = times[impl]
        tflops = useful / ms / 1e9 if impl != "dense" else flops[impl] / ms / 1e9
        out.append(
            BenchResult(
                config=cfg,
                impl=impl,
                median_ms=ms,
                useful_gflop=useful / 1e9,
                tflops=tflops,
                frac_of_ceiling=tflops / ceiling_tflops,
                speedup_vs_loop=times.get("loop", float("nan")) / ms,
                speedup_vs_padded=times.get("padded", float("nan")) / ms,
            )
        )
    return out


# ----------------------------------------------------------------------------- reporting


def environment(device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{platform.processor() or platform.machine()}"
    return dict(
        device=name,
        torch=torch.__version__,
        triton=triton_version,
        cuda=torch.version.cuda or "",
        timestamp=datetime.now(timezone.utc).isoformat(),
    )


def default_out(env: dict) -> Path:
    dev = re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_")
    return Path(__file__).resolve().parent / "results" / f"moe_kernels_{dev}.csv"


def write_csv(path: Path, results: list[BenchResult], env: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.row(env) for r in results]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(results: list[BenchResult], impls) -> None:
    by_cfg: dict[BenchConfig, dict[str, BenchResult]] = {}
    for r in results:
        by_cfg.setdefault(r.config, {})[r.impl] = r
    main = "triton" if "triton" in impls else impls[0]
    head = (
        f"{'shape':<18}{'T':>6}{'k':>3} {'mode':<8}"
        + "".join(f"{i + ' ms':>11}" for i in impls)
        + f"{main + ' TF/s':>13}{'%ceil':>7}{'x loop':>8}{'x pad':>7}"
    )
    print(head)
    print("-" * len(head))
    for cfg, rs in by_cfg.items():
        m = rs[main]
        print(
            f"{cfg.label:<18}{cfg.tokens:>6}{cfg.topk:>3} {cfg.mode:<8}"
            + "".join(f"{_fmt(rs[i].median_ms, '.3f'):>11}" for i in impls)
            + f"{_fmt(m.tflops, '.3g'):>13}{_fmt(100 * m.frac_of_ceiling, '.0f'):>7}"
            + f"{_fmt(m.speedup_vs_loop, '.2f'):>8}{_fmt(m.speedup_vs_padded, '.2f'):>7}"
        )


def _geomean(vals):
    vals = [v for v in vals if v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")


def check_targets(results: list[BenchResult]) -> list[str]:
    tri = [r for r in results if r.impl == "triton"]
    if not tri:
        return ["targets: triton not measured"]
    lines = []
    specs = [
        ("speedup vs padded, mixed sizes, T>=1024", 1.3, "speedup_vs_padded", lambda c: c.mixed and c.tokens >= 1024),
        ("speedup vs loop, T>=4096", 3.0, "speedup_vs_loop", lambda c: c.tokens >= 4096),
        ("fraction of dense ceiling, T=16384", 0.5, "frac_of_ceiling", lambda c: c.tokens >= 16384),
    ]
    for name, target, attr, sel in specs:
        vals = [getattr(r, attr) for r in tri if sel(r.config)]
        if not vals:
            continue
        gm, lo = _geomean(vals), min(vals)
        verdict = "PASS" if gm >= target else "FAIL"
        lines.append(f"{verdict} {name}: geomean {gm:.2f}, min {lo:.2f} (target >= {target}, {len(vals)} shapes)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="CSV path (default: benchmarks/results/moe_kernels_<device>.csv)"
    )
    ap.add_argument("--quick", action="store_true", help="36-shape subset")
    ap.add_argument(
        "--dry-run", action="store_true", help="CPU-capable: torch baselines at tiny sizes; checks shapes/timing/CSV"
    )
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    ap.add_argument("--max-shapes", type=int, default=0, help="stop after N shapes (0 = all)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per shape on CPU")
    args = ap.parse_args(argv)
    impls = tuple(i for i in args.impls.split(",") if i)
    if not impls or any(i not in IMPLS for i in impls):
        print(f"error: --impls must be a subset of {','.join(IMPLS)}", file=sys.stderr)
        return 2

    if args.dry_run:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        shapes = dry_run_shapes()
        # on CPU the kernels run only under the Triton interpreter (TRITON_INTERPRET=1)
        if not triton_available(device):
            impls = tuple(i for i in impls if i != "triton")
    else:
        if not torch.cuda.is_available():
            print(
                "bench_moe_kernels: needs a CUDA GPU (none found); nothing measured. "
                "Use --dry-run to exercise the script on CPU."
            )
            return 2
        if "triton" in impls and not triton_available():
            print("bench_moe_kernels: triton is not installed", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        shapes = automoe_shapes(args.quick, args.dtype)
    if args.max_shapes:
        shapes = shapes[: args.max_shapes]

    env = environment(device)
    print(
        f"# {env['device']} | torch {env['torch']} | triton {env['triton']} | "
        f"cuda {env['cuda'] or '-'} | {len(shapes)} shapes | impls {','.join(impls)}"
    )
    results: list[BenchResult] = []
    t0 = time.time()
    for i, cfg in enumerate(shapes):
        results.extend(run_config(cfg, impls, device, args.repeats))
        if (i + 1) % 20 == 0:
            print(f"  ... {i + 1}/{len(shapes)} shapes, {time.time() - t0:.0f} s", flush=True)
    out = args.out or default_out(env)
    write_csv(out, results, env)
    print_table(results, impls)
    for line in check_targets(results):
        print(line)
    print(f"# wrote {len(results)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
