"""Search constraints as g(arch) <= 0 (pymoo's convention), checked before any costly evaluation.

Each constraint maps a batch of archs to one column of G (n_archs,); an arch is feasible when
every column is <= 0. Values are relative to the budget (g = value / limit - 1), so columns are
comparable and a violation reads as "x% over budget".

The latency constraint is a chance constraint: with ``confidence`` C it uses the predictor's
upper bound at level C, so an arch that passes meets the budget on the device with
probability about C (as far as the predictor's calibrated interval is right). One class serves
every timed component: it names the component its predictor predicts (the whole inference, a
language model's prefill or its decode steps) and how many steps that component's time is
spread over (a per-token decode budget divides the decode time by the protocol's steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from moenas.arch import Arch
from moenas.arch.cost import param_count, protocol_cost
from moenas.arch.family import TOTAL
from moenas.arch.protocol import LatencyProtocol
from moenas.arch.protocol import Protocol as AnyProtocol  # either family's (typing.Protocol is taken)


class PredictsLatency(Protocol):
    """What search needs from a latency predictor (moenas.predictor.Predictor satisfies it)."""

    def predict(self, archs: Sequence[Arch], confidence: float = 0.9): ...  # -> .mean, .lower, .upper (ms)


class Constraint(Protocol):
    name: str

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray: ...

    def explain(self, arch: Arch, g: float) -> str:
        """A violation (g > 0) in the budget's own units, for the 'nothing is feasible' line."""
        ...


@dataclass
class LatencyConstraint:
    """Predicted latency (upper bound at ``confidence``; the mean when confidence is None) <= max_ms.

    ``component``: what ``predictor`` predicts and the final measurement checks (a family's
    component, or the total); ``steps``: the number of steps that time is spread over, the
    budget being per step (a language model's decode time over its ``decode_steps``: ms per
    token); ``unit`` names the budget's unit in messages. ``max_ms`` None: a latency to report
    beside the budgets, with no budget of its own (never in a :class:`ConstraintSet`)."""

    predictor: PredictsLatency
    max_ms: float | None
    confidence: float | None = 0.9
    name: str = "latency"
    component: str = TOTAL
    steps: int = 1
    unit: str = "ms"

    def per_step(self, ms: np.ndarray | float) -> np.ndarray:
        """Milliseconds of the whole component -> the budget's unit (ms per step)."""
        return np.asarray(ms, dtype=float) / self.steps

    def bound(self, archs: Sequence[Arch]) -> np.ndarray:
        pred = self.predictor.predict(list(archs), confidence=self.confidence or 0.5)
        return self.per_step(pred.mean if self.confidence is None else pred.upper)

    def mean(self, archs: Sequence[Arch]) -> np.ndarray:
        """The predicted mean, in the budget's unit (what candidates carry as their latency)."""
        return self.per_step(self.predictor.predict(list(archs), confidence=self.confidence or 0.5).mean)

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        assert self.max_ms is not None, "a latency with no budget is no constraint"
        return self.bound(archs) / self.max_ms - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        what = "mean" if self.confidence is None else "bound"
        return (
            f"predicted {self.name.replace('_', ' ')} {what} {float(self.bound([arch])[0]):.3g} {self.unit} over the budget of "
            f"{self.max_ms:g} {self.unit}"
        )


@dataclass
class FlopsConstraint:
    """Total FLOPs under the latency protocol (cost model, uniform routing) <= max_gflops."""

    max_gflops: float
    protocol: AnyProtocol = LatencyProtocol()
    name: str = "gflops"

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([protocol_cost(a, self.protocol).total_flops / 1e9 for a in archs]) / self.max_gflops - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        return f"{(g + 1) * self.max_gflops:.3g} GFLOPs over the budget of {self.max_gflops:g}"


@dataclass
class ParamsConstraint:
    """Parameters <= max_params: every weight (all experts), or with ``active`` the weights one
    token passes through (router and its top-k experts, :func:`moenas.arch.cost.param_count`)."""

    max_params: float
    active: bool = False
    name: str = "params"

    def __post_init__(self) -> None:
        if self.active and self.name == "params":
            self.name = "active_params"

    def count(self, arch: Arch) -> float:
        p = param_count(arch)
        return float(p.active if self.active else p.total)

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.count(a) for a in archs], dtype=float) / self.max_params - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        what = "active parameters" if self.active else "parameters"
        return f"{(g + 1) * self.max_params:.4g} {what} over the budget of {self.max_params:.4g}"


@dataclass
class ConstraintSet:
    constraints: list[Constraint]

    def G(self, archs: Sequence[Arch]) -> np.ndarray:
        """(n_archs, n_constraints); an empty set gives (n_archs, 0)."""
        if not self.constraints:
            return np.zeros((len(archs), 0))
        return np.stack([np.asarray(c(archs), dtype=float) for c in self.constraints], axis=1)

    def feasible(self, archs: Sequence[Arch]) -> np.ndarray:
        return (self.G(archs) <= 0).all(axis=1) if len(archs) else np.zeros(0, dtype=bool)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.constraints]
