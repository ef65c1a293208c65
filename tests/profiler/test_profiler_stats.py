"""Timing statistics on synthetic samples with known answers."""

import math

import numpy as np
import pytest

from moenas.profiler.stats import StopRule, ci_rel, measure, measure_interleaved, median_ci, median_ci_ranks, summarize


def _coverage(n, lo):
    """P(x_(lo) <= median <= x_(n+1-lo)) = 1 - 2 P(Bin(n, 1/2) <= lo - 1)."""
    return 1 - 2 * sum(math.comb(n, j) for j in range(lo)) / 2**n


@pytest.mark.parametrize(
    "n, expected",
    [
        (5, None),  # too few samples for any 95% interval (coverage of [x1, x5] = 0.9375)
        (6, (1, 6)),  # smallest n with one: coverage 0.969
        (10, (2, 9)),  # textbook table value, coverage 0.979
        (20, (6, 15)),  # coverage 0.959
        (100, (40, 61)),  # coverage 0.965
    ],
)
def test_median_ci_ranks_match_the_binomial_table(n, expected):
    assert median_ci_ranks(n, 0.95) == expected
    if expected:
        lo = expected[0]
        assert _coverage(n, lo) >= 0.95 > _coverage(n, lo + 1)


def test_median_ci_covers_the_true_median_at_the_stated_rate():
    rng = np.random.default_rng(0)
    true_median = math.log(2)  # Exp(1)
    hits = 0
    trials = 2000
    for _ in range(trials):
        lo, hi = median_ci(rng.exponential(size=25))
        hits += lo <= true_median <= hi
    assert hits / trials >= 0.94  # nominal >= 0.957 for n = 25; allow Monte-Carlo error


def test_summarize_known_values():
    x = np.arange(1, 101, dtype=float)  # 1..100
    s = summarize(x, target_rel=0.5)
    assert s.median_ms == 50.5
    assert s.mean_ms == 50.5
    assert s.p10_ms == pytest.approx(np.percentile(x, 10))
    assert s.p90_ms == pytest.approx(np.percentile(x, 90))
    assert s.std_ms == pytest.approx(np.std(x, ddof=1))
    assert (s.ci_lo_ms, s.ci_hi_ms) == (40.0, 61.0)
    assert s.ci_rel == pytest.approx((61 - 50.5) / 50.5)
    assert s.n_runs == 100 and s.precision_reached
    assert not summarize(x, target_rel=0.01).precision_reached


def test_ci_rel_is_infinite_below_six_samples_and_zero_for_constant_samples():
    assert ci_rel([1.0] * 5) == math.inf
    assert ci_rel([2.0] * 6) == 0.0


