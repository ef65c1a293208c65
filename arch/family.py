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

What differs between families is looked up, never branched on: each fact a floor needs per
family (the arch class, the space class, the cost formulas, the workload, a backend's prepared
workload, the feature stacks, ...) is one :class:`FamilyRegistry`, and a class that declares
``family: ClassVar[ModelFamily]`` registers itself in its floor's registry. Adding a family is
registering in each of them (``tests/arch/test_family.py`` lists the registries that lack it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from .errors import UserError

T = TypeVar("T")

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
# What an arch file, a space, a protocol, a profile row or a predictor that names no family is:
# everything was encoder-decoder before families existed, and such files are still written so.
DEFAULT_FAMILY = ENCODER_DECODER


def get_family(name: str) -> ModelFamily:
    """The registered family ``name``; UserError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r} (choose from {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_named(d: Any, where: str, default: ModelFamily = DEFAULT_FAMILY) -> ModelFamily:
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


class FamilyRegistry(Mapping[str, T]):
    """One fact of one floor, per model family: family name -> what the floor plugs in for it
    (a class, a function, a space name). ``what`` names the fact in errors.

    Filled from ``entries``: a mapping family -> thing, or things that declare their ``family``
    (classes with ``family: ClassVar[ModelFamily]``, or their instances); or afterwards with
    :meth:`register`, which also decorates such a class. Read as a mapping of family names
    (``PROTOCOLS["decoder-only"]``, ``", ".join(PROTOCOLS)``), or with :meth:`for_family`,
    whose miss is one UserError naming the families it knows."""

    def __init__(self, what: str, entries: Mapping[ModelFamily, T] | Iterable[T] = ()) -> None:
        self.what = what
        self._by_name: dict[str, T] = {}
        pairs = entries.items() if isinstance(entries, Mapping) else ((None, thing) for thing in entries)
        for family, thing in pairs:
            self.register(thing, family)

    def register(self, thing: T, family: ModelFamily | None = None) -> T:
        """Add ``thing`` for ``family`` (None: ``thing.family``, the family a class declares) and
        return it (a class decorator). ValueError for a family registered twice."""
        family = getattr(thing, "family", None) if family is None else family
        if not isinstance(family, ModelFamily):
            raise TypeError(f"{self.what}: {thing!r} declares no model family")
        if family.name in self._by_name:
            raise ValueError(f"{self.what}: model family {family.name!r} is registered twice")
        self._by_name[family.name] = thing
        return thing

    def for_family(self, family: ModelFamily | str) -> T:
        """What is registered for ``family`` (a ModelFamily or its name); UserError naming the
        families this registry knows otherwise."""
        name = family.name if isinstance(family, ModelFamily) else family
        if not isinstance(name, str) or name not in self._by_name:
            raise UserError(f"no {self.what} for model family {name!r} (known: {', '.join(self._by_name)})")
        return self._by_name[name]

    def missing(self) -> list[str]:
        """The registered families (:data:`FAMILIES`) this registry has nothing for."""
        return [name for name in FAMILIES if name not in self._by_name]

    def __getitem__(self, name: str) -> T:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"FamilyRegistry({self.what!r}, {list(self._by_name)})"
