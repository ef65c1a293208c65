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
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from .checks import check_range
from .errors import UserError
from .family import ENCODER_DECODER, ModelFamily

ROUTINGS = ("seeded-random",)
# What the cost model and the shape of every timed tensor depend on: a predictor is refused for
# a protocol that differs in one of these (routing and seeds only change which tokens go where).
SHAPE_FIELDS = ("batch", "src_len", "decoder_steps", "beam")


@dataclass(frozen=True)
class LatencyProtocol:
    # What one measurement times (not a field: protocol ids predate families and stay the same)
    family: ClassVar[ModelFamily] = ENCODER_DECODER
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
        # types too: a protocol is also read back from a dataset's or a predictor's metadata
        for f in ("batch", "src_len", "decoder_steps", "beam"):
            check_range(f"protocol {f}", getattr(self, f), 1, integer=True)
        for f in ("model_seed", "input_seed"):
            check_range(f"protocol {f}", getattr(self, f), 0, integer=True)
        if not isinstance(self.routing, str) or self.routing not in ROUTINGS:
            raise UserError(f"protocol routing {self.routing!r} is unknown (choose from {', '.join(ROUTINGS)})")

    @property
    def decoder_batch(self) -> int:
        """Rows the decoder runs on per step: every beam of every sentence."""
        return self.batch * self.beam

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
    def from_dict(cls, d: dict[str, Any]) -> "LatencyProtocol":
        """The protocol a ``to_dict`` wrote (missing fields: defaults; unknown keys: ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def shape_differences(have: LatencyProtocol | None, want: LatencyProtocol) -> list[str]:
    """``"beam 5 vs 4"`` for each of :data:`SHAPE_FIELDS` on which ``have`` (None: not
    recorded) differs from ``want``; empty when they agree."""
    return [f"{k} {getattr(have, k, None)} vs {getattr(want, k)}" for k in SHAPE_FIELDS
            if getattr(have, k, None) != getattr(want, k)]