class FakeStep:
    """Returns pre-set seconds per call; counts calls."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self):
        v = self.values[self.calls % len(self.values)]
        self.calls += 1
        return {"encoder": v * 0.1, "decoder": v * 0.9, "total": v}


def test_measure_stops_at_min_runs_when_already_precise():
    step = FakeStep([0.010])
    m = measure(step, StopRule(warmup=3, min_runs=10, max_runs=100, max_seconds=1e9))
    assert step.calls == 13 and m.n_warmup == 3
    assert all(s.n_runs == 10 and s.precision_reached for s in m.summaries.values())
    assert m.summaries["total"].median_ms == pytest.approx(10.0)


def test_measure_runs_to_the_cap_when_too_noisy():
    step = FakeStep([0.010, 0.020])  # median CI spans both values forever
    m = measure(step, StopRule(warmup=0, min_runs=10, max_runs=40, max_seconds=1e9))
    assert m.summaries["total"].n_runs == 40
    assert not m.summaries["total"].precision_reached


def test_measure_respects_the_time_cap():
    t = [0.0]

    def clock():
        t[0] += 1.0  # every clock read is one "second" later
        return t[0]

    step = FakeStep([0.010, 0.020])
    m = measure(step, StopRule(warmup=0, min_runs=10, max_runs=1000, max_seconds=5), clock=clock)
    assert m.summaries["total"].n_runs == 10  # min_runs still honoured


def test_measure_needs_every_component_precise():
    calls = [0]

    def step():
        calls[0] += 1
        noisy = 0.001 if calls[0] % 2 else 0.002
        return {"encoder": noisy, "decoder": 0.1, "total": 0.1 + noisy}

    m = measure(step, StopRule(warmup=0, min_runs=6, max_runs=30, max_seconds=1e9))
    assert m.summaries["decoder"].precision_reached
    assert not m.summaries["encoder"].precision_reached
    assert m.summaries["total"].n_runs == 30


def tagged(log, name, values):
    """A FakeStep that appends ``name`` to ``log`` at each call (the visiting order)."""
    inner = FakeStep(values)

    def step():
        log.append(name)
        return inner()

    return step


def test_interleaved_visits_rotate_and_each_workload_stops_on_its_own():
    log = []

    precise, noisy = tagged(log, "a", [0.010]), tagged(log, "b", [0.010, 0.020])
    rule = StopRule(warmup=2, min_runs=6, max_runs=12, max_seconds=1e9)
    ma, mb = measure_interleaved([precise, noisy], rule, visit_runs=3, visit_warmup=1)
    # first visits: 2 warm-ups + 3 timed each; later visits: 1 warm-up + 3 timed
    assert log[:10] == ["a"] * 5 + ["b"] * 5
    assert log[10:18] == ["a"] * 4 + ["b"] * 4
    # a is precise after its 2nd visit (6 runs) and leaves; b runs to max_runs (4 visits)
    assert ma.summaries["total"].n_runs == 6 and ma.summaries["total"].precision_reached
    assert mb.summaries["total"].n_runs == 12 and not mb.summaries["total"].precision_reached
    assert (ma.n_warmup, mb.n_warmup) == (3, 5)
    assert log.count("b") == 12 + 5


def test_interleaved_time_cap_stops_noisy_workloads():
    t = [0.0]

    def clock():
        t[0] += 1.0
        return t[0]

    steps = [FakeStep([0.010, 0.020]), FakeStep([0.010, 0.020])]
    ms = measure_interleaved(
        steps, StopRule(warmup=0, min_runs=4, max_runs=1000, max_seconds=6), visit_runs=2, visit_warmup=0, clock=clock
    )
    for m in ms:
        assert 4 <= m.summaries["total"].n_runs <= 8 and not m.summaries["total"].precision_reached


def test_a_single_workload_is_timed_exactly_as_measure_does():
    rule = StopRule(warmup=3, min_runs=10, max_runs=100, max_seconds=1e9)
    a, b = FakeStep([0.010]), FakeStep([0.010])
    m1 = measure(a, rule)
    (m2,) = measure_interleaved([b], rule, visit_runs=5, visit_warmup=2)
    assert a.calls == b.calls == 13 and m1.n_warmup == m2.n_warmup == 3
    with pytest.raises(ValueError):
        measure_interleaved([a], rule, visit_runs=0)


def test_interleaved_time_cap_counts_each_workloads_own_runs():
    t = [0.0]

    def clock():
        t[0] += 1.0  # every clock read is one "second": a visit of 2 timed runs spans 3
        return t[0]

    steps = [FakeStep([0.010, 0.020]), FakeStep([0.010, 0.020])]
    ms = measure_interleaved(
        steps, StopRule(warmup=0, min_runs=4, max_runs=1000, max_seconds=12), visit_runs=2, visit_warmup=0, clock=clock
    )
    # each stops after 4 visits (12 s of its own timed runs), although the shared clock ran ~40 s
    assert [m.summaries["total"].n_runs for m in ms] == [8, 8]
    assert [m.timed_s for m in ms] == [12.0, 12.0] and t[0] > 24


def test_a_follower_spans_the_group_at_one_run_per_visit():
    """The follower (the reference model) gets visit_runs runs per visit until it has min_runs,
    one per visit after that, ignores its own caps, and leaves with the group."""
    log = []

    rule = StopRule(warmup=0, min_runs=4, max_runs=16, max_seconds=1e9)
    ref, a = tagged(log, "r", [0.010, 0.030]), tagged(log, "a", [0.010, 0.020])  # a never precise: 16 runs
    mr, ma = measure_interleaved([ref, a], rule, visit_runs=2, visit_warmup=0, follower=0)
    assert ma.summaries["total"].n_runs == 16  # 8 visits of 2
    # r: 2 + 2 (its minimum) then 1 per visit over the remaining 6 visits
    assert mr.summaries["total"].n_runs == 10 and log[:8] == ["r", "r", "a", "a", "r", "r", "a", "a"]
    assert log[8:11] == ["r", "a", "a"]
    log.clear()  # a quick group (precise as soon as its interval exists): the follower leaves with it
    mr2, mq = measure_interleaved(
        [tagged(log, "r", [0.010, 0.030]), tagged(log, "q", [0.010])], rule, visit_runs=1, visit_warmup=0, follower=0
    )
    assert mq.summaries["total"].precision_reached and mr2.summaries["total"].n_runs == mq.summaries["total"].n_runs
    assert log == ["r", "q"] * mq.summaries["total"].n_runs
    with pytest.raises(ValueError, match="follower"):
        measure_interleaved([ref], rule, follower=3)
