"""Search outputs in --out: best arch, Pareto set, history, Pareto plot, Markdown + JSON report.

Everything a reader needs to trust a result sits in one folder: what was asked (budget,
confidence, settings), what came back (best arch, front), and what the device said when the
chosen archs were re-measured (predicted interval against measured latency, budget held or not).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .evolution import Candidate, SearchResult


@dataclass
class Verification:
    """One chosen arch re-measured on the device."""

    arch_id: str
    role: str                  # "best", "pareto", "dense-baseline", ...
    loss: float
    predicted_ms: float
    predicted_low_ms: float
    predicted_high_ms: float
    measured_ms: float | None   # None when re-measurement was skipped
    budget_ms: float | None
    gflops: float
    params_m: float
    bleu: float | None = None          # inherited-weight BLEU on the test split (greedy)
    val_loss: float | None = None      # validation loss (= loss unless the search's fitness was BLEU)
    samples: list[dict[str, str]] = field(default_factory=list)  # source / reference / output triples
    # the reference model timed beside it / its latency in the predictor's data (> 1: the machine
    # runs slower now than when the data was measured); None when not judged
    reference_factor: float | None = None
    reference_noise_rel: float | None = None   # the reference's spread in that data (a fraction)

    def add_quality(self, q: dict[str, Any]) -> None:
        """Attach :meth:`SupernetFitness.quality`'s result."""
        self.bleu, self.val_loss, self.samples = q["bleu"], q["val_loss"], q["samples"]

    @property
    def meets_budget(self) -> bool | None:
        if self.budget_ms is None:
            return True
        if self.measured_ms is None:
            return None
        return self.measured_ms <= self.budget_ms

    @property
    def machine_drifted(self) -> bool:
        """True when the reference model ran slower or faster now than the predictor's data says,
        by more than its noise: the measurement and the prediction are of two machine states."""
        from moenas.predictor.calibrate import beyond_noise

        return self.reference_factor is not None and beyond_noise(self.reference_factor, self.reference_noise_rel)

    def drift_note(self) -> str:
        """One sentence on the machine's state during the re-measurement (empty when steady)."""
        if not self.machine_drifted:
            return ""
        f = self.reference_factor
        return (f"the reference model ran {f:.2f}x {'slower' if f > 1 else 'faster'} during this re-measurement than in the "
                f"predictor's data: the machine {'slowed' if f > 1 else 'sped up'} (a shared or throttled host), so the "
                f"measured {self.measured_ms:.3g} ms is {self.measured_ms / f:.3g} ms at the speed the predictor was fitted "
                "for; re-measure on a quiet machine before trusting the verdict")

    @property
    def error_pct(self) -> float | None:
        if self.measured_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verification":
        """The row a :meth:`to_dict` wrote (its derived keys dropped)."""
        return cls(**{k: v for k, v in d.items() if k not in DERIVED})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets_budget": self.meets_budget, "error_pct": self.error_pct,
                "machine_drifted": self.machine_drifted}


DERIVED = ("meets_budget", "error_pct", "machine_drifted")  # Verification.to_dict's computed keys


