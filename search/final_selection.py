"""Final selection by measurement: the arch a user can deploy, MoE or dense, chosen on the device.

Evolution ranks archs in a proxy world: fitness with inherited weights (noisy: 200 sentences),
latency predicted. Its best arch sits at the edge of the budget by construction, and a 1% miss
on a machine whose noise floor is 3% is a coin toss. So the answer is chosen after measuring:

1. **Pools.** Per family (the searched space; its dense variant, one expert per layer): the
   ``k`` best archs by fitness (every evaluated arch already meets the budget with the
   predictor's upper bound: evolution evaluates nothing else), plus every other evaluated arch
   whose fitness ties the family's best within the paired noise (:mod:`fitness_noise`). The
   ``largest_k`` dense archs by GFLOPs join too: the largest dense arch that meets the budget
   measured is the baseline a user would otherwise scale down to.
2. **One round-robin.** Every pooled arch and the fixed reference model are timed side by side
   (:func:`verify.verify`), so their latencies are comparable.
3. **Per family:** among the archs that meet the budget measured, the best fitness; archs whose
   fitness ties it within noise are equal in quality, and the fastest of them wins.
4. **Between families:** the better fitness when the difference is beyond noise, else the faster.

A family's pool can only hold archs whose predicted bound met the budget, so when none of them
meets it measured the predictor was wrong about all of them: the search says which came closest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from moenas.arch.cost import protocol_cost

from .evolution import Candidate
from .fitness_noise import Z_TIE, SentenceStats, paired_se, ties
from .report import Verification

StatsFn = Callable[[Sequence[Any]], list[SentenceStats]]  # archs -> their per-sentence fitness statistics
FAMILIES = ("searched", "dense")


@dataclass
class Finalist:
    """One pooled arch: where it came from, its fitness statistics, and (once measured) its row."""

    role: str  # "searched", "dense" or "largest-dense"
    candidate: Candidate
    stats: SentenceStats | None = None  # None: the fitness gave no per-sentence statistics
    row: Verification | None = None

    @property
    def arch_id(self) -> str:
        return self.candidate.arch.arch_id

    @property
    def latency_ms(self) -> float:
        """Measured latency, or the predicted mean when the pool was not measured."""
        assert self.row is not None
        return self.row.measured_ms if self.row.measured_ms is not None else self.row.predicted_ms


def pool(
    evaluated: Sequence[Candidate],
    k: int,
    stats_of: StatsFn | None,
    role: str,
    scan: int = 60,
    z: float = Z_TIE,
    max_ties: int | None = None,
) -> list[Finalist]:
    """The ``k`` best of ``evaluated`` by fitness plus the other archs that tie the best within noise.

    Ties are decided on the paired error, which needs per-sentence statistics (``stats_of``,
    computed for the pool only). The others are pre-screened by fitness: within twice the tie
    margin of the k best's largest paired error with the best (without two of them, within the
    unpaired margin), at most ``scan`` of them in fitness order. Of the ties, the ``max_ties``
    (default 2k) of lowest predicted latency join: a tie goes to the faster arch, and a converged
    population can hold dozens of archs within noise of each other (36 in one demo run, which
    took that run's search stage to 195 s). Without ``stats_of`` the pool is the ``k`` best."""
    ranked = sorted(evaluated, key=lambda c: (c.loss, c.arch.arch_id))
    top, rest = ranked[:k], ranked[k:]
    if not top:
        return []
    if stats_of is None:
        return [Finalist(role, c) for c in top]
    best = top[0]
    stats = stats_of([c.arch for c in top])
    out = [Finalist(role, c, s) for c, s in zip(top, stats)]
    errors = [paired_se(s, stats[0]) for s in stats[1:]]
    if errors and np.isfinite(max(errors)):
        maybe = [c for c in rest if c.loss - best.loss <= 2 * z * max(errors)][:scan]
    else:
        maybe = [c for c in rest if _within(c.loss - best.loss, np.hypot(best.loss_se, c.loss_se), z)][:scan]
    more = stats_of([c.arch for c in maybe]) if maybe else []
    tied = [Finalist(role, c, s) for c, s in zip(maybe, more) if ties(c.loss - best.loss, paired_se(s, stats[0]), z)]
    tied.sort(key=lambda f: (f.candidate.latency, f.candidate.loss, f.arch_id))  # the likeliest winners of a tie first
    return out + tied[: 2 * k if max_ties is None else max_ties]


def largest(evaluated: Sequence[Candidate], n: int, role: str = "largest-dense") -> list[Finalist]:
    """The ``n`` evaluated archs of most protocol FLOPs (largest first)."""
    by_size = sorted(evaluated, key=lambda c: (-protocol_cost(c.arch).total_flops, c.arch.arch_id))
    return [Finalist(role, c) for c in by_size[:n]]


def _meeting(finalists: Sequence[Finalist]) -> list[Finalist]:
    """The finalists that meet the budget (measured; predicted when unmeasured)."""
    return [f for f in finalists if f.row is not None and f.row.meets_budget is not False]


def pick(finalists: Sequence[Finalist], z: float = Z_TIE) -> Finalist | None:
    """Among finalists that meet the budget (measured; predicted when unmeasured), the best
    fitness; the ones tied with it within the paired noise are equal, and the fastest wins.
    None when none meets the budget."""
    ok = _meeting(finalists)
    if not ok:
        return None
    best = min(ok, key=lambda f: (f.candidate.loss, f.arch_id))
    tied = [f for f in ok if f is best or tie_between(f, best, z)]
    return min(tied, key=lambda f: (f.latency_ms, f.candidate.loss, f.arch_id))


def tie_between(a: Finalist, b: Finalist, z: float = Z_TIE) -> bool:
    """Whether two finalists' fitnesses are equal within the paired noise (False when unknown)."""
    if a.stats is None or b.stats is None:
        return False
    return ties(a.candidate.loss - b.candidate.loss, paired_se(a.stats, b.stats), z)


def largest_meeting(finalists: Sequence[Finalist]) -> Finalist | None:
    """The finalist of most GFLOPs that meets the budget (None when none does)."""
    ok = _meeting(finalists)
    return max(ok, key=lambda f: (f.row.gflops, f.arch_id)) if ok else None


def closest_miss(finalists: Sequence[Finalist]) -> Finalist | None:
    """The measured finalist nearest the budget from above (for the one-line 'none meets it'):
    with several budgets, the one whose worst overrun is smallest."""
    missed = [f for f in finalists if f.row is not None and f.row.meets_budget is False]
    return min(missed, key=lambda f: (f.row.worst_check().ratio, f.arch_id)) if missed else None


@dataclass
class Verdict:
    """Which of the two family winners to deploy, and why, in one sentence."""

    winner: Finalist
    loss_diff: float | None  # searched - dense fitness (lower is better); None without a dense winner
    loss_diff_se: float | None  # its paired standard error
    sentence: str


def verdict(
    searched: Finalist | None,
    dense: Finalist | None,
    budget_ms: float | None,
    metric: str = "loss",
    z: float = Z_TIE,
    unit: str = "ms",
) -> Verdict | None:
    """The deployable answer between the two families' winners (either may be None); latencies
    are the primary budget's, in its ``unit``."""
    if searched is None and dense is None:
        return None
    if searched is None or dense is None:
        only = searched or dense
        other = "dense" if dense is None else "searched"
        return Verdict(only, None, None, f"Deploy {describe(only)}: no {other} arch met the budget when measured.")
    if searched.arch_id == dense.arch_id:
        return Verdict(searched, 0.0, 0.0, f"Deploy {describe(searched)}: the search's answer is itself dense.")
    diff = searched.candidate.loss - dense.candidate.loss
    se = (
        paired_se(searched.stats, dense.stats)
        if searched.stats is not None and dense.stats is not None
        else float("nan")
    )
    fit_unit = "nats" if metric == "loss" else "BLEU"
    shown = diff if metric == "loss" else -diff
    gap = f"searched - dense fitness {shown:+.3f} ± {se:.3f} {fit_unit}"
    at = f" at {budget_ms:.4g} {unit}" if budget_ms else ""
    how = "when measured" if searched.row and searched.row.measured_ms is not None else "as predicted (not measured)"
    if ties(diff, se, z):
        win = searched if searched.latency_ms <= dense.latency_ms else dense
        lose = dense if win is searched else searched
        return Verdict(
            win,
            diff,
            se,
            f"Deploy {describe(win)}: it ties {describe(lose)} in quality{at} ({gap}, within "
            f"noise) and is {_pace(win, lose)} {how} ({win.latency_ms:.3g} vs {lose.latency_ms:.3g} {unit}).",
        )
    win = searched if diff < 0 else dense
    lose = dense if win is searched else searched
    return Verdict(
        win,
        diff,
        se,
        f"Deploy {describe(win)}: it is better than {describe(lose)}{at} ({gap}, beyond "
        f"noise) and {_pace(win, lose)} {how} ({win.latency_ms:.3g} vs {lose.latency_ms:.3g} {unit}).",
    )


def _pace(win: Finalist, lose: Finalist) -> str:
    """'1.07x faster' / '1.03x slower' / 'as fast' (the latency ratio, from the winner's side)."""
    return pace(lose.latency_ms / win.latency_ms)


def pace(r: float) -> str:
    """'1.07x faster' / '1.03x slower' / 'as fast': the latency ratio ``r`` = other / this, read
    from this arch's side."""
    if round(r, 2) == 1:
        return "as fast"
    return f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower"


def describe(f: Finalist) -> str:
    """'the searched MoE arch `id`' / 'the dense arch `id`' (a searched arch may be dense too)."""
    kind = "dense" if f.candidate.arch.is_dense else "MoE"
    who = "searched " if f.role == "searched" else ""
    return f"the {who}{kind} arch `{f.arch_id}`"


def _within(diff: float, se: float, z: float) -> bool:
    """Pre-screen: a nan error lets nothing through (nothing is known of the noise)."""
    return bool(np.isfinite(se)) and diff <= z * se


@dataclass
class FinalSelection:
    """What the final selection found: every finalist (with its measured row), each family's
    winner, the largest dense arch meeting the budget, and the verdict between the families."""

    finalists: list[Finalist]
    budget_ms: float | None
    measured: bool
    searched: Finalist | None = None
    dense: Finalist | None = None
    largest_dense: Finalist | None = None
    random: Finalist | None = None
    verdict: Verdict | None = None
    closest: Finalist | None = None  # when nothing met the budget: the nearest miss
    unit: str = "ms"  # the primary budget's unit (budget_ms, the finalists' latency_ms)

    @property
    def winner(self) -> Finalist | None:
        return self.verdict.winner if self.verdict else None

    def rows(self) -> list[Verification]:
        return [f.row for f in self.finalists if f.row is not None]

    def none_meets_message(self) -> str:
        """The one line for a search whose every finalist missed the budget when measured."""
        c = self.closest
        if c is None or c.row is None:
            return "no candidate was measured"
        w = c.row.worst_check()  # with several budgets: the one it misses most
        return (
            f"no candidate meets {w.phrase()} when measured: the closest, {c.role} arch "
            f"{c.arch_id}, measured {w.measured_ms:.4g} {w.unit} ({100 * (w.ratio - 1):.1f}% over; predicted "
            f"{w.predicted_ms:.3g} {w.unit}, upper bound {w.predicted_high_ms:.3g})"
        )

    def to_dict(self) -> dict[str, Any]:
        ids = {
            k: (getattr(self, k).arch_id if getattr(self, k) else None)
            for k in ("searched", "dense", "largest_dense", "random")
        }
        v = self.verdict
        return {
            "measured": self.measured,
            "budget_ms": self.budget_ms,
            "budget_unit": self.unit,
            "winner": self.winner.arch_id if self.winner else None,
            "winner_role": self.winner.role if self.winner else None,
            **ids,
            "verdict": v.sentence if v else self.none_meets_message(),
            "loss_diff": v.loss_diff if v else None,
            "loss_diff_se": v.loss_diff_se if v else None,
            "tie_z": Z_TIE,
            "pool": {
                r: sum(f.role == r for f in self.finalists) for r in dict.fromkeys(f.role for f in self.finalists)
            },
        }


def decide(
    finalists: list[Finalist], budget_ms: float | None, measured: bool, metric: str = "loss", unit: str = "ms"
) -> FinalSelection:
    """Each family's pick, the largest dense arch that meets the budget (every budget, each
    against its own measured component: ``Verification.meets_budget``), and the verdict;
    ``budget_ms`` and ``unit``: the primary budget's."""
    by = {r: [f for f in finalists if f.role == r] for r in ("searched", "dense", "largest-dense", "random-search")}
    sel = FinalSelection(
        finalists,
        budget_ms,
        measured,
        searched=pick(by["searched"]),
        dense=pick(by["dense"]),
        largest_dense=largest_meeting(by["largest-dense"]),
        random=next(iter(by["random-search"]), None),
        unit=unit,
    )
    sel.verdict = verdict(sel.searched, sel.dense, budget_ms, metric, unit=unit)
    if sel.verdict is None:
        sel.closest = closest_miss([f for f in finalists if f.role in FAMILIES])
    return sel
