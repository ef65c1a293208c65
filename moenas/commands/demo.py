"""`moenas demo`: the whole pipeline on embedded defaults (tiny scale, this CPU, ~15 minutes);
`moenas demo --space lm-tiny` the same for a decoder-only MoE language model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import check_writable, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    from moenas.search.names import KINDS
    from moenas.search.train_config import SAMPLING

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline: profile, fit, train, search, measure, choose, export",
        description="Adapt a latency predictor to this CPU (the shipped one, corrected from ~14 archs measured "
        "here), train a supernet on the embedded corpus, search the space and its dense "
        "variant under a latency budget, measure the finalists of both side by side, choose "
        "the arch to deploy (MoE or dense) by measurement, and export it with its weights. "
        "Stages whose "
        "output exists in --out are reused, so an interrupted demo continues. --space lm-tiny: the same "
        "for a decoder-only MoE language model, under a decode ms/token budget, reporting perplexity, "
        "continuations, prefill ms, decode ms/token and tokens/s.",
    )
    p.add_argument(
        "--scale",
        default=None,
        help="tiny: minutes on a CPU [default]; wmt: paper scale (automoe-wmt space, needs --corpus DIR, hours); "
        "lm-tiny: a decoder-only language model (lm-tiny space), ~15 minutes on a CPU",
    )
    p.add_argument(
        "--space",
        default=None,
        help="the space to demo: runs the scale whose preset searches it (tiny, automoe-wmt, lm-tiny)",
    )
    p.add_argument("--out", default=None, help="output folder [runs/demo; lm-tiny: runs/demo-lm]")
    p.add_argument(
        "--corpus",
        default=None,
        help="'default' (the shipped demo corpus), 'gettext[:DIR]' (this machine's German gettext catalogs) or a folder of parallel text",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="profile --profile-n archs here and fit on them alone, instead of adapting the shipped predictor",
    )
    p.add_argument(
        "--reuse-profiles", action="store_true", help="use the shipped dataset as is (no measurement on this machine)"
    )
    p.add_argument("--profile-n", type=int, default=None, help="with --from-scratch: archs to profile [tiny: 60]")
    p.add_argument(
        "--transfer-n", type=int, default=None, help="archs measured here to adapt the shipped predictor [tiny: 14]"
    )
    p.add_argument("--transfer-holdout", type=int, default=None, help="more archs measured here to check it [tiny: 6]")
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=None,
        help="cap on timed seconds per measurement, a quick look (0 = the profiler's stop rule) [tiny: 1.0, wmt: 0]",
    )
    p.add_argument(
        "--drift-threshold",
        type=float,
        default=None,
        help="reference-model deviation that flags and re-measures profiled rows [tiny: 0.10, wmt: 0.05]",
    )
    p.add_argument("--predictor-model", default=None, help="latency model to fit (see moenas fit --help) [auto]")
    g = p.add_argument_group("supernet training (defaults measured: benchmarks/bench_demo_training.py)")
    g.add_argument("--train-steps", type=int, default=None, help="supernet training steps [tiny: 1350; lm-tiny: 350]")
    g.add_argument("--train-max-tokens", type=int, default=None, help="tokens per batch [tiny: 2048]")
    g.add_argument("--train-lr", type=float, default=None, help="peak learning rate [3e-3; lm-tiny: 2e-3]")
    g.add_argument("--train-warmup", type=int, default=None, help="warm-up steps [100]")
    g.add_argument("--train-dropout", type=float, default=None, help="dropout [0.0]")
    g.add_argument("--sampling", default=None, choices=SAMPLING, help="arch sampling rule [uniform; lm-tiny: sandwich]")
    g.add_argument(
        "--train-sandwich-random",
        type=int,
        default=None,
        help="sandwich sampling: random archs per step beside the largest and smallest [2; lm-tiny: 1]",
    )
    g.add_argument(
        "--train-largest-every",
        type=int,
        default=None,
        help="uniform sampling: every N-th step trains the largest arch (0: never) [tiny: 8]",
    )
    g.add_argument("--supernet", default=None, choices=KINDS, help="supernet kind [slice]")
    s = p.add_argument_group("search")
    s.add_argument("--max-latency-ms", type=float, default=None, help="latency budget [the median measured latency]")
    s.add_argument(
        "--max-decode-ms-per-token",
        type=float,
        default=None,
        help="a language model's budget: decode ms per generated token [the median measured]",
    )
    s.add_argument("--population", type=int, default=None, help="[tiny: 40]")
    s.add_argument("--parents", type=int, default=None, help="[tiny: 10]")
    s.add_argument("--mutations", type=int, default=None, help="[tiny: 15]")
    s.add_argument("--crossovers", type=int, default=None, help="[tiny: 15]")
    s.add_argument("--iterations", type=int, default=None, help="evolution iterations [tiny: 8]")
    s.add_argument(
        "--valid-sentences",
        type=int,
        default=None,
        help="validation sentences for fitness [tiny: 200; lm-tiny: 60 blocks, all]",
    )
    s.add_argument(
        "--bleu-sentences",
        type=int,
        default=None,
        help="test sentences for BLEU [200]; 0 skips the picks' BLEU (perplexity)",
    )
    s.add_argument(
        "--search-workers",
        type=int,
        default=None,
        help="fitness processes (the search is not timed) [0 = one per core]",
    )
    s.add_argument(
        "--final-k",
        type=int,
        default=None,
        help="finalists per family measured here (plus every arch tied with the best within noise) [4]",
    )
    s.add_argument(
        "--dense-iterations",
        type=int,
        default=None,
        help="iterations of the dense baseline's search (one expert per layer, same budget) [tiny: 4]",
    )
    s.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.search.pipeline import Demo, DemoConfig, scale_for

    names = (
        "corpus",
        "predictor_model",
        "profile_seconds",
        "drift_threshold",
        "profile_n",
        "transfer_n",
        "transfer_holdout",
        "train_steps",
        "train_max_tokens",
        "train_lr",
        "train_warmup",
        "train_dropout",
        "train_largest_every",
        "train_sandwich_random",
        "sampling",
        "supernet",
        "max_latency_ms",
        "max_decode_ms_per_token",
        "population",
        "parents",
        "mutations",
        "crossovers",
        "iterations",
        "valid_sentences",
        "bleu_sentences",
        "final_k",
        "dense_iterations",
        "search_workers",
        "seed",
    )
    cfg = DemoConfig.for_scale(
        scale_for(args.scale, args.space),
        out=Path(args.out) if args.out else None,
        from_scratch=args.from_scratch or None,
        reuse_profiles=args.reuse_profiles or None,
        dense_baseline=False if args.no_dense else None,
        **{n: getattr(args, n) for n in names},
    )
    check_writable(cfg.out, kind="dir")
    s = Demo(cfg).run()
    if args.json:
        print_json(s)
    else:
        print_summary(s, cfg.out)
    return 0 if s["final"]["winner"] else 1


def print_summary(s: dict, out: Path) -> None:
    """The answer first, then the picks side by side (the family's columns), the stage times,
    the exported model and what onnxruntime did with it."""
    from moenas.search.demo_family import DEMO_FAMILIES, budget_text
    from moenas.search.report import Verification

    from .search import SUMMARIES

    fin, kind = s["final"], DEMO_FAMILIES.for_family(s["family"])
    print("\n" + (fin["verdict"] if fin["winner"] else f"nothing to deploy: {fin['verdict']}"))
    picks = {key: Verification.from_dict(v) for key, v in s["picks"].items()}
    beam = next((v.beam for v in picks.values() if v.beam), "-")
    print(f"searched under {budget_text(kind.quantity, s['facts']['budget_ms'])}")
    print(SUMMARIES.for_family(s["family"]).table(picks, fin["winner"], {"quality_beam": beam}))
    drift = next((v.drift_note() for v in picks.values() if v.machine_drifted), "")
    if drift:
        print(f"note: {drift}")
    print()
    print(table([[k, f"{v:.1f}"] for k, v in s["timings_s"].items()], ["stage", "seconds"]))
    dep = s["facts"].get("deploy")
    if dep:
        print(f"exported with its weights to {dep['model_dir']}; {kind.deploy_text(dep)}")
    print(f"report: {out / 'README.md'}")
