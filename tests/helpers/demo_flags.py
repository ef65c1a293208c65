"""`moenas demo` flags for micro-size end-to-end tests (seconds, not minutes): a few archs
profiled with quick timings, a few training steps, a one-iteration search. Quick timings and a
drift threshold nothing trips: the suite's machine may be busy."""

from __future__ import annotations

MICRO_DEMO = {
    "transfer-n": 4,
    "transfer-holdout": 2,
    "profile-seconds": 0.3,
    "drift-threshold": 10,
    "train-steps": 4,
    "train-max-tokens": 512,
    "parents": 2,
    "mutations": 2,
    "crossovers": 2,
    "iterations": 1,
    "dense-iterations": 1,
    "final-k": 1,
    "predictor-model": "flops-linear",
}


def demo_flags(**overrides: object) -> list[str]:
    """MICRO_DEMO with ``overrides`` (python names: ``valid_sentences=12``) as an argv list."""
    settings = {**MICRO_DEMO, **{k.replace("_", "-"): v for k, v in overrides.items()}}
    return [x for k, v in settings.items() for x in (f"--{k}", str(v))]
