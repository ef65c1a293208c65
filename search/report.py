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
from typing import Any, Callable, Sequence

from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry

from .budgets import ALL_QUANTITIES, DECODE_PER_TOKEN, LATENCY, PREFILL, tokens_per_s
from .evolution import Candidate, SearchResult
from .fitness_noise import Z_TIE


@dataclass
class BudgetCheck:
    """One latency budget held against one arch: predicted (mean and interval) and measured, in
    the budget's ``unit`` (ms, or ms per token); ``budget_ms`` None: no budget, nothing to meet."""

    name: str  # the latency quantity (budgets.LatencyQuantity.name): "latency", "prefill", ...
    unit: str
    predicted_ms: float
    predicted_low_ms: float
    predicted_high_ms: float
    measured_ms: float | None  # None when re-measurement was skipped
    budget_ms: float | None

    @property
    def meets(self) -> bool | None:
        """Whether the measurement meets the budget (True without a budget, None unmeasured)."""
        if self.budget_ms is None:
            return True
        if self.measured_ms is None:
            return None
        return self.measured_ms <= self.budget_ms

    @property
    def ratio(self) -> float | None:
        """measured / budget (> 1: over it); None without both."""
        return None if self.budget_ms is None or self.measured_ms is None else self.measured_ms / self.budget_ms

    @property
    def label(self) -> str:
        """'latency', 'prefill', 'decode per token'."""
        return self.name.replace("_", " ")

    def phrase(self) -> str:
        """'the 9 ms budget' / 'the 2 ms/token decode per token budget'."""
        what = "" if self.name == LATENCY.name else f" {self.label}"
        return f"the {self.budget_ms:.4g} {self.unit}{what} budget"


