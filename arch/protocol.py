"""The latency protocol: what one latency measurement means (HAT-compatible defaults).

Batch 1, a 30-token source, 30 decoder steps with a KV cache at beam 5 (the decoder runs on
batch * beam rows). Every field is configurable and recorded with each profile row, and the
cost model evaluates FLOPs/bytes under the same protocol so features and timings line up.

What the profiler times under it:

batch 1, source 30 tokens, 30 decoder steps with a KV cache, beam 5 (decoder batch =
batch * beam). Encoder = ``encode`` + ``cross_kv`` on (batch, src_len) random source tokens;
decoder = ``decoder_steps`` incremental steps, step t feeding the t keys/values of the steps
before it (step 0 has an empty cache), tokens drawn at random (no beam reordering: beam search
bookkeeping is not part of the model's latency); total = encoder + decoder of the same
repetition.

Routing: ``seeded-random`` = the router of ``build_model(arch, model_seed)`` (random weights)
applied to random source tokens (seed ``input_seed`` mixed with the arch id). The per-expert
token counts of exactly these inputs are stored with each row.

A decoder-only language model has its own protocol, :class:`LMProtocol` (llama-bench's pp/tg
terms: a prompt processed in one pass, then greedy single-token steps). Both share
:class:`ProtocolBase` (id, seeds, reading back); :func:`protocol_for` gives a family's default.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .checks import check_range
from .errors import UserError
from .family import DECODER_ONLY, DEFAULT_FAMILY, ENCODER_DECODER, FamilyRegistry, ModelFamily

ROUTINGS = ("seeded-random",)
# The longest context (prompt + decode steps, tokens) a decoder-only protocol times: the prefill's
# attention scores alone take batch x heads x 4 bytes x context^2 (16 heads at 8192: 4 GiB).
MAX_CONTEXT = 8192
# What the cost model and the shape of every timed tensor depend on: a predictor is refused for
# a protocol that differs in one of these (routing and seeds only change which tokens go where).
SHAPE_FIELDS = ("batch", "src_len", "decoder_steps", "beam")


class ProtocolBase:
    """What every family's protocol shares: range checks, the id, per-arch seeds, reading back.

    A subclass is a frozen dataclass whose integer fields are its ``shape_fields`` (>= 1) and
    ``model_seed`` / ``input_seed`` (>= 0), plus ``routing``; ``family`` is a class attribute."""

    family: ClassVar[ModelFamily]
    shape_fields: ClassVar[tuple[str, ...]]

    def _check(self) -> None:
        # types too: a protocol is also read back from a dataset's or a predictor's metadata
        for f in self.shape_fields:
            check_range(f"protocol {f}", getattr(self, f), 1, integer=True)
        for f in ("model_seed", "input_seed"):
            check_range(f"protocol {f}", getattr(self, f), 0, integer=True)
        if not isinstance(self.routing, str) or self.routing not in ROUTINGS:
            raise UserError(f"protocol routing {self.routing!r} is unknown (choose from {', '.join(ROUTINGS)})")

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stored in profile rows, dataset sidecars and predictor metadata."""
        return asdict(self)

    @property
    def protocol_id(self) -> str:
        key = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def arch_seed(self, arch_id: str) -> int:
        """Seed for one arch's random inputs: the same arch always gets the same inputs."""
        return int(hashlib.sha256(f"{self.input_seed}:{arch_id}".encode()).hexdigest()[:8], 16)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """The protocol a ``to_dict`` wrote (missing fields: defaults; unknown keys: ignored).
        A dict naming another family (no ``family`` key: encoder-decoder) is refused: its fields
        would otherwise be dropped and this family's defaults used without a word."""
        family = d.get("family", DEFAULT_FAMILY.name)
        if family != cls.family.name:
            raise UserError(f"protocol of family {family!r}, expected one of family {cls.family.name!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def describe(self) -> str:
        """One phrase of what one measurement times under this protocol (``space stats``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class LatencyProtocol(ProtocolBase):
    # What one measurement times (not a field: protocol ids predate families and stay the same)
    family: ClassVar[ModelFamily] = ENCODER_DECODER
    shape_fields: ClassVar[tuple[str, ...]] = SHAPE_FIELDS
    batch: int = 1
    src_len: int = 30
    decoder_steps: int = 30
    beam: int = 5
    # How MoE layers are routed while timing: the router of build_model(arch, model_seed) on
    # random source tokens. Another assumption (e.g. a trained supernet's routers) needs a new
    # value here and its implementation in profiler/workload.py's Workload.
    routing: str = "seeded-random"
    model_seed: int = 0
    input_seed: int = 0

    def __post_init__(self) -> None:
        self._check()

    @property
    def decoder_batch(self) -> int:
        """Rows the decoder runs on per step: every beam of every sentence."""
        return self.batch * self.beam

    def describe(self) -> str:
        return f"batch {self.batch}, source {self.src_len} tokens, {self.decoder_steps} decoder steps, beam {self.beam}"


@dataclass(frozen=True)
class LMProtocol(ProtocolBase):
    """One latency measurement of a decoder-only language model, in llama-bench's terms.

    Defaults: batch 1, a 128-token prompt (pp128) and 32 greedy decode steps (tg32).
    ``prefill`` = the (batch, prompt_len) prompt in one causal pass, producing the last
    position's logits (batch, V) and the KV cache of prompt_len positions per layer;
    ``decode`` = ``decode_steps`` single-token steps, step t attending to a cache of
    prompt_len + t positions and producing logits (batch, V) (the token fed is drawn at random:
    which token greedy picks does not change the work). total = prefill + decode of the same
    repetition. Routing and seeds mean what they mean in :class:`LatencyProtocol`, the random
    tokens being the prompt's."""

    family: ClassVar[ModelFamily] = DECODER_ONLY
    shape_fields: ClassVar[tuple[str, ...]] = ("batch", "prompt_len", "decode_steps")
    batch: int = 1
    prompt_len: int = 128
    decode_steps: int = 32
    routing: str = "seeded-random"
    model_seed: int = 0
    input_seed: int = 0

    def __post_init__(self) -> None:
        self._check()
        if self.prompt_len + self.decode_steps > MAX_CONTEXT:
            raise UserError(
                f"protocol prompt_len + decode_steps = {self.prompt_len + self.decode_steps} tokens: at most "
                f"{MAX_CONTEXT} (the context a small model on one machine is timed at; the attention of a longer "
                "prompt would not fit in memory)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Every field and the family (a reader of metadata tells the protocols apart by it)."""
        return {"family": self.family.name, **asdict(self)}

    def describe(self) -> str:
        return (
            f"batch {self.batch}, prompt {self.prompt_len} tokens, {self.decode_steps} greedy decode steps "
            "with a KV cache"
        )


Protocol = LatencyProtocol | LMProtocol
# family name -> its protocol class
PROTOCOLS: FamilyRegistry[type[Protocol]] = FamilyRegistry("latency protocol", (LatencyProtocol, LMProtocol))


def protocol_for(family: ModelFamily | str) -> Protocol:
    """The default protocol of ``family`` (a ModelFamily or its name)."""
    return PROTOCOLS.for_family(family)()


def default_protocol(arch: Any) -> Protocol:
    """The default protocol of the family of ``arch`` (an Arch or an LMArch)."""
    return protocol_for(arch.family)


def protocol_from_dict(d: dict[str, Any]) -> Protocol:
    """Any family's protocol from its ``to_dict`` (no ``family`` key: encoder-decoder)."""
    name = d.get("family", DEFAULT_FAMILY.name)
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise UserError(f"protocol family {name!r} is unknown (choose from {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name].from_dict(d)


def shape_differences(have: Protocol | None, want: Protocol) -> list[str]:
    """``"beam 5 vs 4"`` for each shape field of ``want``'s family (:data:`SHAPE_FIELDS` for
    encoder-decoder) on which ``have`` (None: not recorded) differs from ``want``, after a
    ``"family ..."`` entry when ``have`` is of another family; empty when they agree."""
    out = []
    if have is not None and have.family is not want.family:
        out.append(f"family {have.family.name} vs {want.family.name}")
    return out + [
        f"{k} {getattr(have, k, None)} vs {getattr(want, k)}"
        for k in want.shape_fields
        if getattr(have, k, None) != getattr(want, k)
    ]
