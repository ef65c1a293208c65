"""Flags that make a `moenas profile` run in a test take about a second, importable as
``fast_profile``: the smallest encoder-decoder shapes, a stop rule of a few runs, no waiting."""

from __future__ import annotations

ENC_DEC_SHAPES = ["--src-len", "4", "--decoder-steps", "2", "--beam", "2"]
NO_DRIFT = ["--drift-threshold", "100"]  # a busy test machine must not flag rows
QUIET = ["--ref-wait", "0", "--no-progress"]


def fast_rule(max_seconds: str = "0.5") -> list[str]:
    """A stop rule of 6-8 timed runs after one warm-up, at most ``max_seconds`` per arch."""
    return ["--warmup", "1", "--min-runs", "6", "--max-runs", "8", "--max-seconds", max_seconds]
