"""Which machine a predictor's predictions hold on, and the warning when it is not this one.

A predictor holds on the machine it was calibrated on, else the one its data was measured on.
`moenas predict` and `moenas search` compare that with this machine's fingerprint and print
:func:`elsewhere_message`; the fingerprint is taken by the caller (the predictor floor never
imports the profiler), so this module reads metadata and nothing else.
"""

from __future__ import annotations

from typing import Any

# Fingerprint fields named in the warning when they differ (the ones a user can recognise).
NAMED_FIELDS = ("cpu_model", "cpu_cores", "gpu_name", "os", "onnxruntime_version", "torch_version")


def holds_on(meta: dict[str, Any]) -> str | None:
    """Fingerprint id of the machine a predictor's predictions are for: the one it was
    calibrated on, else its data's; None = unknown."""
    cal = meta.get("calibration")
    if isinstance(cal, dict) and cal.get("fingerprint_id"):
        return str(cal["fingerprint_id"])
    fid = meta.get("fingerprint_id")
    return str(fid) if fid else None


def holds_on_fingerprint(meta: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint fields behind :func:`holds_on` (may be empty)."""
    cal = meta.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("fingerprint"), dict):
        return cal["fingerprint"]
    return meta.get("fingerprint") if isinstance(meta.get("fingerprint"), dict) else {}


def elsewhere_message(meta: dict[str, Any], where: str, here_fp: dict[str, Any]) -> str | None:
    """One line when the predictor holds on another machine than ``here_fp``; None when it is
    this one, or nothing is known (a predictor without fingerprint, or of synthetic data)."""
    fid = holds_on(meta)
    if fid is None or meta.get("backend") == "synthetic" or (meta.get("dataset") or {}).get("synthetic"):
        return None
    if fid == here_fp.get("fingerprint_id"):
        return None
    there = holds_on_fingerprint(meta)
    diff = [k for k in NAMED_FIELDS if there and there.get(k) != here_fp.get(k)]
    what = f" (differs in {', '.join(diff)})" if diff else ""
    return (
        f"warning: {where} holds on machine {fid}, this is {here_fp.get('fingerprint_id')}{what}; latencies may "
        f"be off by a constant factor: `moenas calibrate --predictor {where} --out {where}-here` rescales it "
        f"(or `moenas fit --base {where}` from ~20 archs measured here)"
    )
