"""The latency budgets a search can be given, per model family, and the predictors behind them.

A budget is a limit on one *latency quantity*: a timed component of the family's latency
protocol (or the total), possibly spread over the protocol's steps. A translation model has one
(its total latency); a decoder-only language model three: the total, the prompt's prefill and
the decode time per generated token (decode time / ``decode_steps``, llama-bench's tg figure
inverted). Each budget needs a predictor fitted to its component (``moenas fit --target``), so
``moenas search --predictor`` takes one predictor per target, all fitted under one protocol on
one space (:class:`PredictorSet`). The final measurement times every component in one
round-robin, and each budget is checked against its own component of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from moenas.arch import UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, TOTAL, FamilyRegistry, ModelFamily
from moenas.arch.protocol import Protocol, protocol_from_dict

from .constraints import LatencyConstraint


@dataclass(frozen=True)
class LatencyQuantity:
    """One latency figure of an inference: ``component`` (or the total), in ms, divided by the
    protocol field ``per`` when set (then a figure per step: ``decode_steps`` gives ms per
    token). ``name`` keys it in reports and constraint columns; ``flag`` is its budget's
    ``moenas search`` flag and ``option`` the SearchJob field that holds it."""

    name: str
    component: str
    flag: str
    per: str | None = None

    @property
    def label(self) -> str:
        """How a sentence names it: "latency", "prefill", "decode per token"."""
        return self.name.replace("_", " ")

    @property
    def option(self) -> str:
        """The SearchJob / argparse attribute of the budget: ``--max-prefill-ms`` -> ``max_prefill_ms``."""
        return self.flag[2:].replace("-", "_")

    @property
    def unit(self) -> str:
        return "ms" if self.per is None else "ms/token"

    def steps(self, protocol: Protocol) -> int:
        """What the component's time is divided by under ``protocol`` (1: a whole-component figure)."""
        return 1 if self.per is None else int(getattr(protocol, self.per))

    def of(self, component_ms: float, protocol: Protocol) -> float:
        """The component's measured or predicted ms -> this quantity (ms, or ms per step)."""
        return component_ms / self.steps(protocol)

    def constraint(
        self, predictor: Any, max_ms: float | None, confidence: float | None, protocol: Protocol
    ) -> LatencyConstraint:
        """The search constraint of a budget of ``max_ms`` on this quantity (None: no budget,
        a latency to report only)."""
        return LatencyConstraint(
            predictor, max_ms, confidence, self.name, self.component, self.steps(protocol), self.unit
        )


LATENCY = LatencyQuantity("latency", TOTAL, "--max-latency-ms")
PREFILL = LatencyQuantity("prefill", "prefill", "--max-prefill-ms")
DECODE_PER_TOKEN = LatencyQuantity("decode_per_token", "decode", "--max-decode-ms-per-token", per="decode_steps")
# Every budget flag, in the order a search lists its constraints: the first one given is the
# primary budget, the one the report's latency column and the Pareto plot show.
ALL_QUANTITIES = (LATENCY, PREFILL, DECODE_PER_TOKEN)
# The quantities a family's inference has (what its budgets may limit and its report shows).
QUANTITIES: FamilyRegistry[tuple[LatencyQuantity, ...]] = FamilyRegistry(
    "latency budgets", {ENCODER_DECODER: (LATENCY,), DECODER_ONLY: (LATENCY, PREFILL, DECODE_PER_TOKEN)}
)


def protocol_of(predictor: Any) -> Protocol:
    """The latency protocol a predictor was fitted under, of its family (the encoder-decoder
    default when it records none)."""
    meta = getattr(predictor, "metadata", None) or {}
    return protocol_from_dict(meta.get("protocol") or {})


def tokens_per_s(ms_per_token: float | None) -> float | None:
    """Decode throughput (generated tokens per second) from the decode time per token."""
    return None if not ms_per_token else 1000.0 / ms_per_token


def check_family_budgets(family: ModelFamily, space_name: str, budgets: dict[str, float | None]) -> None:
    """One UserError line when a budget is given (``budgets``: option -> value) that the family's
    inference has no quantity for (a prefill budget on a translation space)."""
    have = QUANTITIES.for_family(family)
    for q in ALL_QUANTITIES:
        if budgets.get(q.option) is not None and q not in have:
            where = ", ".join(name for name, qs in QUANTITIES.items() if q in qs)
            raise UserError(
                f"{q.flag}: space {space_name!r} is {family.name}; a {q.label} budget is for {where} spaces"
            )


@dataclass
class PredictorSet:
    """The latency predictors of one search, keyed by target (``total``, ``prefill``, ...),
    all fitted on ``space`` under one latency protocol; loaded on first use."""

    paths: Sequence[str]
    space: str
    _by_target: dict[str, tuple[str, Any]] | None = field(default=None, init=False, repr=False)

    @property
    def by_target(self) -> dict[str, tuple[str, Any]]:
        """target -> (path, Predictor); UserError for two of one target, or another protocol."""
        if self._by_target is None:
            from moenas.predictor import Predictor

            found: dict[str, tuple[str, Any]] = {}
            for path in self.paths:
                p = Predictor.load(path, space=self.space)
                if found:
                    first_path, first = next(iter(found.values()))
                    p.check(protocol=first.protocol, where=f"{path} (beside {first_path})")
                target = p.metadata.get("target") or TOTAL
                if target in found:
                    raise UserError(f"{found[target][0]} and {path} both predict {target!r} latency: give one of each")
                found[target] = (path, p)
            self._by_target = found
        return self._by_target

    def check(self) -> None:
        """Load every predictor now: a missing, foreign or mismatched one is one UserError line."""
        self.by_target  # noqa: B018 - loading is the check

    @property
    def primary(self) -> Any:
        """The predictor of the total latency, else the first given: what a search without a
        latency budget reports its candidates' latency with."""
        found = self.by_target
        return found[TOTAL][1] if TOTAL in found else next(iter(found.values()))[1]

    @property
    def protocol(self) -> Protocol:
        return protocol_of(self.primary)

    def for_quantity(self, q: LatencyQuantity) -> Any:
        """The predictor of ``q``'s component; one UserError line naming the targets given otherwise."""
        found = self.by_target
        if q.component not in found:
            given = ", ".join(f"{t} ({path})" for t, (path, _) in found.items())
            raise UserError(
                f"{q.flag} needs a predictor of {q.component} latency (`moenas fit --target {q.component}`), "
                f"passed to --predictor beside the others; given: {given}"
            )
        return found[q.component][1]

    def unbudgeted(self, family: ModelFamily, confidence: float | None) -> LatencyConstraint:
        """The primary predictor's latency as a constraint with no budget: what a search
        without a latency budget reports its candidates' latency with."""
        target = self.primary.metadata.get("target") or TOTAL
        q = next((q for q in QUANTITIES.for_family(family) if q.component == target), LATENCY)
        return q.constraint(self.primary, None, confidence, self.protocol)

    def describe(self) -> dict[str, str]:
        """target -> path, for the report's settings."""
        return {t: path for t, (path, _) in self.by_target.items()}
