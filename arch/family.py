"""Model families: the parts of one inference that a family's latency measurement times.

A family names its *components*: the parts of one inference under its latency protocol that the
profiler times separately, in the order they run (an encoder-decoder translation model: the
encoder, then the decoder's incremental steps; a decoder-only language model: the prompt's
prefill, then the decode steps). The whole inference, :data:`TOTAL`, is their sum
and is timed in the same repetition. Everything that lists components derives it from here:
the profile rows of one measurement (:attr:`ModelFamily.row_components`), the predictor targets
and ``fit --target`` (:attr:`ModelFamily.targets`), the profiler's timed step, and the reports.

A latency protocol names its family (``LatencyProtocol.family``); a family is not a protocol
field, so protocol ids and the datasets recorded before families existed stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UserError

TOTAL = "total"


@dataclass(frozen=True)
class ModelFamily:
    """One model family's timed components.

    ``name``: the id written in arch files and predictor metadata; ``components``: the timed
    parts in run order (each a ``run_<component>`` method of the profiler's prepared workload)."""

    name: str
    components: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.components or TOTAL in self.components or len(set(self.components)) != len(self.components):
            raise ValueError(f"family {self.name!r}: components must be distinct, non-empty and not {TOTAL!r}")

    @property
    def row_components(self) -> tuple[str, ...]:
        """Profile rows of one measurement, in order on disk: each component, then the total."""
        return (*self.components, TOTAL)

    @property
    def targets(self) -> tuple[str, ...]:
        """What a predictor can be fitted to, the default (the total) first."""
        return (TOTAL, *self.components)


ENCODER_DECODER = ModelFamily("encoder-decoder", ("encoder", "decoder"))
# A causal language model timed as llama-bench does: the prompt in one pass (prefill), then
# single-token steps on the growing KV cache (decode).
DECODER_ONLY = ModelFamily("decoder-only", ("prefill", "decode"))
# Registration order is the order of the unions below: encoder-decoder's names come first, so
# what datasets and predictors of that family list stays as it always was.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (ENCODER_DECODER, DECODER_ONLY)}


def get_family(name: str) -> ModelFamily:
    """The registered family ``name``; UserError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r} (choose from {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_named(d: Any, where: str, default: ModelFamily = ENCODER_DECODER) -> ModelFamily:
    """The family a mapping (an arch's JSON, a space's YAML) names in its ``family`` field;
    ``default`` when it names none (files written before families existed). UserError naming
    ``where`` when ``d`` is no mapping or the name is unknown."""
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a JSON object (a mapping), got {type(d).__name__}")
    name = d.get("family", default.name)
    if not isinstance(name, str) or name not in FAMILIES:
        raise UserError(f"{where}: family {name!r} is not a model family (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def _union(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for p in parts for c in p))


def all_row_components() -> tuple[str, ...]:
    """Every component a profile row of any family may carry (what a dataset reader accepts)."""
    return _union([f.row_components for f in FAMILIES.values()])


def all_targets() -> tuple[str, ...]:
    """Every predictor target of any family, the total first (``fit --target``'s choices)."""
    return _union([f.targets for f in FAMILIES.values()])
