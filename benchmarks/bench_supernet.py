"""Supernet evidence: learning curves, throughput, and inherited-vs-standalone rank agreement.

Claims measured (figures to report, not timed tests):
  1. validation loss of the largest and smallest archs over supernet training, per
     (supernet kind x sampling rule), on the embedded gettext corpus with the `tiny` space;
  2. training tokens/s on this machine;
  3. Kendall tau between each supernet's inherited-weight validation loss and the validation
     loss of the same archs trained standalone for the same number of steps (>= 10 archs), for
     slice and MoS x uniform and sandwich: does MoS rank architectures better?

The default budget runs in about 15 minutes on a 2-core CPU with 1 thread; it is a smoke-scale
budget (a few hundred steps), so the taus are noisy: raise --steps / --archs on a bigger machine.

    python benchmarks/bench_supernet.py                    # default budget
    python benchmarks/bench_supernet.py --steps 2000 --archs 20 --threads 8

Results: benchmarks/results/bench_supernet_{curves,rank}.csv with device and versions columns.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from moenas.arch import SearchSpace
from moenas.search.checkpoint import load_supernet, validation_data
from moenas.search.evaluation import validation_loss
from moenas.search.train_config import TrainConfig
from moenas.search.trainer import train

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    space: str = "tiny"
    corpus: str = "default"
    steps: int = 200  # supernet steps, and each standalone arch's steps
    archs: int = 10  # archs ranked
    max_tokens: int = 1024
    warmup: int = 50
    lr: float = 1e-3
    valid_sentences: int = 200
    evals: int = 5  # validation points along the supernet curves
    combos: tuple[str, ...] = ("slice/uniform", "mos/uniform", "slice/sandwich", "mos/sandwich")
    mos_mode: str = "layer"
    mos_init: str = "copy"
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class RankResult:
    combo: str
    steps: int
    archs: int
    kendall_tau: float
    p_value: float
    mean_gap: float  # mean(inherited - standalone) validation loss
    tokens_per_s: float
    train_wall_s: float
    largest_val_loss: float
    smallest_val_loss: float


def device_info() -> dict[str, str]:
    from moenas.profiler.fingerprint import bench_environment

    return bench_environment(packages=("tokenizers",))


def run(
    bc: BenchConfig, workdir: Path, log=print, reuse: dict[str, float] | None = None
) -> tuple[list[dict], list[RankResult], list[dict]]:
    torch.set_num_threads(bc.threads)
    space = SearchSpace.load(bc.space)
    archs = space.sample_n(bc.archs, seed=bc.seed + 123)
    common = dict(
        space=bc.space,
        corpus=bc.corpus,
        steps=bc.steps,
        max_tokens=bc.max_tokens,
        warmup=bc.warmup,
        lr=bc.lr,
        valid_sentences=bc.valid_sentences,
        bleu_sentences=0,
        progress=False,
        seed=bc.seed,
        device="cpu",
        eval_every=max(bc.steps // bc.evals, 1),
        mos_mode=bc.mos_mode,
        mos_init=bc.mos_init,
    )
    quiet = lambda msg: None  # noqa: E731

    # standalone training of each arch, same steps and data: the "ground truth" ranking
    standalone = []
    batches = None
    if reuse is not None:
        missing = [a.arch_id for a in archs if a.arch_id not in reuse]
        if missing:
            raise SystemExit(f"--reuse-standalone lacks archs {missing}")
    for i, a in enumerate(archs):
        if reuse is not None:
            standalone.append(reuse[a.arch_id])
            continue
        t = time.time()
        m = train(
            TrainConfig(**{**common, "eval_every": bc.steps}, arch=a.to_json()), workdir / f"arch{i}.pt", log=quiet
        )
        standalone.append(m["history"][-1]["val_loss"])
        log(f"standalone {i + 1}/{len(archs)} {a.arch_id}: val_loss {standalone[-1]:.4f} ({time.time() - t:.0f} s)")

    curves: list[dict] = []
    results: list[RankResult] = []
    from scipy.stats import kendalltau

    for combo in bc.combos:
        kind, sampling = combo.split("/")
        out = workdir / f"{kind}-{sampling}.pt"
        t = time.time()
        meta = train(TrainConfig(**common, supernet=kind, sampling=sampling), out, log=quiet)
        wall = time.time() - t
        for h in meta["history"]:
            curves.append({"combo": combo, "step": h["step"], "arch": h["arch"], "val_loss": h["val_loss"]})
        net, m = load_supernet(out)
        if batches is None:
            batches, _ = validation_data(m)
        inherited = validation_loss(net, archs, batches)
        tau, p = kendalltau(inherited, standalone)
        last = {h["arch"]: h["val_loss"] for h in meta["history"] if h["step"] == bc.steps}
        r = RankResult(
            combo,
            bc.steps,
            len(archs),
            round(float(tau), 4),
            round(float(p), 4),
            round(sum(i - s for i, s in zip(inherited, standalone)) / len(archs), 4),
            meta["tokens_per_s"],
            round(wall, 1),
            last["largest"],
            last["smallest"],
        )
        results.append(r)
        log(
            f"{combo}: tau {r.kendall_tau:+.3f} (p {r.p_value:.3f}), gap {r.mean_gap:+.3f}, "
            f"{r.tokens_per_s:.0f} tok/s, largest {r.largest_val_loss:.3f}, smallest {r.smallest_val_loss:.3f}"
        )
    rows = [
        {"arch_id": a.arch_id, "steps": bc.steps, "val_loss": v, "arch": a.to_json()} for a, v in zip(archs, standalone)
    ]
    return curves, results, rows


def read_standalone(path: Path, steps: int) -> dict[str, float]:
    """arch_id -> standalone val loss from an earlier run's standalone CSV (same steps only)."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if any(int(r["steps"]) != steps for r in rows):
        raise SystemExit(f"{path}: standalone results are for other step counts than {steps}")
    return {r["arch_id"]: float(r["val_loss"]) for r in rows}


