#!/usr/bin/env python
"""Choose per-device launch configurations for the moenas.moe_kernels Triton kernels.

For every shape class (dtype, model dim D, token-slot bucket T*k) this times each kernel
(``up``: D -> h_e with bias+ReLU, ``down``: h_e -> D with bias and routing weight, ``wgrad``:
both weight-gradient launches) over a candidate list on a representative heterogeneous layer
(8 experts, hidden sizes 1024/2048/3072, top-2, random routing) and writes the fastest to
``moe_kernels/configs/<device>.json`` (merging with what is there), which
``moenas.moe_kernels.config.get_config`` reads at run time.

Usage (on a CUDA GPU):
  python benchmarks/tune_moe_kernels.py                      # full candidate lists
  python benchmarks/tune_moe_kernels.py --quick              # short lists (~ a few minutes)
  python benchmarks/tune_moe_kernels.py --dtypes bf16 --d-models 512 --slots 4096,16384
  python benchmarks/tune_moe_kernels.py --dry-run            # print the plan, measure nothing
Exit status: 0 done; 2 no CUDA GPU (without --dry-run) or bad arguments.
Compiling a candidate costs ~1 s the first time; compiled kernels are reused across classes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from moenas.moe_kernels import GemmConfig, MoEKernelConfig, WgradConfig
from moenas.moe_kernels.config import (
    CONFIG_DIR,
    config_to_json,
    default_config,
    device_config_path,
    shape_class,
    slot_bucket,
)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SLOTS = (64, 256, 1024, 4096, 16384, 32768)
HIDDEN = (1024, 2048, 3072, 1024, 2048, 3072, 1024, 2048)
TOPK = 2


def gemm_candidates(quick: bool) -> list[GemmConfig]:
    if quick:
        rows = [
            (64, 128, 64, 4, 3),
            (64, 128, 64, 4, 4),
            (128, 128, 64, 8, 3),
            (64, 256, 64, 8, 3),
            (128, 256, 64, 8, 3),
            (32, 128, 64, 4, 4),
            (64, 64, 64, 4, 4),
            (128, 64, 64, 4, 4),
            (128, 128, 32, 4, 4),
            (64, 128, 128, 4, 3),
            (32, 64, 128, 4, 3),
            (16, 128, 128, 4, 3),
        ]
    else:
        rows = [
            (bm, bn, bk, w, s)
            for bm, bn, bk, w, s in itertools.product((32, 64, 128), (64, 128, 256), (32, 64), (4, 8), (3, 4))
            if bm * bn <= 128 * 256
        ]
    return [GemmConfig(bm, bn, bk, 8, w, s) for bm, bn, bk, w, s in rows]


def wgrad_candidates(quick: bool) -> list[WgradConfig]:
    if quick:
        rows = [
            (128, 128, 64, 8, 3),
            (128, 128, 32, 4, 4),
            (64, 128, 64, 4, 3),
            (128, 64, 64, 4, 3),
            (64, 64, 64, 4, 4),
            (128, 256, 64, 8, 3),
            (256, 128, 64, 8, 3),
            (64, 128, 128, 4, 3),
        ]
    else:
        rows = [
            (bh, bd, br, w, s)
            for bh, bd, br, w, s in itertools.product((64, 128, 256), (64, 128), (32, 64), (4, 8), (3, 4))
        ]
    return [WgradConfig(bh, bd, br, w, s) for bh, bd, br, w, s in rows]


class Problem:
    """Buffers of one shape class, ready for single-kernel launches."""

    def __init__(self, dtype, d_model: int, slots: int, device, hidden=HIDDEN):
        from moenas.moe_kernels.routing import hidden_offsets_tensor, sort_slots

        g = torch.Generator().manual_seed(0)
        self.hidden = tuple(hidden)
        e = len(self.hidden)
        t = max(1, slots // TOPK)
        h_total = sum(self.hidden)
        self.t, self.d, self.n = t, d_model, t * TOPK
        logits = torch.randn(t, e, generator=g)
        tw, ids = torch.softmax(logits, -1).topk(TOPK, -1)
        mk = lambda *s: (torch.randn(*s, generator=g) * 0.05).to(device, dtype)  # noqa: E731
        self.x, self.w1, self.w2t = mk(t, d_model), mk(h_total, d_model), mk(h_total, d_model)
        self.b1, self.b2, self.grad = mk(h_total), mk(e, d_model), mk(t, d_model)
        self.tw = tw.to(device, dtype).contiguous()
        self.ids = ids.to(device)
        self.sorted_slots, self.offsets = sort_slots(self.ids, e)
        self.hoffs = hidden_offsets_tensor(self.hidden, device)
        self.hbuf = torch.empty(self.n, max(self.hidden), device=device, dtype=dtype)
        self.ys = torch.empty(self.n, d_model, device=device, dtype=torch.float32)
        self.dw = torch.empty_like(self.w1)
        self.db1 = torch.empty_like(self.b1)
        self.db2 = torch.empty_like(self.b2)

    def up(self, cfg: MoEKernelConfig):
        from moenas.moe_kernels import launch

        return lambda: launch._launch_up(
            self.x,
            self.w1,
            self.b1,
            None,
            None,
            self.hbuf,
            TOPK,
            self.sorted_slots,
            self.offsets,
            self.hoffs,
            max(self.hidden),
            cfg,
            {},
            relu=True,
            relu_grad=False,
        )

    def down(self, cfg: MoEKernelConfig):
        from moenas.moe_kernels import launch

        return lambda: launch._launch_down(
            self.hbuf,
            self.w2t,
            self.b2,
            self.tw.reshape(-1),
            None,
            self.ys,
            self.sorted_slots,
            self.offsets,
            self.hoffs,
            self.d,
            cfg,
            {},
        )

    def wgrad(self, cfg: MoEKernelConfig):
        from moenas.moe_kernels import launch

        def fn():
            launch._launch_wgrad(
                self.hbuf,
                self.grad,
                self.tw.reshape(-1),
                self.dw,
                None,
                self.db2,
                TOPK,
                self.sorted_slots,
                self.offsets,
                self.hoffs,
                self.hidden,
                cfg,
            )
            launch._launch_wgrad(
                self.hbuf,
                self.x,
                None,
                self.dw,
                self.db1,
                None,
                TOPK,
                self.sorted_slots,
                self.offsets,
                self.hoffs,
                self.hidden,
                cfg,
            )

        return fn


def time_ms(fn) -> float:
    from triton.testing import do_bench

    try:
        return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))
    except Exception:  # out of shared memory / registers, or another launch failure
        return math.inf


def tune_class(prob: Problem, dtype, quick: bool, log) -> tuple[dict, dict]:
    base = default_config(dtype)
    best, best_ms = {}, {}
    plans = [
        ("up", gemm_candidates(quick), lambda c: MoEKernelConfig(up=c), prob.up),
        ("down", gemm_candidates(quick), lambda c: MoEKernelConfig(down=c), prob.down),
        ("wgrad", wgrad_candidates(quick), lambda c: MoEKernelConfig(wgrad=c), prob.wgrad),
    ]
    for kind, cands, wrap, make in plans:
        default_ms = time_ms(make(base))
        timings = [(time_ms(make(wrap(c))), i, c) for i, c in enumerate(cands)]
        ms, _, c = min(timings)
        if not ms < default_ms:
            ms, c = default_ms, getattr(base, kind)
        best[kind], best_ms[kind] = c, ms
        log(f"    {kind:<5} best {ms:.4f} ms (default {default_ms:.4f} ms) {c}")
    cfg = MoEKernelConfig(up=best["up"], down=best["down"], wgrad=best["wgrad"])
    return config_to_json(cfg), best_ms


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dtypes", default="bf16,fp16")
    ap.add_argument("--d-models", default="512,640")
    ap.add_argument(
        "--slots",
        default=",".join(map(str, SLOTS)),
        help="token-slot counts T*k to tune (rounded to power-of-two buckets)",
    )
    ap.add_argument("--quick", action="store_true", help="short candidate lists")
    ap.add_argument("--out-dir", type=Path, default=CONFIG_DIR)
    ap.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = ap.parse_args(argv)
    try:
        dtypes = [DTYPES[s] for s in args.dtypes.split(",") if s]
        dims = [int(s) for s in args.d_models.split(",") if s]
        slots = sorted({slot_bucket(int(s)) for s in args.slots.split(",") if s})
    except (KeyError, ValueError) as exc:
        print(f"error: bad argument: {exc}", file=sys.stderr)
        return 2
    classes = [(dt, d, s) for dt in dtypes for d in dims for s in slots]
    n_g, n_w = len(gemm_candidates(args.quick)), len(wgrad_candidates(args.quick))
    print(f"# {len(classes)} shape classes x ({n_g} up + {n_g} down + {n_w} wgrad candidates)")
    if args.dry_run:
        for dt, d, s in classes:
            print("  " + shape_class(dt, d, s))
        return 0
    if not torch.cuda.is_available():
        print("tune_moe_kernels: needs a CUDA GPU (none found); nothing tuned.")
        return 2
    import triton

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    path = device_config_path(name, args.out_dir)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc.update(
        device=name,
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda or "",
        updated=datetime.now(timezone.utc).isoformat(),
    )
    table = doc.setdefault("configs", {})
    t0 = time.time()
    for dt, d, s in classes:
        key = shape_class(dt, d, s)
        print(f"  {key}", flush=True)
        prob = Problem(dt, d, s, device)
        entry, ms = tune_class(prob, dt, args.quick, print)
        entry["ms"] = {k: round(v, 5) for k, v in ms.items()}
        table[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")  # save as we go
        del prob
        torch.cuda.empty_cache()
    print(f"# wrote {len(classes)} classes to {path} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
