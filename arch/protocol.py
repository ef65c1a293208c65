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

ROUTINGS = ("seeded-random", "checkpoint")


@dataclass(frozen=True)
class LatencyProtocol:
    batch: int = 1
    src_len: int = 30
    decoder_steps: int = 30
    beam: int = 5
    # How MoE layers are routed while timing: the router of build_model(arch, model_seed) on
    # random source tokens ("seeded-random"), or a trained supernet's routers ("checkpoint").
    routing: str = "seeded-random"
    model_seed: int = 0
    input_seed: int = 0

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
        key = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def arch_seed(self, arch_id: str) -> int:
        """Seed for one arch's random inputs: the same arch always gets the same inputs."""
        return int(hashlib.sha256(f"{self.input_seed}:{arch_id}".encode()).hexdigest()[:8], 16)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatencyProtocol":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
