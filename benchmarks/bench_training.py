"""Supernet training throughput on this CPU: before/after the fused loss and optimizer, and
the fraction of the machine's matmul ceiling reached.

Claim measured: tokens/s of `moenas train` (uniform sampling, slice supernet, tiny space, the
embedded corpus) on the *same* archs and batches, for
  before: logits materialised + F.cross_entropy (label smoothing) + foreach AdamW (the trainer
          until 2026-12-01);
  after:  the chunked fused projection + cross-entropy (search/loss.py) + fused AdamW;
at 1024, 2048 and 4096 tokens per batch. Both compute the same loss (checked to 1e-6 here), so loss
per token is equal by construction. Achieved GFLOP/s = the step's matmul FLOPs
(torch.utils.flop_counter, forward + backward) / its time, against the fp32 matmul rate of the
model's two dominant shapes measured in the same run.

Never run it beside a training run or a test suite: it times the 2-core machine.

    python benchmarks/bench_training.py [--steps 20] [--threads 2]

Results: benchmarks/results/bench_training.csv (device, versions, one row per variant x batch size).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from moenas.profiler.fingerprint import bench_environment
from moenas.search.loss import model_aux_loss, run_model
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import Trainer

RESULTS = Path(__file__).parent / "results"


class UnfusedLoss(nn.Module):
    """The loss as the trainer computed it before: full (N, V) logits, then F.cross_entropy."""

    def __init__(self, model, label_smoothing, aux_coef):
        super().__init__()
        self.model, self.label_smoothing, self.aux_coef = model, label_smoothing, aux_coef

    def forward(self, src, tgt_in, tgt_out, archs):
        total, parts = torch.zeros(()), []
        for arch in archs:
            logits = run_model(self.model, src, tgt_in, arch)
            ce = F.cross_entropy(
                logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=0, label_smoothing=self.label_smoothing
            )
            total = total + ce + self.aux_coef * model_aux_loss(self.model)
            parts.append(ce.detach())
        return total, torch.stack(parts)


def make_trainer(max_tokens: int, variant: str, work: Path) -> Trainer:
    cfg = TrainConfig(
        space="tiny",
        corpus="default",
        steps=10_000,
        max_tokens=max_tokens,
        sampling="uniform",
        progress=False,
        bleu_sentences=0,
        seed=0,
        device="cpu",
    )
    tr = Trainer(cfg, work / f"{variant}-{max_tokens}.pt", None, 0, 1, torch.device("cpu"), lambda m: None)
    if variant == "before":
        tr.runner = UnfusedLoss(tr.model, cfg.smoothing_for(tr.model.space.family), cfg.aux_coef)
        tr.opt = torch.optim.AdamW(
            tr.model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay, foreach=True
        )
    return tr


def step_flops(tr: Trainer) -> float:
    """Matmul FLOPs of the trainer's next step (forward + backward), without advancing it."""
    state = (tr.sampler.state_dict(), tr.stream.state_dict())
    archs = tr.sampler.next(tr.step_no)
    b = next(tr.stream)
    with FlopCounterMode(display=False) as fc:
        loss, _ = tr.runner(b.src, b.tgt_in, b.tgt_out, archs)
        loss.backward()
    tr.model.zero_grad(set_to_none=True)
    tr.sampler.load_state_dict(state[0])
    tr.stream.load_state_dict(state[1])
    return float(fc.get_total_flops())


def matmul_ceiling(shapes, reps: int = 20) -> dict[str, float]:
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t)
        out[f"{m}x{k}@{k}x{n}"] = 2 * m * k * n / statistics.median(ts) / 1e9
    return out


def run(max_tokens: int, variant: str, steps: int, work: Path) -> dict:
    tr = make_trainer(max_tokens, variant, work)
    for _ in range(3):  # warm-up (allocator, first-touch)
        tr.step()
    flops, tokens, losses = 0.0, 0, []
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, n = tr.step()
        tokens += n
        losses.append(loss)
    dt = time.perf_counter() - t0
    tr2 = make_trainer(max_tokens, variant, work)  # FLOPs of the same steps, counted apart (the counter slows them)
    for _ in range(3):
        tr2.step()
    for _ in range(min(steps, 5)):
        flops += step_flops(tr2)
        tr2.step()
    flops *= steps / min(steps, 5)
    return {
        "variant": variant,
        "max_tokens": max_tokens,
        "steps": steps,
        "seconds": round(dt, 2),
        "tokens_per_s": round(tokens / dt, 1),
        "steps_per_s": round(steps / dt, 3),
        "gflop_per_s": round(flops / dt / 1e9, 1),
        "mean_train_loss": round(sum(losses) / len(losses), 5),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant (default: 20)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, what training uses here)")
    ap.add_argument(
        "--max-tokens", type=int, nargs="+", default=[1024, 2048, 4096], help="batch sizes (default: 1024 2048 4096)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_training.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = bench_environment()
    ceil = matmul_ceiling([(2048, 128, 512), (2048, 128, 8000)])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for mt in args.max_tokens:
            for variant in ("before", "after"):
                r = run(mt, variant, args.steps, Path(d))
                r.update({f"ceiling_gflops_{k}": round(v, 1) for k, v in ceil.items()})
                r["fraction_of_ceiling"] = round(r["gflop_per_s"] / min(ceil.values()), 3)
                r.update({**env, "threads": args.threads})
                rows.append(r)
                print(
                    f"{variant:6} {mt:5} tokens: {r['tokens_per_s']:8.0f} tok/s, {r['steps_per_s']:.2f} steps/s, "
                    f"{r['gflop_per_s']:.0f} GFLOP/s ({r['fraction_of_ceiling']:.0%} of the slower ceiling), "
                    f"mean loss {r['mean_train_loss']:.4f}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print("matmul ceiling (GFLOP/s):", {k: round(v) for k, v in ceil.items()})
    for mt in args.max_tokens:
        b, a = [r for r in rows if r["max_tokens"] == mt]
        print(f"{mt} tokens: after / before = {a['tokens_per_s'] / b['tokens_per_s']:.2f}x tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
