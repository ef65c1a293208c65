"""Calibrating a whole :class:`Predictor` to another machine from one timing of the reference model.

Every profile row carries the timing of a fixed reference model, and a predictor keeps its
training data's reference latency (:func:`moenas.data.reference.reference_stats`, stored as
``metadata["reference"]``). On another machine `moenas calibrate` times the same reference model
with the profiler's method (:mod:`moenas.profiler.reference_timing`) and :func:`calibrated`
rescales the predictor by factor = reference here / reference in the data. That is a pure
rescale: it assumes every arch slows down or speeds up like the reference. Measured on two
machines of one kind it removes most of the cross-machine error but not all (README, "Latency
predictors"); `moenas fit --base` with ~20 archs measured here corrects what the scale cannot.

This module sits above :mod:`.api` (it builds a Predictor) and never times anything: the
predictor floor may not import the profiler, so the timing is handed in as numbers.
"""

from __future__ import annotations

import math
from typing import Any

from moenas.arch import UserError
from moenas.arch.provenance import now_iso
from moenas.data.reference import beyond_noise, calibration_factor, stored_reference, tolerance

from .api import Predictor
from .calibrate import rescaled_model
from .machine import holds_on

# How far an arch's slow-down from one machine to another strays from the reference model's, as a
# standard deviation of log(arch ratio / reference ratio): the reference (one arch) splits its time
# between encoder and decoder unlike most archs, and the two scale differently across machines
# (encoder 1.12x, decoder 1.50x between the shipped tiny set's machine and an AMD EPYC VM).
# Measured with benchmarks/bench_calibrate.py on the 60 archs the demo profiled on that VM
# (2026-12-04, three seeds): after the rescale the archs ran 3.5% slower than predicted (mean
# log residual 0.0345), rms 0.0544 against the predictor's own 0.0396; sqrt(0.0544^2 - 0.0396^2).
REFERENCE_REPRESENTATIVENESS_LOG_SD = 0.037
# A 95% interval's half-width in standard deviations (what a timing's ci_rel spans).
Z95 = 1.96


def factor_log_sd(noise_rel: float | None, ci_rel: float | None) -> float:
    """The calibration factor's uncertainty as a standard deviation of log(factor): how far archs
    stray from the reference's slow-down (:data:`REFERENCE_REPRESENTATIVENESS_LOG_SD`), how far
    one reference timing here may sit from this machine's usual speed (taken to be the data's
    spread of one check, ``noise_rel``), and the timing's own precision (``ci_rel``, a 95%
    half-width), added as independent errors."""
    parts = (REFERENCE_REPRESENTATIVENESS_LOG_SD, float(noise_rel or 0.0), float(ci_rel or 0.0) / Z95)
    return float(math.sqrt(sum(p * p for p in parts)))


# Metadata a saved predictor gets anew from `save`: not carried over to the calibrated copy.
SAVE_FIELDS = ("created", "model_sha256", "versions", "format", "format_version", "model_file")
# The fields of the timing here that say how the reference was timed (kept in ``reference``).
TIMING_FIELDS = ("arch_id", "threads_intra", "threads_inter", "stop_rule")


def calibrated(
    pred: Predictor,
    here: dict[str, Any],
    fingerprint: dict[str, Any] | None = None,
    source: str | None = None,
    when: str | None = None,
) -> Predictor:
    """A new Predictor = ``pred`` rescaled to the machine where ``here`` was timed.

    ``here``: the reference timing on this machine, at least ``median_ms`` (also recorded:
    ``ci_rel``, ``n_runs``, ``arch_id``, ``threads_intra``, ``stop_rule``, ``timed_s``).
    ``fingerprint``: this machine's (fingerprint_id + fields). The metadata keeps everything of
    ``pred`` and adds ``calibration`` (factor, reference ms here and there, both fingerprints,
    date); ``reference`` becomes the timing here, so calibrating again composes correctly."""
    meta = pred.metadata
    stored = stored_reference(meta)
    if stored is None:
        raise UserError(
            f"{source or 'the predictor'} stores no reference latency (fitted before moenas recorded it, "
            "or on data without reference timings); refit it with `moenas fit --data ...` on its dataset"
        )
    factor = calibration_factor(float(here["median_ms"]), float(stored["median_ms"]))
    log_sd = factor_log_sd(stored.get("noise_rel"), here.get("ci_rel"))
    when = when or now_iso()
    cal = _calibration_record(meta, stored, here, factor, dict(fingerprint or {}), source, when)
    cal["factor_log_sd"] = log_sd
    return Predictor(rescaled_model(pred.model, factor, log_sd), _calibrated_metadata(meta, stored, here, cal, when))


def _calibration_record(
    meta: dict[str, Any],
    stored: dict[str, Any],
    here: dict[str, Any],
    factor: float,
    fp: dict[str, Any],
    source: str | None,
    when: str,
) -> dict[str, Any]:
    """``metadata["calibration"]``: the factor, both reference timings and fingerprints, the
    date, and the calibration before this one (so a chain of calibrations stays readable)."""
    return {
        "factor": factor,
        "reference_ms_here": float(here["median_ms"]),
        "reference_ms_source": float(stored["median_ms"]),
        "noise_rel": stored.get("noise_rel"),
        "tolerance_rel": tolerance(stored.get("noise_rel")),
        "beyond_noise": beyond_noise(factor, stored.get("noise_rel")),
        "fingerprint_id": fp.get("fingerprint_id"),
        "fingerprint": fp,
        "source_fingerprint_id": holds_on(meta),
        "source_predictor": source,
        "source_model_sha256": meta.get("model_sha256"),
        "date": when,
        "here": dict(here),
        "previous": meta.get("calibration"),
        "method": (
            "predictions and intervals x factor; factor = reference model median here / in the data; intervals "
            "widened by the factor's uncertainty factor_log_sd (see predictor/calibration.py: factor_log_sd)"
        ),
    }


def _calibrated_metadata(
    meta: dict[str, Any], stored: dict[str, Any], here: dict[str, Any], cal: dict[str, Any], when: str
) -> dict[str, Any]:
    """``meta`` with the calibration added and ``reference`` replaced by the timing here, so
    that calibrating the result again composes into one factor."""
    new = {k: v for k, v in meta.items() if k not in SAVE_FIELDS}
    new["chosen"] = f"calibrated({meta.get('chosen')})"
    new["description"] = f"calibrated({meta.get('description') or meta.get('chosen')})"
    new["calibration"] = cal
    how = {k: here[k] for k in TIMING_FIELDS if here.get(k) is not None}
    new["reference"] = {
        **stored,
        **how,
        "median_ms": float(here["median_ms"]),
        "source": "moenas calibrate",
        "ci_rel": here.get("ci_rel"),
        "n_runs": here.get("n_runs"),
        "date": when,
    }
    return new