def write_csv(path: Path, rows: list[dict], extra: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**r, **extra} for r in rows]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = BenchConfig()
    ap.add_argument("--space", default=d.space)
    ap.add_argument("--corpus", default=d.corpus)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--archs", type=int, default=d.archs)
    ap.add_argument("--max-tokens", type=int, default=d.max_tokens)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--mos-mode", choices=["layer", "neuron"], default=d.mos_mode)
    ap.add_argument("--combos", default=",".join(d.combos), help="comma-separated kind/sampling pairs")
    ap.add_argument("--mos-init", choices=["copy", "independent"], default=d.mos_init)
    ap.add_argument(
        "--reuse-standalone",
        type=Path,
        metavar="CSV",
        help="take the standalone losses from an earlier run's bench_supernet_standalone*.csv",
    )
    ap.add_argument("--tag", default="", help="suffix for the result files (e.g. a variant's name)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    bc = BenchConfig(
        space=a.space,
        corpus=a.corpus,
        steps=a.steps,
        archs=a.archs,
        max_tokens=a.max_tokens,
        threads=a.threads,
        mos_mode=a.mos_mode,
        mos_init=a.mos_init,
        combos=tuple(a.combos.split(",")),
    )
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_supernet_") as tmp:
        reuse = read_standalone(a.reuse_standalone, bc.steps) if a.reuse_standalone else None
        curves, results, alone = run(bc, Path(tmp), log=lambda m: print(m, file=sys.stderr, flush=True), reuse=reuse)
    extra = {
        **device_info(),
        "threads": str(bc.threads),
        "max_tokens": str(bc.max_tokens),
        "space": bc.space,
        "corpus": bc.corpus,
        "mos_mode": bc.mos_mode,
        "mos_init": bc.mos_init,
        "date": time.strftime("%Y-%m-%d"),
    }
    tag = f"-{a.tag}" if a.tag else ""
    write_csv(a.out / f"bench_supernet_curves{tag}.csv", curves, extra)
    write_csv(a.out / f"bench_supernet_rank{tag}.csv", [asdict(r) for r in results], extra)
    if reuse is None:
        write_csv(a.out / f"bench_supernet_standalone{tag}.csv", alone, extra)
    from moenas.commands._common import table

    print(
        table(
            [
                [r.combo, r.kendall_tau, r.p_value, r.mean_gap, r.tokens_per_s, r.largest_val_loss, r.smallest_val_loss]
                for r in results
            ],
            ["combo", "kendall_tau", "p", "gap", "tok/s", "largest", "smallest"],
        )
    )
    print(
        f"{bc.archs} archs, {bc.steps} steps each, {extra['device']}, {bc.threads} thread(s); "
        f"total {time.time() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
