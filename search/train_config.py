"""Every training setting as one frozen-in-checkpoint dataclass, and the learning-rate schedule.

The CLI (`moenas train`), the demo and the benchmarks build a :class:`TrainConfig`; the
checkpoint stores it as a dict, so a resumed run (and :func:`validation_data`) sees the same
settings the run started with."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from moenas.arch import UserError
from moenas.arch.checks import check_range

from .supernet import KINDS

SAMPLING = ("uniform", "sandwich")
SCHEDULES = ("inverse_sqrt", "cosine")
# field -> (low, high, low excluded, high excluded): what a run can be trained with. Checked at
# construction, so `train --lr -1` or `--valid-sentences 0` stops before any data is read
# instead of crashing in AdamW or reporting a validation loss of 0 over no sentences.
_RANGES: dict[str, tuple[float, float | None, bool, bool]] = {
    "steps": (0, None, False, False), "sandwich_random": (0, None, False, False), "max_tokens": (8, None, False, False),
    "max_len": (2, None, False, False), "lr": (0, None, True, False), "warmup": (0, None, False, False),
    "min_lr_ratio": (0, 1, False, False), "weight_decay": (0, None, False, False), "beta2": (0, 1, False, True),
    "label_smoothing": (0, 1, False, True), "clip_norm": (0, None, False, False), "aux_coef": (0, None, False, False),
    "dropout": (0, 1, False, True), "seed": (0, None, False, False), "eval_every": (0, None, False, False),
    "save_every": (0, None, False, False), "valid_sentences": (1, None, False, False),
    "bleu_sentences": (0, None, False, False), "beam": (1, None, False, False), "mos_experts": (1, None, False, False),
    "mos_hidden": (1, None, False, False),
}
_INTS = {"steps", "sandwich_random", "max_tokens", "max_len", "warmup", "seed", "eval_every", "save_every",
         "valid_sentences", "bleu_sentences", "beam", "mos_experts", "mos_hidden"}


@dataclass
class TrainConfig:
    """Every training setting (primitives only; stored in the checkpoint).

    ``arch`` (canonical JSON) switches to standalone training of that one sub-Transformer,
    from scratch or from ``init_from`` (a supernet checkpoint's inherited weights).
    ``max_tokens`` counts rows x longest sequence of a batch per process; ``lr`` is the peak
    reached after ``warmup`` steps; ``eval_every``/``save_every`` 0 = every steps // 5."""

    space: str = "tiny"
    corpus: str = "default"
    steps: int = 1000
    supernet: str = "slice"
    sampling: str = "uniform"
    sandwich_random: int = 2
    arch: str | None = None
    init_from: str | None = None
    cache_dir: str | None = None
    max_tokens: int = 2048
    max_len: int = 64
    lr: float = 1e-3
    warmup: int = 200
    schedule: str = "inverse_sqrt"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    beta2: float = 0.98
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    aux_coef: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    eval_every: int = 0            # 0: every steps // 5
    save_every: int = 0            # 0: at every evaluation
    eval_archs: list[str] = field(default_factory=lambda: ["largest", "smallest"])
    valid_sentences: int = 200
    bleu_sentences: int = 100      # 0: no BLEU
    beam: int = 1
    mos_experts: int = 2
    mos_mode: str = "layer"
    mos_hidden: int = 64
    mos_init: str = "copy"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.supernet not in KINDS:
            raise UserError(f"unknown supernet kind {self.supernet!r} (choose from {', '.join(KINDS)})")
        if self.sampling not in SAMPLING:
            raise UserError(f"unknown sampling rule {self.sampling!r} (choose from {', '.join(SAMPLING)})")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        for name, (low, high, low_open, high_open) in _RANGES.items():  # also guards a config read from a checkpoint
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low, high, low_open, high_open,
                        integer=name in _INTS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def standalone(self) -> bool:
        return self.arch is not None


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up to ``lr`` over
    ``warmup`` steps, then lr*sqrt(warmup/step) or a cosine to lr*min_lr_ratio at ``steps``."""
    s = step + 1
    w = max(cfg.warmup, 0)
    if w and s <= w:
        return cfg.lr * s / w
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(w, 1) / s)
    span = max(cfg.steps - w, 1)
    frac = min(max(s - w, 0) / span, 1.0)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * frac))