@dataclass
class Verification:
    """One chosen arch re-measured on the device.

    The ``*_ms`` fields hold the search's primary latency budget (the first one given; the
    total latency when none is), in its ``unit``; every further budget (a language model's
    prefill, its decode ms per token) is a :class:`BudgetCheck` in ``budgets``, and the arch meets
    the budget only when it meets all of them. ``timings``: every latency figure of the family
    measured in the same round-robin (budgets.QUANTITIES: total ms, prefill ms, decode ms per
    token), whether budgeted or not."""

    arch_id: str
    role: str  # "best", "pareto", "dense-baseline", ...
    loss: float
    predicted_ms: float
    predicted_low_ms: float
    predicted_high_ms: float
    measured_ms: float | None  # None when re-measurement was skipped
    budget_ms: float | None
    gflops: float
    params_m: float
    bleu: float | None = None  # inherited-weight BLEU on the test split, decoded with ``beam``
    chrf: float | None = None  # chrF of the same translations
    beam: int | None = None  # the decoding BLEU and chrF scored: the latency protocol's beam
    val_loss: float | None = None  # validation loss (= loss unless the search's fitness was BLEU)
    samples: list[dict[str, str]] = field(default_factory=list)  # source / reference / output triples
    # the reference model timed beside it / its latency in the predictor's data (> 1: the machine
    # runs slower now than when the data was measured); None when not judged
    reference_factor: float | None = None
    reference_noise_rel: float | None = None  # the reference's spread in that data (a fraction)
    loss_se: float | None = None  # the fitness's standard error over the evaluation sentences
    params_active_m: float | None = None  # parameters one token passes through (top-k experts), millions
    ffn_share: float | None = None  # FFN share of the protocol's FLOPs: Amdahl's bound on what experts save
    perplexity: float | None = None  # a language model's exp(validation loss), inherited weights
    budget_name: str = "latency"  # which latency quantity the *_ms fields are (budgets.LatencyQuantity.name)
    unit: str = "ms"  # their unit ("ms/token" for a per-token budget)
    budgets: dict[str, BudgetCheck] = field(default_factory=dict)  # the further latency budgets, by name
    timings: dict[str, float] = field(default_factory=dict)  # measured latency figures by name (empty: unmeasured)

    def add_quality(self, q: dict[str, Any]) -> None:
        """Attach :meth:`SupernetFitness.quality`'s result (BLEU and chrF, or a perplexity)."""
        self.val_loss, self.samples, self.beam = q["val_loss"], q["samples"], q.get("beam")
        self.bleu, self.chrf = q.get("bleu"), q.get("chrf")  # translation
        self.perplexity = q.get("perplexity")  # a language model

    def checks(self) -> list[BudgetCheck]:
        """Every latency budget held against this arch, the primary first."""
        primary = BudgetCheck(
            self.budget_name,
            self.unit,
            self.predicted_ms,
            self.predicted_low_ms,
            self.predicted_high_ms,
            self.measured_ms,
            self.budget_ms,
        )
        return [primary, *self.budgets.values()]

    @property
    def meets_budget(self) -> bool | None:
        """False when any budget is missed when measured, None when one is unmeasured, else True."""
        verdicts = [c.meets for c in self.checks()]
        return False if False in verdicts else None if None in verdicts else True

    def worst_check(self) -> BudgetCheck:
        """The budget this arch is furthest over (or nearest under) when measured; the primary
        when none was measured against a budget."""
        measured = [c for c in self.checks() if c.ratio is not None]
        return max(measured, key=lambda c: c.ratio) if measured else self.checks()[0]

    @property
    def machine_drifted(self) -> bool:
        """True when the reference model ran slower or faster now than the predictor's data says,
        by more than its noise: the measurement and the prediction are of two machine states."""
        from moenas.data.reference import beyond_noise

        return self.reference_factor is not None and beyond_noise(self.reference_factor, self.reference_noise_rel)

    def drift_note(self) -> str:
        """One sentence on the machine's state during the re-measurement (empty when steady)."""
        if not self.machine_drifted:
            return ""
        f = self.reference_factor
        return (
            f"the reference model ran {f:.2f}x {'slower' if f > 1 else 'faster'} during this re-measurement than in the "
            f"predictor's data: the machine {'slowed' if f > 1 else 'sped up'} (a shared or throttled host), so the "
            f"measured {self.measured_ms:.3g} {self.unit} is {self.measured_ms / f:.3g} {self.unit} at the speed the predictor was fitted "
            "for; re-measure on a quiet machine before trusting the verdict"
        )

    @property
    def error_pct(self) -> float | None:
        if self.measured_ms is None:
            return None
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verification":
        """The row a :meth:`to_dict` wrote (its derived keys dropped)."""
        row = cls(**{k: v for k, v in d.items() if k not in DERIVED})
        row.budgets = {k: BudgetCheck(**v) for k, v in (d.get("budgets") or {}).items()}
        return row

    @property
    def tokens_per_s(self) -> float | None:
        """Measured decode throughput of a language model (None: no per-token decode timing)."""
        return tokens_per_s(self.timings.get(DECODE_PER_TOKEN.name))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "meets_budget": self.meets_budget,
            "error_pct": self.error_pct,
            "machine_drifted": self.machine_drifted,
            "tokens_per_s": self.tokens_per_s,
        }

    def flat(self) -> dict[str, Any]:
        """:meth:`to_dict` with one column per timing and per further budget's field (for CSV)."""
        d = self.to_dict() | {"samples": len(self.samples)}
        timings, budgets = d.pop("timings"), d.pop("budgets")
        d |= {f"{k}_measured": v for k, v in timings.items()}
        return d | {f"{name}_{k}": v for name, b in budgets.items() for k, v in b.items() if k != "name"}


# Verification.to_dict's computed keys
DERIVED = ("meets_budget", "error_pct", "machine_drifted", "tokens_per_s")


