"""Search constraints as g(arch) <= 0 (pymoo's convention), checked before any costly evaluation.

Each constraint maps a batch of archs to one column of G (n_archs,); an arch is feasible when
every column is <= 0. Values are relative to the budget (g = value / limit - 1), so columns are
comparable and a violation reads as "x% over budget".

The latency constraint is a chance constraint: with ``confidence`` C it uses the predictor's
upper bound at level C, so an arch that passes meets the budget on the device with
probability about C (as far as the predictor's calibrated interval is right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from moenas.arch import Arch
from moenas.arch.cost import param_count, protocol_cost
from moenas.arch.protocol import LatencyProtocol


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
    """Predicted latency (upper bound at ``confidence``; the mean when confidence is None) <= max_ms."""

    predictor: PredictsLatency
    max_ms: float
    confidence: float | None = 0.9
    name: str = "latency"

    def bound(self, archs: Sequence[Arch]) -> np.ndarray:
        pred = self.predictor.predict(list(archs), confidence=self.confidence or 0.5)
        return np.asarray(pred.mean if self.confidence is None else pred.upper, dtype=float)

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.bound(archs) / self.max_ms - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        what = "mean" if self.confidence is None else "bound"
        return f"predicted latency {what} {float(self.bound([arch])[0]):.3g} ms over the budget of {self.max_ms:g} ms"


@dataclass
class FlopsConstraint:
    """Total FLOPs under the latency protocol (cost model, uniform routing) <= max_gflops."""

    max_gflops: float
    protocol: LatencyProtocol = LatencyProtocol()
    name: str = "gflops"

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([protocol_cost(a, self.protocol).total_flops / 1e9 for a in archs]) / self.max_gflops - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        return f"{(g + 1) * self.max_gflops:.3g} GFLOPs over the budget of {self.max_gflops:g}"


@dataclass
class ParamsConstraint:
    """Total parameters (all experts) <= max_params."""

    max_params: float
    name: str = "params"

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([param_count(a).total for a in archs], dtype=float) / self.max_params - 1.0

    def explain(self, arch: Arch, g: float) -> str:
        return f"{(g + 1) * self.max_params:.4g} parameters over the budget of {self.max_params:.4g}"


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
