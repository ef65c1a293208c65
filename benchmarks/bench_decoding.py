"""What scoring quality under the timed decoding costs: BLEU and chrF of the demo's picks (and of
the supernet's largest and smallest archs, the quality bars' archs) decoded greedily and with the
latency protocol's beam (5), and the seconds each decoding takes.

The demo times latency with beam 5 (HAT's protocol), so its reports score BLEU with beam 5 too;
this measures what that costs the search stage and what it changes in the picks' BLEU. For each
demo folder (``moenas demo --out DIR`` or ``bench_demo.py``'s seeds), the picks of its
``demo.json`` are decoded from its supernet, one decoding after the other, on the same 200 test
sentences, with the supernet's inherited weights, on 1 thread as the search's quality step does.
Nothing else may run meanwhile (the seconds are timings).

    python benchmarks/bench_decoding.py runs/bench_demo/s0 runs/bench_demo/s1 runs/bench_demo/s2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_ref_timing import write_stamped  # noqa: E402  one CSV stamp for the timing benchmarks

OUT = Path(__file__).parent / "results" / "bench_decoding.csv"
ROLES = ("winner", "searched", "dense")


def score(demo_dir: Path, beams: tuple[int, ...], sentences: int) -> list[dict]:
    """One row per (pick, beam): BLEU, chrF, seconds."""
    import torch

    from moenas.arch import Arch, SearchSpace
    from moenas.search.fitness import SupernetFitness

    torch.set_num_threads(1)
    s = json.loads((demo_dir / "demo.json").read_text())
    fit = SupernetFitness(str(demo_dir / "supernet.pt"), s["config"]["valid_sentences"])
    archs = {}
    for role in ROLES:
        v = s["picks"].get(role)
        if v and v["arch_id"] not in archs:
            archs[v["arch_id"]] = role
    rows = []
    known = {a_id: Arch.from_json(text) for a_id, text in _evaluated(demo_dir).items()}
    space = SearchSpace.load(s["config"]["space"])
    for role, arch in (("largest", space.largest()), ("smallest", space.smallest())):  # the quality bars' archs
        known[arch.arch_id] = arch
        archs.setdefault(arch.arch_id, role)
    for arch_id, role in archs.items():
        arch = known[arch_id]
        for beam in beams:
            t = time.perf_counter()
            q = fit.quality(arch, sentences, samples=0, beam=beam)
            rows.append(
                {
                    "demo": str(demo_dir),
                    "seed": s["config"]["seed"],
                    "role": role,
                    "arch_id": arch_id,
                    "beam": beam,
                    "bleu": round(q["bleu"], 2),
                    "chrf": round(q["chrf"], 2),
                    "sentences": q["bleu_sentences"],
                    "seconds": round(time.perf_counter() - t, 2),
                }
            )
            print(
                f"{demo_dir.name} {role} {arch_id} beam {beam}: BLEU {q['bleu']:.1f} chrF {q['chrf']:.1f} "
                f"({rows[-1]['seconds']:.1f} s)",
                file=sys.stderr,
            )
    return rows


def _evaluated(demo_dir: Path) -> dict[str, str]:
    """arch_id -> arch JSON of every arch the demo's searches evaluated."""
    import csv

    out: dict[str, str] = {}
    for name in ("evaluated.csv", "dense_evaluated.csv"):
        p = demo_dir / "search" / name
        if p.is_file():
            with p.open(newline="") as f:
                out.update((r["arch_id"], r["arch"]) for r in csv.DictReader(f))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demos", type=Path, nargs="+", help="demo output folders")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    from moenas.profiler.fingerprint import fingerprint

    rows = [r for d in args.demos for r in score(d, tuple(args.beams), args.sentences)]
    write_stamped(rows, args.out, fingerprint("cpu"), {"threads": 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
