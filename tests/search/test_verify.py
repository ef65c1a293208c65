"""Re-measurement beside the prediction: the reference model judges the machine's drift."""

from __future__ import annotations

import random

import numpy as np
import pytest

from moenas.arch import SearchSpace
from moenas.predictor.api import Prediction
from moenas.profiler import runner as prof_runner
from moenas.search.evolution import Candidate
from moenas.search.report import DERIVED, Verification
from moenas.search.verify import comparable_reference, verify


class FakePredictor:
    """Predicts 10 ms for every arch; its data's reference model ran at ``ref_ms``."""

    def __init__(self, ref_ms: float = 8.0, **ref):
        arch = prof_runner.reference_arch(SearchSpace.load("tiny"))
        self.metadata = {
            "space": "tiny",
            "protocol": {},
            "reference": {
                "arch_id": arch.arch_id,
                "median_ms": ref_ms,
                "noise_rel": 0.01,
                "backend": "onnxruntime",
                "device": "cpu",
                "threads_intra": 1,
                **ref,
            },
        }

    def predict(self, archs, confidence=0.9):
        n = len(archs)
        return Prediction(np.full(n, 10.0), np.full(n, 9.0), np.full(n, 11.0), confidence)


@pytest.fixture
def fake_timing(monkeypatch):
    """measure_archs -> every arch 'speed' x 10 ms, the reference arch 'speed' x 8 ms."""
    state = {"speed": 1.0, "calls": []}
    ref_id = prof_runner.reference_arch(SearchSpace.load("tiny")).arch_id

    def measure_archs(archs, **kw):
        state["calls"].append([a.arch_id for a in archs])
        return [
            {
                c: {"median_ms": state["speed"] * (8.0 if a.arch_id == ref_id else 10.0)}
                for c in ("encoder", "decoder", "total")
            }
            for a in archs
        ]

    monkeypatch.setattr(prof_runner, "measure_archs", measure_archs)
    return state


def chosen():
    a = SearchSpace.load("tiny").sample(random.Random(3))
    return [("best", Candidate(a, 4.0, 10.0, [0.0]))]


def test_steady_machine_is_not_flagged(fake_timing):
    (v,) = verify(chosen(), FakePredictor(), 0.9, budget_ms=10.5)
    assert fake_timing["calls"][0][-1] == prof_runner.reference_arch(SearchSpace.load("tiny")).arch_id
    assert v.reference_factor == pytest.approx(1.0)
    assert not v.machine_drifted and v.drift_note() == "" and v.meets_budget


def test_slower_machine_explains_the_miss(fake_timing):
    fake_timing["speed"] = 1.3
    (v,) = verify(chosen(), FakePredictor(), 0.9, budget_ms=10.5)
    assert v.measured_ms == pytest.approx(13.0) and v.meets_budget is False  # the verdict stays the raw one
    assert v.reference_factor == pytest.approx(1.3) and v.machine_drifted
    assert "1.30x slower" in v.drift_note() and "10 ms at the speed" in v.drift_note()


def test_incomparable_reference_is_not_timed(fake_timing):
    pred = FakePredictor(threads_intra=2)  # the data's reference ran with 2 threads, this re-measure with 1
    assert comparable_reference(pred, "onnxruntime", "cpu", 1) is None
    (v,) = verify(chosen(), pred, 0.9, budget_ms=10.5)
    assert len(fake_timing["calls"][0]) == 1 and v.reference_factor is None and not v.machine_drifted


def test_round_trip_drops_derived_keys(fake_timing):
    fake_timing["speed"] = 0.7
    (v,) = verify(chosen(), FakePredictor(), 0.9, budget_ms=10.5)
    d = v.to_dict()
    assert set(DERIVED) <= set(d) and d["machine_drifted"]
    assert Verification.from_dict(d) == v
