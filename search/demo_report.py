"""The demo's summary (demo.json) and its readable report (README.md in the demo folder).

The report opens with the answer (what to deploy here, MoE or dense, and why), then the picks
side by side with every figure measured in that run, then how the run got there."""

from __future__ import annotations

import json
from typing import Any

from moenas.arch.protocol import protocol_from_dict

from .demo_family import DEMO_FAMILIES, DemoFamily
from .final_selection import pace
from .report import PICKS, REPORT_LAYOUTS, Verification, amdahl_max, pick_lines


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
        "family": demo.space.family.name,
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


def amdahl_line(picks: dict[str, Verification]) -> str:
    """The MoE-versus-dense answer's bound: the share of the FLOPs the searched arch's experts
    act on, what that allows at most (Amdahl) and what the measurement found ('' without both
    family winners)."""
    moe, dense = picks.get("searched"), picks.get("dense")
    if moe is None or dense is None or moe.ffn_share is None or moe.arch_id == dense.arch_id:
        return ""
    line = (
        f"**Amdahl bound.** Experts act on the FFN share of the FLOPs, {100 * moe.ffn_share:.1f}% for the searched "
        f"arch `{moe.arch_id}`: an MoE arch is at most {amdahl_max(moe.ffn_share):.2f}x faster than a dense one "
        "with the same attention and embeddings."
    )
    if moe.measured_ms and dense.measured_ms:
        line += (
            f" Measured: searched {moe.measured_ms:.3g} {moe.unit}, dense {dense.measured_ms:.3g} {dense.unit} "
            f"(the searched arch {pace(dense.measured_ms / moe.measured_ms)})."
        )
    return line


def _protocol_paragraph(demo, s: dict[str, Any], kind: DemoFamily) -> str:
    """How the picks were measured and judged: the budget, the protocol, the fitness, the family's figures."""
    cfg, f, fin = demo.cfg, s["facts"], s["final"]
    protocol = protocol_from_dict(f.get("protocol") or {})
    q = kind.quantity
    return (
        f"Budget: {q.label} {f['budget_ms']:.3g} {q.unit}, measured with onnxruntime on this CPU ({cfg.threads} "
        f"thread), protocol: {protocol.describe()}; every arch above was timed in one round-robin with the "
        f"reference model. Fitness: validation loss (nats/token, {cfg.valid_sentences} {kind.sample_unit}, inherited "
        f"supernet weights) ± its bootstrap standard error; two archs tie when their difference is within "
        f"{fin['tie_z']:g} paired standard errors. {kind.quality_note(cfg, s, protocol)} FFN share: what experts act "
        "on; an MoE arch is at most 1 / (1 - share) times faster than a dense one with the same attention (Amdahl)."
    )


def _supernet_lines(cfg, sup: dict[str, Any], kind: DemoFamily) -> list[str]:
    sandwich = f", {cfg.train_sandwich_random} random arch(s) per step" if cfg.sampling == "sandwich" else ""
    lines = [
        f"2. Supernet trained for {cfg.train_steps} steps of {cfg.train_max_tokens} tokens ({cfg.supernet}, {cfg.sampling} "
        f"sampling{sandwich}{_largest_every(cfg)}, peak lr {cfg.train_lr:g}, {cfg.train_schedule}): "
        + "; ".join(f"{k} arch validation loss {v['val_loss']:.3f}, {kind.figures(v)}" for k, v in sup.items())
        + "."
    ]
    if "largest" in sup and "smallest" in sup:
        lines.append(
            f"   Loss spread smallest - largest: {sup['smallest']['val_loss'] - sup['largest']['val_loss']:.3f} nats."
        )
    return lines


def _rerun_lines(cfg, f: dict[str, Any]) -> list[str]:
    dep = f.get("deploy")
    rerun = [f.get(k, "") for k in ("profile_command", "fit_command", "train_command", "search_command")]
    if dep:
        rerun += [
            f"moenas export {cfg.out / 'search' / 'best_arch.json'} --supernet {cfg.out / 'supernet.pt'} "
            f"--out {dep['model_dir']}",
            dep["command"],
        ]
    return [
        "## Rerun one stage",
        "",
        "```",
        *[r for r in rerun if r],
        "```",
        "",
        "Details: `search/report.md` (every finalist), `search/pareto.png`, `predictor/`, `supernet.pt.json`.",
        "",
    ]


def markdown(demo, s: dict[str, Any]) -> str:
    cfg, f, fin = demo.cfg, s["facts"], s["final"]
    kind = DEMO_FAMILIES.for_family(s["family"])
    layout = REPORT_LAYOUTS.for_family(s["family"])
    head = f"**Answer.** {fin['verdict']}" if fin.get("winner") else f"**Nothing to deploy:** {fin['verdict']}."
    rows = {key: Verification.from_dict(s["picks"][key]) for key, _ in PICKS if key in s["picks"]}
    picks = [(rows[key], label) for key, label in PICKS if key in rows]
    amdahl = amdahl_line(rows)
    lines = ["# moenas demo report", "", head, "", *([amdahl, ""] if amdahl else [])]
    lines += pick_lines(picks, layout) + ["", _protocol_paragraph(demo, s, kind), "", "## Stage times", ""]
    lines += stage_table(s["timings_s"]) + ["", "## What happened", ""]
    lines += _latency_lines(f, cfg.confidence)
    lines += _supernet_lines(cfg, f.get("supernet", {}), kind)
    lines.append(_search_line(s, cfg))
    dep = f.get("deploy")
    if dep:
        lines.append(f"4. The chosen arch exported with its weights to `{dep['model_dir']}`; {kind.deploy_text(dep)}.")
    lines.append("")
    note = next((v.drift_note() for v, _ in picks if v.machine_drifted), "")
    lines += [f"**Machine drift:** {note}.", ""] if note else []
    lines += layout.samples(list({v.arch_id: v for v, _ in picks}.values()))
    lines += kind.deploy_section(dep) if dep else []
    lines += _rerun_lines(cfg, f)
    return "\n".join(lines)
