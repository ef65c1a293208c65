"""The demo's summary (demo.json) and its readable report (README.md in the demo folder).

The report opens with the answer (what to deploy here, MoE or dense, and why), then the picks
side by side with every figure measured in that run, then how the run got there."""

from __future__ import annotations

import json
from typing import Any

from .report import PICKS, Verification, pick_lines, translation_lines


def _largest_every(cfg) -> str:
    n = cfg.train_largest_every
    return f", the largest arch one step in {n}" if n else ""


def summary(demo, report) -> dict[str, Any]:
    """demo.json: the settings, the facts of each stage, the stage times, the final selection
    (ids and verdict) and each pick's measured row."""
    final = report.final
    picks = {key: getattr(final, key).row.to_dict() for key, _ in PICKS if getattr(final, key) is not None}
    answer = report.answer
    return {
        "config": demo.cfg.to_dict(),
        "facts": demo.facts,
        "timings_s": demo.timings,
        "final": final.to_dict(),
        "picks": picks,
        "answer_arch": json.loads(answer.arch.to_json()) if answer else None,
        "evolution_evaluations": len(report.result.evaluated),
        "dense_evaluations": len(report.dense.evaluated) if report.dense else None,
        "baseline": report.baseline,
    }


def _beam(s: dict[str, Any]) -> Any:
    """The beam the picks' BLEU was decoded with (as their rows record it)."""
    return next((v.get("beam") for v in s["picks"].values() if v.get("beam")), "-")


def stage_table(timings: dict[str, float]) -> list[str]:
    """Stage times as a Markdown table."""
    return ["| stage | seconds |", "|---|---|"] + [f"| {name} | {sec:.1f} |" for name, sec in timings.items()]


def _latency_lines(f: dict[str, Any], confidence: float) -> list[str]:
    p, pr = f.get("profile"), f.get("predictor", {})
    out = []
    if p:
        wanted = (
            f"{p['archs_wanted']} archs, {p['archs_valid']} measured validly"
            if p.get("archs_wanted")
            else f"{p['archs_valid']} archs"
        )
        out.append(
            f"1. Profiled {wanted} on this CPU: {p['median_ms_min']:.3g}-{p['median_ms_max']:.3g} ms; "
            f"noise floor (repeat MAPE) {p['noise_floor_mape_percent'] or float('nan'):.2f}%; "
            f"{p['rows_flagged']} rows flagged by the drift check and re-measured."
        )
    else:
        out.append("1. No archs were profiled here: the shipped dataset was used as is.")
    h, hb = pr.get("holdout"), pr.get("holdout_base_uncorrected")
    line = f"   Latency predictor `{pr.get('model')}` ({pr.get('path')}) from {pr.get('n_train')} archs"
    if h:
        line += (
            f"; on {pr.get('n_holdout')} other archs measured here: MAPE {h['mape']:.2f}%, Kendall tau "
            f"{h['kendall_tau']:.3f}, within ±10% {h['within_10']:.0f}%, {confidence:.0%} interval coverage {h['coverage']:.0f}%"
        )
    if hb:
        line += f" (the shipped predictor uncorrected: MAPE {hb['mape']:.2f}%)"
    out.append(line + ".")
    return out


def _search_line(s: dict[str, Any], cfg) -> str:
    fin, base = s["final"], s.get("baseline") or {}
    dense = (
        f"; its dense variant (one expert per layer) {s['dense_evaluations']} archs under the same budget"
        if s.get("dense_evaluations") is not None
        else ""
    )
    rnd = f"; random search {base['evaluations']} archs" if base else ""
    pool = ", ".join(f"{n} {role}" for role, n in fin["pool"].items())
    return (
        f"3. Evolutionary search: {s['evolution_evaluations']} archs evaluated{dense}{rnd}. Finalists measured side by "
        f"side ({pool}; per family the {cfg.final_k} best plus every arch tied with the best within noise)."
    )


def markdown(demo, s: dict[str, Any]) -> str:
    cfg, f, fin = demo.cfg, s["facts"], s["final"]
    sup = f.get("supernet", {})
    head = f"**Answer.** {fin['verdict']}" if fin.get("winner") else f"**Nothing to deploy:** {fin['verdict']}."
    picks = [(Verification.from_dict(s["picks"][key]), label) for key, label in PICKS if key in s["picks"]]
    lines = (
        ["# moenas demo report", "", head, ""]
        + pick_lines(picks)
        + [
            "",
            f"Budget {f['budget_ms']:.3g} ms, measured with onnxruntime on this CPU ({cfg.threads} thread), protocol: batch 1, "
            f"30 source tokens, 30 decoder steps with KV cache, beam 5; every arch above was timed in one round-robin with the "
            f"reference model. Fitness: validation loss (nats/token, {cfg.valid_sentences} sentences, inherited supernet "
            f"weights) ± its bootstrap standard error; two archs tie when their difference is within {fin['tie_z']:g} paired "
            f"standard errors. BLEU / chrF: sacrebleu, {cfg.bleu_sentences} sentences of the corpus's test split decoded with "
            f"beam {_beam(s)}, the beam the latency was timed with (the supernet's largest / smallest archs below: greedy). FFN share: "
            "what experts act on; an MoE arch is at most 1 / (1 - share) times faster than a dense one with the same "
            "attention (Amdahl).",
            "",
            "## Stage times",
            "",
        ]
        + stage_table(s["timings_s"])
        + ["", "## What happened", ""]
    )
    lines += _latency_lines(f, cfg.confidence)
    lines.append(
        f"2. Supernet trained for {cfg.train_steps} steps of {cfg.train_max_tokens} tokens ({cfg.supernet}, {cfg.sampling} "
        f"sampling{_largest_every(cfg)}, peak lr {cfg.train_lr:g}, {cfg.train_schedule}): "
        + "; ".join(
            f"{k} arch validation loss {v['val_loss']:.3f}, BLEU {v['bleu']:.1f} (greedy)" for k, v in sup.items()
        )
        + "."
    )
    if "largest" in sup and "smallest" in sup:
        lines.append(
            f"   Loss spread smallest - largest: {sup['smallest']['val_loss'] - sup['largest']['val_loss']:.3f} nats."
        )
    lines.append(_search_line(s, cfg))
    dep = f.get("deploy")
    if dep:
        lines.append(
            f"4. The chosen arch exported with its weights to `{dep['model_dir']}`; onnxruntime translated "
            f'"{dep["source"]}" as "{dep["output"]}" (reference: "{dep["reference"]}").'
        )
    lines.append("")
    note = next((v.drift_note() for v, _ in picks if v.machine_drifted), "")
    lines += [f"**Machine drift:** {note}.", ""] if note else []
    lines += translation_lines(list({v.arch_id: v for v, _ in picks}.values()))
    rerun = [
        f.get("profile_command", ""),
        f.get("fit_command", ""),
        f.get("train_command", ""),
        f.get("search_command", ""),
    ]
    if dep:
        rerun += [
            f"moenas export {cfg.out / 'search' / 'best_arch.json'} --supernet {cfg.out / 'supernet.pt'} "
            f"--out {dep['model_dir']}",
            dep["command"],
        ]
    lines += [
        "## Rerun one stage",
        "",
        "```",
        *[r for r in rerun if r],
        "```",
        "",
        "Details: `search/report.md` (every finalist), `search/pareto.png`, `predictor/`, `supernet.pt.json`.",
        "",
    ]
    return "\n".join(lines)
