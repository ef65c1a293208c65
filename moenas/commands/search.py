"""`moenas search`: constrained evolutionary search with a supernet, a predictor and a budget.

Either model family: a translation space (encoder-decoder) or a decoder-only language model's,
whose budgets may also limit the prompt's prefill and the decode time per token, each with a
predictor of that target (``--predictor`` takes one per target)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry
from moenas.search.budgets import DECODE_PER_TOKEN, PREFILL
from moenas.search.fitness_runners import RUNNERS

from ._common import PICK_LABELS, Column, check_range, check_writable, params_cell, picks_table, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="find the best archs under a latency / FLOPs / params budget",
        description="Evolutionary search (HAT/AutoMoE; NSGA-II with --objectives loss,latency). "
        "Fitness = validation loss with inherited supernet weights; constraints are "
        "checked before any evaluation; the winners are re-measured on this device. "
        "A language-model space (e.g. lm-tiny, with a supernet from `moenas train --space lm-tiny`) "
        "reports perplexity and sample continuations instead of BLEU and can also be limited by "
        "--max-prefill-ms and --max-decode-ms-per-token, each with a predictor of that target.",
    )
    p.add_argument("--space", default="tiny", help="search space name or YAML [tiny]")
    p.add_argument("--supernet", required=True, help="supernet checkpoint from `moenas train`")
    p.add_argument(
        "--predictor",
        required=True,
        nargs="+",
        metavar="DIR",
        help="predictor directory from `moenas fit`; one per target (total, prefill, decode) when budgets "
        "limit several, all fitted under one protocol on this space",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        help="latency budget (ms) of the whole inference on the predictor's device (a predictor of target total)",
    )
    p.add_argument(
        "--max-prefill-ms",
        type=float,
        default=None,
        help="language models: budget (ms) of the prompt's prefill (a predictor of target prefill)",
    )
    p.add_argument(
        "--max-decode-ms-per-token",
        type=float,
        default=None,
        help="language models: budget (ms) per generated token, the decode time over the protocol's "
        "decode steps (a predictor of target decode)",
    )
    p.add_argument("--max-gflops", type=float, default=None, help="FLOPs budget under the latency protocol (GFLOPs)")
    p.add_argument("--max-params", type=float, default=None, help="parameter budget (all experts)")
    p.add_argument(
        "--max-active-params",
        type=float,
        default=None,
        help="budget of the parameters one token passes through (router and top-k experts)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="the predictor's upper bound at this level must meet the latency budget [0.9]; 0 = use the mean",
    )
    p.add_argument("--population", type=int, default=125)
    p.add_argument("--parents", type=int, default=25)
    p.add_argument("--mutations", type=int, default=50)
    p.add_argument("--crossovers", type=int, default=50)
    p.add_argument("--mutate-prob", type=float, default=0.3)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--objectives", default="loss", help="'loss' (single objective) or 'loss,latency' (NSGA-II) [loss]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-sentences", type=int, default=None, help="fixed validation subset size [the checkpoint's]")
    p.add_argument(
        "--fitness",
        choices=["loss", "bleu"],
        default="loss",
        help="what evolution minimises: validation loss (HAT, AutoMoE) or -BLEU of greedy decoding (~10x slower; "
        "translation only) [loss]",
    )
    p.add_argument(
        "--bleu-sentences",
        type=int,
        default=200,
        help="test-split sentences for the BLEU and translations of the re-measured archs (a language model: "
        "any positive number asks for its perplexity and continuations); 0 = none [200]",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (or Ray actors) evaluating fitness [1]")
    p.add_argument(
        "--runner",
        choices=RUNNERS,
        default="auto",
        help="where fitness runs: auto = this process for 1 worker, a process pool for more; "
        "process = a local process pool; ray = Ray actors, one supernet each [auto]",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="with --runner ray: a running Ray cluster (head's HOST:PORT, or 'auto'); "
        "none = start a local one of --workers CPUs",
    )
    p.add_argument(
        "--random-baseline", action="store_true", help="also run random search with the same number of evaluations"
    )
    p.add_argument(
        "--final-k",
        type=int,
        default=4,
        help="finalists per family measured on this device: the K best by fitness, plus every arch tied with "
        "the best within noise; the answer is the best that meets the budget measured [4]",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="choose among the finalists by predicted latency, without timing them (the answer is unverified)",
    )
    p.add_argument(
        "--no-dense",
        action="store_true",
        help="skip the dense baseline (the best arch with one expert per layer under the same budget)",
    )
    p.add_argument(
        "--dense-iterations",
        type=int,
        default=None,
        help="evolution iterations of the dense baseline's search [the same as --iterations]",
    )
    p.add_argument("--backend", default="onnxruntime", help="profiler backend for re-measurement [onnxruntime]")
    p.add_argument("--device", default="cpu", help="device for re-measurement [cpu]")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for re-measurement [1]")
    p.add_argument("--out", required=True, help="output directory (best_arch.json, pareto.csv, report.md, ...)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """The flags SearchJob leaves unchecked (or lets NaN through), and --out, before any work."""
    for flag, value, low in (
        ("--workers", args.workers, 1),
        ("--threads", args.threads, 1),
        ("--final-k", args.final_k, 1),
        ("--seed", args.seed, 0),
        ("--population", args.population, 1),
        ("--iterations", args.iterations, 0),
    ):
        check_range(flag, value, low)
    for flag in (  # NaN slipped past SearchJob's `<= 0`
        "--max-latency-ms",
        "--max-prefill-ms",
        "--max-decode-ms-per-token",
        "--max-gflops",
        "--max-params",
        "--max-active-params",
    ):
        check_range(flag, getattr(args, flag[2:].replace("-", "_")), 0, low_open=True)
    check_range("--mutate-prob", args.mutate_prob, 0, 1)
    check_range("--dense-iterations", args.dense_iterations, 0)
    check_writable(args.out, kind="dir")


def job_from_args(a: argparse.Namespace):
    """The flags as a SearchJob (the library takes settings, never the CLI's Namespace)."""
    from moenas.arch import SearchSpace
    from moenas.search.evolution import EvolutionConfig
    from moenas.search.search_job import SearchJob

    objectives = tuple(o.strip() for o in a.objectives.split(",") if o.strip())
    cfg = EvolutionConfig(
        population=a.population,
        parents=a.parents,
        mutations=a.mutations,
        crossovers=a.crossovers,
        mutate_prob=a.mutate_prob,
        iterations=a.iterations,
        seed=a.seed,
        objectives=objectives,
    )
    return SearchJob(
        space=SearchSpace.load(a.space),
        supernet=a.supernet,
        predictor_path=a.predictor,
        out=Path(a.out),
        config=cfg,
        max_latency_ms=a.max_latency_ms,
        max_prefill_ms=a.max_prefill_ms,
        max_decode_ms_per_token=a.max_decode_ms_per_token,
        max_gflops=a.max_gflops,
        max_params=a.max_params,
        max_active_params=a.max_active_params,
        confidence=a.confidence,
        valid_sentences=a.valid_sentences,
        fitness=a.fitness,
        bleu_sentences=a.bleu_sentences,
        workers=a.workers,
        runner=a.runner,
        ray_address=a.ray_address,
        random_baseline=a.random_baseline,
        measure=not a.no_measure,
        final_k=a.final_k,
        dense_baseline=not a.no_dense,
        dense_iterations=a.dense_iterations,
        backend=a.backend,
        device=a.device,
        threads=a.threads,
        resume=a.resume,
        overwrite=a.overwrite,
    )


def run(args: argparse.Namespace) -> int:
    check_args(args)
    job = job_from_args(args)
    for path in job.predictor_paths:
        meta = _predictor_meta(path)
        job.notices += _elsewhere_notice(path, meta) + _mismatch_notice(args, meta, path)
    report, paths = job.run()
    if args.json:
        print_json(report.to_json())
    else:
        print_summary(report, paths)
    return exit_code(report)


def exit_code(report) -> int:
    """1 only when the finalists were measured and none met the budget (the line says which came
    closest, on stderr); 0 otherwise."""
    if report.answer is None:
        sys.stderr.write(f"moenas search: {report.final.none_meets_message()}\n")
        return 1
    return 0


def _predictor_meta(path: str) -> dict | None:
    """The predictor's metadata, read once for the notices; None when it cannot be read (left to
    SearchJob to refuse, so bad input still gets one line alone)."""
    from moenas.arch import UserError
    from moenas.predictor.persist import read_metadata

    try:
        return read_metadata(path)
    except UserError:
        return None


def _elsewhere_notice(path: str, meta: dict | None) -> list[str]:
    """The line to show when the predictor holds on another machine (fingerprint only: no
    timing); the job prints it once its inputs passed."""
    from moenas.predictor.machine import elsewhere_message
    from moenas.profiler.fingerprint import fingerprint

    if meta is None:
        return []
    msg = elsewhere_message(meta, path, fingerprint(meta.get("device") or "cpu"))
    return [f"moenas search: {msg}"] if msg else []


def _mismatch_notice(args: argparse.Namespace, meta: dict | None = None, path: str | None = None) -> list[str]:
    """A warning when the finalists will be timed otherwise (backend, intra-op threads)
    than the predictor's data (at ``path``; default: the first --predictor) was: then the
    budget compares two kinds of latency."""
    from moenas.predictor.api import fitted_on_differences, mismatch_line

    path = path or (args.predictor if isinstance(args.predictor, str) else args.predictor[0])
    meta = _predictor_meta(path) if meta is None else meta
    if meta is None or args.no_measure:
        return []
    diffs = fitted_on_differences(meta, {"backend": args.backend, "threads_intra": args.threads})
    return [f"moenas search: warning: {mismatch_line(path, 'the re-measurement', diffs)}"] if diffs else []


def print_summary(report, paths) -> None:
    """The answer's sentence, the picks side by side, one sample (translation or continuation),
    where the report is."""
    best = report.result.best
    unit = (report.settings.get("primary_budget") or {}).get("unit", "ms")
    print(
        f"\nevolution: {len(report.result.evaluated)} archs evaluated, best by fitness {best.arch.arch_id} "
        f"(loss {best.loss:.4f} ± {best.loss_se:.4f}, predicted {best.latency:.3g} {unit})"
    )
    final = report.final
    if final is not None:
        shown = SUMMARIES.for_family(report.settings.get("family", ENCODER_DECODER.name))
        picks = {key: getattr(final, key).row for key, _ in PICK_LABELS if getattr(final, key) is not None}
        win = final.winner
        print(shown.table(picks, win.arch_id if win else None, report.settings))
        print(final.verdict.sentence if final.verdict else f"nothing to deploy: {final.none_meets_message()}")
        if win is not None and win.row.samples:
            print(shown.sample(win.arch_id, win.row.samples[0]))
    print(f"report: {paths['report_md']}")


def _cell(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


# A language model's picks: perplexity and decode speed (measured) beside the fitness.
LM_COLUMNS: list[Column] = [
    ("perplexity", lambda v: _cell(v.perplexity, ".2f")),
    ("prefill ms", lambda v: _cell(v.timings.get(PREFILL.name))),
    ("decode ms/token", lambda v: _cell(v.timings.get(DECODE_PER_TOKEN.name))),
    ("tokens/s", lambda v: _cell(v.tokens_per_s, ".0f")),
    ("params M act/total", params_cell),
]


@dataclass(frozen=True)
class Summary:
    """How a family's picks and one sample of the winner read on the terminal."""

    table: Callable[[dict[str, Any], str | None, dict[str, Any]], str]
    sample: Callable[[str, dict[str, str]], str]


SUMMARIES: FamilyRegistry[Summary] = FamilyRegistry(
    "search summary",
    {
        ENCODER_DECODER: Summary(
            lambda picks, winner, settings: picks_table(picks, winner, settings.get("quality_beam")),
            lambda arch_id, x: (
                f"{arch_id} translates {x['source']!r} -> {x['output']!r} (reference {x['reference']!r})"
            ),
        ),
        DECODER_ONLY: Summary(
            lambda picks, winner, settings: picks_table(picks, winner, None, LM_COLUMNS),
            lambda arch_id, x: f"{arch_id} continues {x['prompt']!r} -> {x['output']!r} (the text: {x['reference']!r})",
        ),
    },
)
