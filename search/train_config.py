"""Every training setting as one frozen-in-checkpoint dataclass, and the learning-rate schedule.

The CLI (`moenas train`), the demo and the benchmarks build a :class:`TrainConfig`; the
checkpoint stores it as a dict, so a resumed run (and :func:`validation_data`) sees the same
settings the run started with. One config serves both model families; the space's family
decides how the corpus is read (translation pairs, or a text corpus cut into ``block_len``
blocks) and what an unset ``label_smoothing`` means (:meth:`TrainConfig.smoothing_for`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from moenas.arch import UserError
from moenas.arch.checks import check_range
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily
from moenas.arch.protocol import LMProtocol

from .names import KINDS, MOS_INITS, MOS_MODES

SAMPLING = ("uniform", "sandwich")
SCHEDULES = ("inverse_sqrt", "cosine")
DEVICES = ("auto", "cpu", "cuda")
_SHARE = (0, 1, False, True)  # [0, 1)
# The label smoothing of a run that sets none, per family: fairseq's 0.1 for translation; none
# for a language model, whose loss is then the next-token NLL that perplexity reports.
LABEL_SMOOTHING: FamilyRegistry[float] = FamilyRegistry(
    "default label smoothing", {ENCODER_DECODER: 0.1, DECODER_ONLY: 0.0}
)


def _at_least(low: float) -> tuple[float, None, bool, bool]:
    return (low, None, False, False)


def _setting(
    default: Any,
    help: str,
    group: str | None = None,
    bounds: tuple[float, float | None, bool, bool] | None = None,
    **cli: Any,
) -> Any:
    """A field with its `moenas train` help, its group there (``optimisation``/``evaluation``;
    None = the main list), the values it may take (``bounds`` = low, high, low excluded, high
    excluded; checked at construction, so `train --lr -1` or `--valid-sentences 0` stops before
    any data is read instead of crashing in AdamW or reporting a validation loss of 0 over no
    sentences) and extra argparse keywords (``cli``: choices, metavar). `moenas train`'s flags
    and defaults are derived from these, so a new setting is written here once."""
    meta = {"help": help, "group": group, "bounds": bounds, "cli": cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every training setting (primitives only; stored in the checkpoint).

    ``arch`` (canonical JSON) switches to standalone training of that one sub-Transformer,
    from scratch or from ``init_from`` (a supernet checkpoint's inherited weights).
    ``max_tokens`` counts rows x longest sequence of a batch per process; ``lr`` is the peak
    reached after ``warmup`` steps; ``eval_every``/``save_every`` 0 = every steps // 5."""

    space: str = _setting("tiny", "search space name or YAML file")
    corpus: str = _setting(
        "default",
        "'default' (the shipped demo corpus), 'gettext[:DIR]' (this machine's German gettext "
        "catalogs) or a directory with train.en/train.de; for a language-model space: "
        "'default' (the shipped English text corpus) or a directory of *.txt files",
    )
    steps: int = _setting(1000, "total optimizer steps (also the target when resuming)", bounds=_at_least(0))
    supernet: str = _setting("slice", "slice: HAT/AutoMoE weight sharing; mos: Mixture-of-Supernets", choices=KINDS)
    sampling: str = _setting(
        "uniform", "uniform: one random arch per step; sandwich: largest + smallest + N random", choices=SAMPLING
    )
    sandwich_random: int = _setting(2, "random archs per sandwich step", metavar="N", bounds=_at_least(0))
    largest_every: int = _setting(
        0,
        "uniform: every N-th step trains the space's largest arch instead of a random one "
        "(0: never; the sandwich rule's largest arch at 1/N of its cost)",
        metavar="N",
        bounds=_at_least(0),
    )
    arch: str | None = _setting(None, "train this one arch (JSON file) as a standalone model instead of a supernet")
    init_from: str | None = _setting(
        None,
        "with --arch: start from the arch's weights inherited from this supernet "
        "checkpoint (or continue a standalone checkpoint of the same arch)",
        metavar="CKPT",
    )
    cache_dir: str | None = _setting(None, "tokenizer cache (default: $MOENAS_CACHE or ~/.cache/moenas)", metavar="DIR")
    max_tokens: int = _setting(2048, "tokens per batch per process", "optimisation", bounds=_at_least(8))
    max_len: int = _setting(64, "truncate sentences to this many subwords", "optimisation", bounds=_at_least(2))
    lr: float = _setting(1e-3, "peak learning rate", "optimisation", bounds=(0, None, True, False))
    warmup: int = _setting(200, "linear warm-up steps", "optimisation", bounds=_at_least(0))
    schedule: str = _setting("inverse_sqrt", "learning-rate decay after the warm-up", "optimisation", choices=SCHEDULES)
    min_lr_ratio: float = _setting(
        0.0, "cosine: final learning rate as a share of --lr", "optimisation", bounds=(0, 1, False, False)
    )
    weight_decay: float = _setting(0.01, "AdamW weight decay", "optimisation", bounds=_at_least(0))
    beta2: float = _setting(0.98, "AdamW beta2", "optimisation", bounds=_SHARE)
    label_smoothing: float | None = _setting(
        None,
        "label smoothing of the cross-entropy (default: 0.1 for translation, 0 for language models)",
        "optimisation",
        bounds=_SHARE,
    )
    block_len: int = _setting(
        LMProtocol.prompt_len,
        "language models: tokens per training and validation block (the latency protocol's prompt length)",
        "optimisation",
        bounds=_at_least(1),
    )
    clip_norm: float = _setting(1.0, "gradient clipping norm, 0 = off", "optimisation", bounds=_at_least(0))
    aux_coef: float = _setting(0.01, "MoE load-balancing loss coefficient", "optimisation", bounds=_at_least(0))
    dropout: float = _setting(0.1, "dropout", "optimisation", bounds=_SHARE)
    seed: int = _setting(
        0, "seed of the weights, the data order and the sampled archs", "optimisation", bounds=_at_least(0)
    )
    eval_every: int = _setting(0, "steps between validations, 0 = steps/5", "evaluation", bounds=_at_least(0))
    save_every: int = _setting(
        0, "steps between checkpoints, 0 = at each validation", "evaluation", bounds=_at_least(0)
    )
    eval_archs: list[str] = _setting(
        ["largest", "smallest"],
        "arch to validate: largest, smallest or a JSON file; repeatable",
        "evaluation",
        metavar="NAME|FILE",
    )
    valid_sentences: int = _setting(
        200, "fixed validation subset size (language models: blocks)", "evaluation", bounds=_at_least(1)
    )
    bleu_sentences: int = _setting(
        100, "sentences for the final BLEU, 0 = none (translation only)", "evaluation", bounds=_at_least(0)
    )
    beam: int = _setting(1, "beam for BLEU decoding, 1 = greedy", "evaluation", bounds=_at_least(1))
    mos_experts: int = _setting(2, "MoS: weight banks per FFN", "optimisation", bounds=_at_least(1))
    mos_mode: str = _setting("layer", "MoS mixing granularity", "optimisation", choices=MOS_MODES)
    mos_hidden: int = _setting(64, "MoS: hidden width of the architecture router", "optimisation", bounds=_at_least(1))
    mos_init: str = _setting(
        "copy",
        "MoS banks start as copies (step 0 = slice supernet) or independently drawn",
        "optimisation",
        choices=MOS_INITS,
    )
    device: str = _setting(
        "auto", "auto: CUDA (bf16 autocast) when present, else CPU fp32", "optimisation", choices=DEVICES
    )
    progress: bool = _setting(True, "show a progress bar")

    def __post_init__(self):
        if self.supernet not in KINDS:
            raise UserError(f"unknown supernet kind {self.supernet!r} (choose from {', '.join(KINDS)})")
        if self.sampling not in SAMPLING:
            raise UserError(f"unknown sampling rule {self.sampling!r} (choose from {', '.join(SAMPLING)})")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        if self.largest_every and self.sampling != "uniform":
            raise UserError(
                f"--largest-every applies to uniform sampling only ({self.sampling} sampling "
                "trains the largest arch every step)"
            )
        for f in fields(self):  # also guards a config read from a checkpoint
            if f.metadata["bounds"] is not None and getattr(self, f.name) is not None:
                check_range(
                    f"--{f.name.replace('_', '-')}",
                    getattr(self, f.name),
                    *f.metadata["bounds"],
                    integer=f.type == "int",
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def standalone(self) -> bool:
        return self.arch is not None

    def smoothing_for(self, family: ModelFamily) -> float:
        """The label smoothing a run of ``family`` trains with: the configured value, or when
        unset the family's default (:data:`LABEL_SMOOTHING`: 0.1 for translation, fairseq's, and
        0 for a language model, its loss then the next-token NLL that perplexity reports)."""
        if self.label_smoothing is not None:
            return self.label_smoothing
        return LABEL_SMOOTHING.for_family(family)


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