@dataclass
class SearchReport:
    settings: dict[str, Any]
    result: SearchResult
    verifications: list[Verification] = field(default_factory=list)
    baseline: dict[str, Any] | None = None  # e.g. random search at the same evaluation budget
    final: Any = None  # final_selection.FinalSelection (None: no final selection ran)
    dense: SearchResult | None = None  # the dense baseline's evolution

    @property
    def answer(self) -> Candidate | None:
        """The arch to deploy: the final selection's winner (None when no finalist met the
        budget when measured); without a final selection, evolution's best by fitness."""
        if self.final is None:
            return self.result.best
        return self.final.winner.candidate if self.final.winner else None

    def write(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        names = {
            "best": "best_arch.json",
            "pareto": "pareto.csv",
            "history": "history.csv",
            "evaluated": "evaluated.csv",
            "dense_evaluated": "dense_evaluated.csv",
            "finalists": "finalists.csv",
            "report_md": "report.md",
            "report_json": "report.json",
            "plot": "pareto.png",
        }
        paths = {k: out / v for k, v in names.items()}
        if self.answer is not None:
            paths["best"].write_text(self.answer.arch.to_json(indent=2) + "\n")
        else:  # nothing deployable: an older search's answer must not stay behind as this one's
            paths["best"].unlink(missing_ok=True)
        _write_csv(paths["pareto"], [c.row() for c in self.result.pareto()])
        _write_csv(paths["evaluated"], [c.row() for c in self.result.evaluated])
        _write_csv(paths["history"], self.result.history)
        for key, rows in (
            ("dense_evaluated", [c.row() for c in self.dense.evaluated] if self.dense else None),
            ("finalists", [v.flat() for v in self.verifications] or None),
        ):
            if rows:
                _write_csv(paths[key], rows)
            else:
                paths[key].unlink(missing_ok=True)
        paths["report_json"].write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        paths["report_md"].write_text(self.markdown())
        primary = self.settings.get("primary_budget") or {"budget": self.settings.get("max_latency_ms")}
        plot_front(self.result, self.verifications, primary.get("budget"), paths["plot"], primary.get("unit", "ms"))
        return paths

    def to_json(self) -> dict[str, Any]:
        best, ans = self.result.best, self.answer
        return {
            "settings": self.settings,
            "best": None
            if ans is None
            else {
                "arch_id": ans.arch.arch_id,
                "loss": ans.loss,
                "loss_se": ans.loss_se,
                "predicted_latency_ms": ans.latency,
                "arch": json.loads(ans.arch.to_json()),
            },
            "evolution_best": {
                "arch_id": best.arch.arch_id,
                "loss": best.loss,
                "loss_se": best.loss_se,
                "predicted_latency_ms": best.latency,
            },
            "final": self.final.to_dict() if self.final is not None else None,
            "pareto": [
                {"arch_id": c.arch.arch_id, "loss": c.loss, "loss_se": c.loss_se, "predicted_latency_ms": c.latency}
                for c in self.result.pareto()
            ],
            "verification": [v.to_dict() for v in self.verifications],
            "dense_evaluations": len(self.dense.evaluated) if self.dense else None,
            "history": self.result.history,
            "baseline": self.baseline,
        }

    def markdown(self) -> str:
        s, best = self.settings, self.result.best
        lines = ["# moenas search report", ""]
        if self.final is not None:
            v = self.final.verdict
            lines += [
                f"**Answer.** {v.sentence}" if v else f"**Nothing to deploy:** {self.final.none_meets_message()}.",
                "",
            ]
        lines += [
            f"Space `{s.get('space')}`; latency budget {s.get('max_latency_ms')} ms at confidence {s.get('confidence')} "
            f"(the predictor's upper bound must meet it for an arch to be evaluated); FLOPs budget {s.get('max_gflops')} G; "
            f"params budget {s.get('max_params')}{more_budgets(s)}. Fitness: {s.get('fitness', 'loss')} with "
            "inherited supernet weights, ± its bootstrap standard error over the validation sentences. "
            + self.layout.quality_note(s),
            f"Objectives: {s.get('objectives')}; {len(self.result.history) - 1} iterations, "
            f"{len(self.result.evaluated)} archs evaluated"
            + (f"; the dense baseline's search evaluated {len(self.dense.evaluated)}" if self.dense else "")
            + ".",
            "",
        ]
        if self.final is not None:
            lines += self._final_lines()
        else:
            lines += [
                "## Best arch",
                "",
                f"`{best.arch.arch_id}`: validation loss {best.loss:.4f}, predicted latency "
                f"{best.latency:.3g} {(s.get('primary_budget') or {}).get('unit', 'ms')}. Saved as `best_arch.json`.",
                "",
            ]
        lines += self.layout.samples(self.verifications)
        lines += [
            "## Files",
            "",
            "`best_arch.json` (the arch to deploy), `finalists.csv` (every measured finalist), "
            "`pareto.csv` (non-dominated archs: loss vs predicted latency), `evaluated.csv` / `dense_evaluated.csv` "
            "(every evaluated arch), `history.csv` (per iteration), `pareto.png`, `report.json`.",
            "",
        ]
        return "\n".join(lines)

    def _final_lines(self) -> list[str]:
        """The chosen archs side by side, then every finalist, then how they were chosen."""
        f = self.final
        how = (
            "measured side by side in one round-robin with the reference model"
            if f.measured
            else "**not measured** (predicted latency only: unverified)"
        )
        lines = [f"## What to deploy: the picks, {how}", ""]
        picks = [(getattr(f, key).row, label) for key, label in PICKS if getattr(f, key) is not None]
        lines += pick_lines(picks, self.layout)
        lines += [
            "",
            f"Chosen among {len(f.finalists)} finalists: per family, the {self.settings.get('final_k')} best by fitness "
            f"plus every arch whose fitness ties the best within {Z_TIE:g} paired standard errors; among "
            "those meeting the budget when measured, the best fitness, and the fastest of the archs tied with it. "
            "FFN share: the share of the protocol's FLOPs that experts act on; an MoE arch can be at most "
            "1 / (1 - share) times faster than a dense arch with the same attention and embeddings (Amdahl).",
            "",
        ]
        note = (
            f.winner.row.drift_note()
            if f.winner
            else next((v.drift_note() for v in self.verifications if v.machine_drifted), "")
        )
        lines += [f"**Machine drift:** {note}.", ""] if note else []
        lay = self.layout
        lines += (
            ["### Every finalist", "", lay.header, lay.rule] + [lay.row(v, v.role) for v in self.verifications] + [""]
        )
        return lines

    @property
    def layout(self) -> "ReportLayout":
        """How this search's family reports its finalists (settings without a family: translation)."""
        return REPORT_LAYOUTS.for_family(self.settings.get("family", ENCODER_DECODER.name))


# the picks a final selection names: (FinalSelection attribute = demo.json "picks" key, label)
PICKS = (
    ("winner", "**deploy**"),
    ("searched", "searched winner"),
    ("dense", "dense winner"),
    ("largest_dense", "largest dense in budget"),
    ("random", "random search, same evaluations"),
)


def pick_lines(picks: Sequence[tuple[Verification, str]], layout: "ReportLayout | None" = None) -> list[str]:
    """The picks as a Markdown table (``layout``: the family's; default translation's); an arch
    that is several picks is one row naming them all."""
    lay = layout or REPORT_LAYOUTS.for_family(ENCODER_DECODER)
    labels: dict[str, str] = {}
    rows: dict[str, Verification] = {}
    for v, label in picks:
        labels[v.arch_id] = f"{labels[v.arch_id]}, {label}" if v.arch_id in labels else label
        rows.setdefault(v.arch_id, v)
    return [lay.header, lay.rule] + [lay.row(v, labels[i]) for i, v in rows.items()]


FINAL_HEADER = (
    "| arch | role | fitness ± SE | BLEU / chrF | measured ms | predicted ms (interval) | GFLOPs | params active / total (M) "
    "| FFN share (Amdahl max) | budget |"
)
FINAL_RULE = "|---|---|---|---|---|---|---|---|---|---|"


def final_row(v: Verification, label: str) -> str:
    """One Markdown row of a measured finalist."""
    meas = _ms(v.measured_ms)
    bleu = "-" if v.bleu is None else f"{v.bleu:.1f} / {v.chrf:.1f}" if v.chrf is not None else f"{v.bleu:.1f}"
    act = "-" if v.params_active_m is None else f"{v.params_active_m:.2f}"
    verdict = {True: "meets", False: "**misses**", None: "unverified"}[v.meets_budget]
    return (
        f"| `{v.arch_id}` | {label} | {_fitness_cell(v)} | {bleu} | {meas} | {v.predicted_ms:.3g} ({v.predicted_low_ms:.3g}-"
        f"{v.predicted_high_ms:.3g}) | {v.gflops:.3g} | {act} / {v.params_m:.2f} | {_share_cell(v)} | {verdict} |"
    )


def _fitness_cell(v: Verification) -> str:
    return f"{v.loss:.4f}" + (f" ± {v.loss_se:.4f}" if v.loss_se is not None else "")


def amdahl_max(ffn_share: float) -> float:
    """Amdahl's bound on what experts save: an MoE arch whose experts act on ``ffn_share`` of
    the FLOPs is at most this many times faster than a dense arch with the same attention."""
    return 1 / (1 - ffn_share)


def _share_cell(v: Verification) -> str:
    return "-" if v.ffn_share is None else f"{100 * v.ffn_share:.1f}% ({amdahl_max(v.ffn_share):.2f}x)"


def md_cell(text: str) -> str:
    """``text`` as one Markdown table cell (pipes escaped, one line; empty shown as such)."""
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def sample_tables(verifications: Sequence[Verification], what: str, keys: Sequence[str]) -> list[str]:
    """One Markdown table per arch with samples: ``### {what} by `id` (role)``, a column per key."""
    out = []
    for v in verifications:
        if v.samples:
            out += [f"### {what} by `{v.arch_id}` ({v.role})", "", f"| {' | '.join(keys)} |", "|---" * len(keys) + "|"]
            out += ["| " + " | ".join(md_cell(x[k]) for k in keys) + " |" for x in v.samples]
            out.append("")
    return out


def translation_lines(verifications: Sequence[Verification]) -> list[str]:
    """A Markdown section with each arch's source / reference / output triples."""
    out = sample_tables(verifications, "Translations", ("source", "reference", "output"))
    beams = {v.beam for v in verifications if v.samples}
    how = "greedy" if beams <= {1, None} else ", ".join(f"beam {b}" for b in sorted(b for b in beams if b))
    return ([f"## Translations (test split, {how}, inherited weights)", ""] + out) if out else []


def more_budgets(settings: dict[str, Any]) -> str:
    """'; prefill budget 40 ms; decode per token budget 3 ms/token; active params budget 2e+06':
    the budgets beyond the latency, FLOPs and params ones, those given only."""
    parts = [
        f"; {q.label} budget {settings[q.option]:g} {q.unit}" for q in ALL_QUANTITIES[1:] if settings.get(q.option)
    ]
    if settings.get("max_active_params"):
        parts.append(f"; active params budget {settings['max_active_params']:.4g}")
    return "".join(parts)


def _ms(x: float | None) -> str:
    return "not measured" if x is None else f"{x:.3g}"


def lm_row(v: Verification, label: str) -> str:
    """One Markdown row of a language model's finalist: perplexity, the measured prefill ms,
    decode ms per token and tokens/s, the primary budget measured against its prediction."""
    ppl = "-" if v.perplexity is None else f"{v.perplexity:.2f}"
    tps = "-" if v.tokens_per_s is None else f"{v.tokens_per_s:.0f}"
    primary = (
        f"{_ms(v.measured_ms)} / {v.predicted_ms:.3g} ({v.predicted_low_ms:.3g}-{v.predicted_high_ms:.3g}) {v.unit}"
    )
    act = "-" if v.params_active_m is None else f"{v.params_active_m:.3g}"
    checks = v.checks()
    missed = [c.label for c in checks if c.meets is False]
    verdict = {True: "meets", False: f"**misses** ({', '.join(missed)})", None: "unverified"}[v.meets_budget]
    return (
        f"| `{v.arch_id}` | {label} | {_fitness_cell(v)} | {ppl} | {_ms(v.timings.get(PREFILL.name))} | "
        f"{_ms(v.timings.get(DECODE_PER_TOKEN.name))} | {tps} | {checks[0].label}: {primary} | "
        f"{act} / {v.params_m:.3g} | {v.gflops:.3g} | {_share_cell(v)} | {verdict} |"
    )


LM_HEADER = (
    "| arch | role | fitness ± SE | perplexity | prefill ms | decode ms/token | tokens/s "
    "| primary budget: measured / predicted (interval) | params active / total (M) | GFLOPs "
    "| FFN share (Amdahl max) | budget |"
)
LM_RULE = "|---" * 12 + "|"


def continuation_lines(verifications: Sequence[Verification]) -> list[str]:
    """A Markdown section with each arch's prompt / reference / output continuations."""
    out = sample_tables(verifications, "Continuations", ("prompt", "reference", "output"))
    return (["## Continuations (test split, greedy, inherited weights)", ""] + out) if out else []


@dataclass(frozen=True)
class ReportLayout:
    """How a model family's finalists read in report.md: their table (``header``, ``rule``,
    ``row(verification, label)``), the sentence on how quality was judged, the samples section."""

    header: str
    rule: str
    row: Callable[[Verification, str], str]
    quality_note: Callable[[dict[str, Any]], str]
    samples: Callable[[Sequence[Verification]], list[str]]


def _translation_note(s: dict[str, Any]) -> str:
    return (
        f"BLEU / chrF: the test split decoded with beam {s.get('quality_beam')}, the beam the latency protocol times."
    )


def _lm_note(s: dict[str, Any]) -> str:
    p = s.get("protocol") or {}
    return (
        "Each validation block of the token stream counts as one sentence of the error bar. "
        "Perplexity: exp of the validation loss (nats/token). Latency under the protocol: a "
        f"{p.get('prompt_len')}-token prompt's prefill, then {p.get('decode_steps')} greedy decode steps; "
        "decode ms/token = decode ms / decode steps, tokens/s = 1000 / decode ms per token."
    )


REPORT_LAYOUTS: FamilyRegistry[ReportLayout] = FamilyRegistry(
    "search report layout",
    {
        ENCODER_DECODER: ReportLayout(FINAL_HEADER, FINAL_RULE, final_row, _translation_note, translation_lines),
        DECODER_ONLY: ReportLayout(LM_HEADER, LM_RULE, lm_row, _lm_note, continuation_lines),
    },
)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


ROLE_COLORS = {
    "searched": "tab:green",
    "dense": "tab:purple",
    "largest-dense": "tab:brown",
    "random-search": "tab:orange",
}


def plot_front(
    result: SearchResult, verifications: Sequence[Verification], budget_ms: float | None, path: Path, unit: str = "ms"
) -> None:
    """Evaluated archs, the front, the budget line and the re-measured points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ev: list[Candidate] = result.evaluated
    ax.scatter([c.latency for c in ev], [c.loss for c in ev], s=8, c="0.7", label="evaluated (predicted latency)")
    front = result.pareto()
    se = [c.loss_se if c.loss_se == c.loss_se else 0.0 for c in front]  # nan (no error known): no bar
    ax.errorbar(
        [c.latency for c in front],
        [c.loss for c in front],
        yerr=se,
        fmt="o-",
        c="tab:blue",
        ms=4,
        capsize=2,
        label="Pareto front (± 1 SE)",
    )
    for v in verifications:
        if v.measured_ms is not None:
            color = ROLE_COLORS.get(v.role, "tab:gray") if v.meets_budget is not False else "tab:red"
            ax.scatter(
                [v.measured_ms],
                [v.loss],
                marker="*",
                s=120,
                zorder=5,
                c=color,
                label=f"{v.role} measured" + ("" if v.meets_budget is not False else " (misses)"),
            )
            ax.errorbar(
                [v.predicted_ms],
                [v.loss],
                xerr=[[v.predicted_ms - v.predicted_low_ms], [v.predicted_high_ms - v.predicted_ms]],
                fmt="x",
                c="k",
                capsize=3,
            )
    if budget_ms:
        ax.axvline(budget_ms, ls="--", c="tab:red", label=f"budget {budget_ms:g} {unit}")
    ax.set_xlabel(f"latency ({unit})")
    ax.set_ylabel("validation loss (inherited weights)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
