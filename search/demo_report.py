"""The demo's summary (demo.json) and its readable report (README.md in the demo folder)."""
from __future__ import annotations

import json
from typing import Any

from .report import Verification, translation_lines, verification_row


def _largest_every(cfg) -> str:
    n = cfg.train_largest_every
    return f", the largest arch one step in {n}" if n else ""


def summary(demo, report, dense: Verification) -> dict[str, Any]:
    from .pipeline import config_dict

    best = next(v for v in report.verifications if v.role == "best")
    ratio = dense.measured_ms / best.measured_ms if best.measured_ms and dense.measured_ms else None
    return {"config": config_dict(demo.cfg), "facts": demo.facts, "timings_s": demo.timings,
            "searched": best.to_dict(), "dense": dense.to_dict(), "dense_over_searched_latency": ratio,
            "searched_arch": json.loads(report.result.best.arch.to_json()), "dense_arch_id": dense.arch_id}


def _latency_lines(f: dict[str, Any], confidence: float) -> list[str]:
    p, pr = f.get("profile"), f.get("predictor", {})
    out = []
    if p:
        wanted = f"{p['archs_wanted']} archs, {p['archs_valid']} measured validly" if p.get("archs_wanted") else f"{p['archs_valid']} archs"
        out.append(f"1. Profiled {wanted} on this CPU: {p['median_ms_min']:.3g}-{p['median_ms_max']:.3g} ms; "
                   f"noise floor (repeat MAPE) {p['noise_floor_mape_percent'] or float('nan'):.2f}%; "
                   f"{p['rows_flagged']} rows flagged by the drift check and re-measured.")
    else:
        out.append("1. No archs were profiled here: the shipped dataset was used as is.")
    h, hb = pr.get("holdout"), pr.get("holdout_base_uncorrected")
    line = f"   Latency predictor `{pr.get('model')}` ({pr.get('path')}) from {pr.get('n_train')} archs"
    if h:
        line += (f"; on {pr.get('n_holdout')} other archs measured here: MAPE {h['mape']:.2f}%, Kendall tau "
                 f"{h['kendall_tau']:.3f}, within ±10% {h['within_10']:.0f}%, {confidence:.0%} interval coverage {h['coverage']:.0f}%")
    if hb:
        line += f" (the shipped predictor uncorrected: MAPE {hb['mape']:.2f}%)"
    out.append(line + ".")
    return out


def markdown(demo, s: dict[str, Any]) -> str:
    cfg, f = demo.cfg, s["facts"]
    ratio = s["dense_over_searched_latency"]
    sup = f.get("supernet", {})
    lines = ["# moenas demo report", "",
             f"Space `{cfg.space}`, latency measured with onnxruntime on this CPU ({cfg.threads} thread), protocol: batch 1, "
             f"30 source tokens, 30 decoder steps with KV cache, beam 5. Budget: {f['budget_ms']:.3g} ms (the predictor's "
             f"{cfg.confidence:.0%} upper bound must meet it). BLEU: sacrebleu, greedy, {cfg.bleu_sentences} sentences of the "
             "corpus's test split, inherited supernet weights.", "",
             "## What happened", ""]
    lines += _latency_lines(f, cfg.confidence)
    lines.append(f"2. Supernet trained for {cfg.train_steps} steps of {cfg.train_max_tokens} tokens ({cfg.supernet}, {cfg.sampling} "
                 f"sampling{_largest_every(cfg)}, peak lr {cfg.train_lr:g}, {cfg.train_schedule}): "
                 + "; ".join(f"{k} arch validation loss {v['val_loss']:.3f}, BLEU {v['bleu']:.1f}" for k, v in sup.items()) + ".")
    if "largest" in sup and "smallest" in sup:
        lines.append(f"   Loss spread smallest - largest: {sup['smallest']['val_loss'] - sup['largest']['val_loss']:.3f} nats.")
    lines += ["3. Evolutionary search; the winner was re-measured.",
              f"4. The dense arch (1 expert per layer) with the closest validation loss among {f.get('dense_candidates')} sampled "
              f"(gap {f.get('dense_loss_gap', float('nan')):.3f} nats), re-measured too.",
              f"5. The winner exported with its weights to `{f['deploy']['model_dir']}`; onnxruntime translated "
              f"\"{f['deploy']['source']}\" as \"{f['deploy']['output']}\" (reference: \"{f['deploy']['reference']}\").", "",
              "## Searched MoE arch against a dense arch of similar loss", "",
              "| arch | role | val loss | BLEU | predicted ms (interval) | measured ms | error | GFLOPs | params (M) | budget |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    both = [Verification.from_dict(d) for d in (s["searched"], s["dense"])]
    lines += [verification_row(v) for v in both]
    lines += ["", (f"The dense arch takes **{ratio:.2f}x** the searched arch's measured latency." if ratio else ""), ""]
    if both[0].machine_drifted:
        lines += [f"**Machine drift:** {both[0].drift_note()}.", ""]
    lines += translation_lines(both)
    lines += ["## Rerun one stage", "", "```", f.get("profile_command", ""), f.get("fit_command", ""), f.get("train_command", ""),
              f.get("search_command", ""), f"moenas export {cfg.out / 'search' / 'best_arch.json'} --supernet {cfg.out / 'supernet.pt'} "
              f"--out {f['deploy']['model_dir']}", f['deploy']['command'], "```", "",
              f"Stage times (s): {s['timings_s']}", "",
              "Details: `search/report.md`, `search/pareto.png`, `predictor/`, `supernet.pt.json`.", ""]
    return "\n".join(lines)
