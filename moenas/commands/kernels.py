"""`moenas kernels`: check the heterogeneous grouped-expert kernels on this device, and say how
to benchmark them."""

from __future__ import annotations

import argparse
import os
import sys

from moenas.arch import UserError

from ._common import print_json, table

BENCH = "python benchmarks/bench_moe_kernels.py --out benchmarks/results/moe_kernels_<device>.csv"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "kernels",
        help="check the Triton MoE kernels against the PyTorch reference here",
        description="Runs the grouped heterogeneous-expert kernels on a few shapes (experts of "
        "different sizes, an idle expert, top-1 and top-2) and compares outputs and "
        "gradients with the PyTorch loop. On a CPU this uses the Triton interpreter "
        "(tiny shapes, fp32). Speed: " + BENCH + " on a GPU.",
    )
    p.add_argument("--device", default=None, choices=["cuda", "cpu"], help="cuda or cpu [cuda if present]")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here")
    if device == "cpu" and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported
    from moenas.moe_kernels import moe_ffn, pack_expert_weights, triton_available

    if not triton_available(device):
        raise UserError(f"Triton cannot run on {device} here (install the [gpu] extra; on CPU set TRITON_INTERPRET=1)")
    dtype = getattr(torch, args.dtype)
    if device == "cpu" and dtype == torch.bfloat16:
        raise UserError("bf16 is checked on CUDA only: the Triton interpreter's bf16 dot is wrong")
    shapes = (
        [  # (tokens, d_model, expert sizes, top_k, idle expert?)
            (7, 32, (48, 16, 80), 1, True),
            (33, 64, (64, 128, 32, 96), 2, False),
        ]
        if device == "cpu"
        else [(4096, 512, (1024, 2048, 3072, 1024), 1, False), (4096, 640, (3072, 2048), 2, True)]
    )
    rows = []
    g = torch.Generator().manual_seed(0)
    for t, d, sizes, k, idle in shapes:
        fc1 = [torch.nn.Linear(d, h) for h in sizes]
        fc2 = [torch.nn.Linear(h, d) for h in sizes]
        packed = [
            p.detach().to(device, dtype if p.is_floating_point() else p.dtype) if torch.is_tensor(p) else p
            for p in pack_expert_weights(fc1, fc2)
        ]
        x = torch.randn(t, d, generator=g).to(device, dtype)
        n_exp = len(sizes) - (1 if idle else 0)  # with idle, the last expert gets no token
        ids = torch.stack([torch.randperm(n_exp, generator=g)[:k] for _ in range(t)]).to(device)
        w = torch.rand(t, k, generator=g).to(device, dtype)
        errs = {}
        outs = {}
        for backend in ("torch", "triton"):
            leaves = [x.clone().requires_grad_(True), w.clone().requires_grad_(True)] + [
                p.clone().requires_grad_(True) if torch.is_tensor(p) else p for p in packed[:4]
            ]
            out = moe_ffn(leaves[0], ids, leaves[1], *leaves[2:], packed[4], backend=backend)
            out.float().square().sum().backward()
            outs[backend] = [out] + [p.grad for p in leaves if torch.is_tensor(p)]
        for name, a, b in zip(["out", "dx", "dw_route", "dw1", "db1", "dw2", "db2"], outs["triton"], outs["torch"]):
            errs[name] = float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))
        worst = max(errs.values())
        tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
        rows.append(
            {
                "tokens": t,
                "d_model": d,
                "experts": "/".join(map(str, sizes)),
                "top_k": k,
                "idle_expert": idle,
                "max_rel_err": worst,
                "ok": worst <= tol,
            }
        )
    if args.json:
        print_json({"device": device, "dtype": args.dtype, "cases": rows})
    else:
        print(
            table(
                [
                    [
                        r["tokens"],
                        r["d_model"],
                        r["experts"],
                        r["top_k"],
                        r["idle_expert"],
                        f"{r['max_rel_err']:.2e}",
                        "ok" if r["ok"] else "FAIL",
                    ]
                    for r in rows
                ],
                ["tokens", "D", "expert sizes", "top-k", "idle expert", "max rel err (out, grads)", "verdict"],
            )
        )
        print(f"device {device}, {args.dtype}; benchmark speed on a GPU with: {BENCH}")
    return 0 if all(r["ok"] for r in rows) else 1
