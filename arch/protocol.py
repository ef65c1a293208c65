"""The latency protocol: what one latency measurement means (HAT-compatible defaults).

Batch 1, a 30-token source, 30 decoder steps with a KV cache at beam 5 (the decoder runs on
batch * beam rows). Every field is configurable and recorded with each profile row, and the
cost model evaluates FLOPs/bytes under the same protocol so features and timings line up.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import UserError

ROUTINGS = ("random-router", "uniform", "checkpoint")


@dataclass(frozen=True)
class LatencyProtocol:
    batch: int = 1
    src_len: int = 30
    decoder_steps: int = 30
    beam: int = 5
    # How MoE layers are routed while timing: the seeded random router of a freshly built model
    # ("random-router"), or a trained supernet's routers ("checkpoint").
    routing: str = "random-router"

    def __post_init__(self) -> None:
        for f in ("batch", "src_len", "decoder_steps", "beam"):
            if getattr(self, f) < 1:
                raise UserError(f"protocol {f} must be >= 1, got {getattr(self, f)}")
        if self.routing not in ROUTINGS:
            raise UserError(f"protocol routing {self.routing!r} is unknown (choose from {', '.join(ROUTINGS)})")

    @property
    def decoder_batch(self) -> int:
        """Rows the decoder runs on per step: every beam of every sentence."""
        return self.batch * self.beam

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def protocol_id(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyProtocol":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