@dataclass
class SearchReport:
    settings: dict[str, Any]
    result: SearchResult
    verifications: list[Verification] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # e.g. random search at the same evaluation budget

    def write(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "best": out / "best_arch.json",
            "pareto": out / "pareto.csv",
            "history": out / "history.csv",
            "evaluated": out / "evaluated.csv",
            "report_md": out / "report.md",
            "report_json": out / "report.json",
            "plot": out / "pareto.png",
        }
        paths["best"].write_text(self.result.best.arch.to_json(indent=2) + "\n")
        _write_csv(paths["pareto"], [c.row() for c in self.result.pareto()])
        _write_csv(paths["evaluated"], [c.row() for c in self.result.evaluated])
        _write_csv(paths["history"], self.result.history)
        paths["report_json"].write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        paths["report_md"].write_text(self.markdown())
        plot_front(self.result, self.verifications, self.settings.get("max_latency_ms"), paths["plot"])
        return paths

    def to_json(self) -> dict[str, Any]:
        best = self.result.best
        return {
            "settings": self.settings,
            "best": {"arch_id": best.arch.arch_id, "loss": best.loss, "predicted_latency_ms": best.latency,
                     "arch": json.loads(best.arch.to_json())},
            "pareto": [{"arch_id": c.arch.arch_id, "loss": c.loss, "predicted_latency_ms": c.latency} for c in self.result.pareto()],
            "verification": [v.to_dict() for v in self.verifications],
            "all_verified_meet_budget": all(v.meets_budget for v in self.verifications if v.role != "dense-baseline"),
            "history": self.result.history,
            "baseline": self.baseline,
        }

    def markdown(self) -> str:
        s, best = self.settings, self.result.best
        lines = [
            "# moenas search report",
            "",
            f"Space `{s.get('space')}`; latency budget {s.get('max_latency_ms')} ms at confidence {s.get('confidence')} "
            f"(the predictor's upper bound must meet it); FLOPs budget {s.get('max_gflops')} G; params budget {s.get('max_params')}.",
            f"Objectives: {s.get('objectives')}; {len(self.result.history) - 1} iterations, "
            f"{len(self.result.evaluated)} archs evaluated (validation loss with inherited supernet weights).",
            "",
            "## Best arch",
            "",
            f"`{best.arch.arch_id}`: validation loss {best.loss:.4f}, predicted latency {best.latency:.3g} ms. "
            f"Saved as `best_arch.json`.",
            "",
        ]
        if self.verifications:
            lines += ["## Re-measured on the device", "",
                      f"Fitness: {s.get('fitness', 'loss')}. BLEU: greedy, inherited weights, the test split.", "",
                      "| arch | role | val loss | BLEU | predicted ms (interval) | measured ms | error | GFLOPs | params (M) | budget |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for v in self.verifications:
                lines.append(verification_row(v))
            failed = [v for v in self.verifications if v.meets_budget is False and v.role != "dense-baseline"]
            lines += ["", ("**Warning:** " + ", ".join(f"`{v.arch_id}`" for v in failed) +
                           " exceeded the budget when measured; it is not reported as meeting it.") if failed
                      else "Every searched arch that was re-measured met the budget on the device.", ""]
            note = next((v.drift_note() for v in self.verifications if v.machine_drifted), "")
            lines += [f"**Machine drift:** {note}.", ""] if note else []
            lines += translation_lines(self.verifications)
        if self.baseline:
            lines += ["## Baseline", "", "```", json.dumps(self.baseline, indent=2, default=str), "```", ""]
        lines += ["## Files", "", "`best_arch.json`, `pareto.csv` (non-dominated archs: loss vs predicted latency), "
                  "`evaluated.csv` (every evaluated arch), `history.csv` (per iteration), `pareto.png`, `report.json`.", ""]
        return "\n".join(lines)


def verification_row(v: Verification) -> str:
    """One Markdown table row: arch, role, loss, BLEU, predicted vs measured latency, cost, verdict."""
    meas = "not measured" if v.measured_ms is None else f"{v.measured_ms:.3g}"
    err = "" if v.error_pct is None else f"{v.error_pct:+.1f}%"
    verdict = {True: "meets", False: "**FAILS**", None: "unverified"}[v.meets_budget] if v.role != "dense-baseline" else "-"
    loss = v.val_loss if v.val_loss is not None else v.loss
    bleu = "-" if v.bleu is None else f"{v.bleu:.1f}"
    return (f"| `{v.arch_id}` | {v.role} | {loss:.4f} | {bleu} | {v.predicted_ms:.3g} ({v.predicted_low_ms:.3g}-{v.predicted_high_ms:.3g}) "
            f"| {meas} | {err} | {v.gflops:.3g} | {v.params_m:.2f} | {verdict} |")


def translation_lines(verifications: Sequence[Verification]) -> list[str]:
    """A Markdown section with each arch's source / reference / output triples."""
    out = []
    for v in verifications:
        if not v.samples:
            continue
        out += [f"### Translations by `{v.arch_id}` ({v.role})", "", "| source | reference | output |", "|---|---|---|"]
        cell = lambda t: t.replace("|", "\\|") or "(empty)"  # noqa: E731
        out += [f"| {cell(x['source'])} | {cell(x['reference'])} | {cell(x['output'])} |" for x in v.samples]
        out.append("")
    return (["## Translations (test split, greedy, inherited weights)", ""] + out) if out else []


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot_front(result: SearchResult, verifications: Sequence[Verification], budget_ms: float | None, path: Path) -> None:
    """Evaluated archs, the front, the budget line and the re-measured points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ev: list[Candidate] = result.evaluated
    ax.scatter([c.latency for c in ev], [c.loss for c in ev], s=8, c="0.7", label="evaluated (predicted latency)")
    front = result.pareto()
    ax.plot([c.latency for c in front], [c.loss for c in front], "o-", c="tab:blue", ms=4, label="Pareto front")
    for v in verifications:
        if v.measured_ms is not None:
            color = "tab:purple" if v.role == "dense-baseline" else ("tab:green" if v.meets_budget else "tab:red")
            ax.scatter([v.measured_ms], [v.loss], marker="*", s=120, zorder=5, c=color, label=f"{v.role} measured")
            ax.errorbar([v.predicted_ms], [v.loss], xerr=[[v.predicted_ms - v.predicted_low_ms], [v.predicted_high_ms - v.predicted_ms]],
                        fmt="x", c="k", capsize=3)
    if budget_ms:
        ax.axvline(budget_ms, ls="--", c="tab:red", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation loss (inherited weights)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
