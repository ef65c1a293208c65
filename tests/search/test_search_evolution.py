"""Evolution with synthetic fitness and a synthetic predictor: constraints, seeds, resume, modes."""

import math
from dataclasses import dataclass

import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.arch.cost import param_count, protocol_cost
from moenas.search.constraints import ConstraintSet, FlopsConstraint, LatencyConstraint, ParamsConstraint
from moenas.search.evolution import Evolution, EvolutionConfig, random_search
from moenas.search.fitness_runners import CachedFitness, InProcessRunner
from moenas.search.pareto import fronts, hypervolume, pareto_mask, rank_and_crowding_order

TINY = SearchSpace.load("tiny")


@dataclass
class Pred:
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class FakePredictor:
    """Latency = FLOPs / 1e8 ms with a +-spread interval: a stand-in with a known answer."""

    def __init__(self, spread=0.1):
        self.spread = spread

    def predict(self, archs, confidence=0.9):
        m = np.array([protocol_cost(a).total_flops / 1e8 for a in archs])
        return Pred(m, m * (1 - self.spread), m * (1 + self.spread))


def synthetic_loss(archs):
    """Bigger active models have lower loss: conflicts with latency, like the real thing."""
    return [10.0 - math.log(param_count(a).active) for a in archs]


class Guarded:
    """Fitness that fails the test if ever called with an infeasible arch."""

    def __init__(self, constraints):
        self.constraints = constraints
        self.calls = 0

    def __call__(self, archs):
        assert self.constraints.feasible(archs).all()
        self.calls += len(archs)
        return synthetic_loss(archs)


SMALL = dict(population=20, parents=6, mutations=8, crossovers=6, iterations=4)


def make(budget_ms=3.0, confidence=0.9, seed=0, objectives=("loss",), state=None, fitness=None, **cfg):
    pred = FakePredictor()
    cons = ConstraintSet([LatencyConstraint(pred, budget_ms, confidence)])
    fit = CachedFitness(fitness or Guarded(cons), InProcessRunner(batch_size=7))
    config = EvolutionConfig(seed=seed, objectives=objectives, **{**SMALL, **cfg})
    lat = lambda archs: pred.predict(archs).mean
    return Evolution(TINY, fit, cons, config, latency=lat, state_path=state), cons, pred


def test_no_infeasible_arch_is_evaluated_kept_or_returned():
    evo, cons, pred = make(budget_ms=3.0)
    res = evo.run()
    everything = [c.arch for c in res.evaluated] + [c.arch for c in res.population] + [res.best.arch]
    assert cons.feasible(everything).all()
    assert all(pred.predict([a]).upper[0] <= 3.0 for a in everything)
    assert all(max(c.g) <= 0 for c in res.evaluated)


def test_evolution_improves_and_respects_population_sizes():
    evo, _, _ = make()
    res = evo.run()
    assert res.history[-1]["best_loss"] <= res.history[0]["best_loss"]
    assert all(h["population"] <= SMALL["population"] for h in res.history)
    assert len({c.arch.arch_id for c in res.population}) == len(res.population)


def test_same_seed_same_result_other_seed_other_path():
    a, b, c = make(seed=3)[0].run(), make(seed=3)[0].run(), make(seed=4)[0].run()
    assert [x.arch.arch_id for x in a.evaluated] == [x.arch.arch_id for x in b.evaluated]
    assert a.best.arch == b.best.arch
    assert [x.arch.arch_id for x in a.evaluated] != [x.arch.arch_id for x in c.evaluated]


def test_fitness_is_cached_by_arch_id():
    evo, _, _ = make()
    res = evo.run()
    assert evo.fitness.evaluations == len(res.evaluated) == len(evo.fitness.cache)


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_same_result(tmp_path):
    full = make(state=tmp_path / "full.json")[0].run()
    calls = {"n": 0}

    def flaky(archs):
        calls["n"] += len(archs)
        if calls["n"] > 45:
            raise Interrupt()
        return synthetic_loss(archs)

    state = tmp_path / "s.json"
    with pytest.raises(Interrupt):
        make(state=state, fitness=flaky)[0].run()
    assert state.exists()
    resumed = make(state=state)[0].run(resume=True)
    assert resumed.best.arch == full.best.arch
    assert [c.arch_id for c in (x.arch for x in resumed.evaluated)] == [x.arch.arch_id for x in full.evaluated]
    assert [h["best_loss"] for h in resumed.history] == [h["best_loss"] for h in full.history]


def test_resume_refuses_other_settings_and_garbage(tmp_path):
    state = tmp_path / "s.json"
    make(state=state)[0].run()
    with pytest.raises(UserError, match="other search settings"):
        make(state=state, seed=9)[0].run(resume=True)
    state.write_text("{not json")
    with pytest.raises(UserError, match="not a readable search state"):
        make(state=state)[0].run(resume=True)


def test_chance_constraint_uses_the_upper_bound():
    budget = 3.0
    res_mean = make(budget_ms=budget, confidence=None)[0].run()
    res_upper = make(budget_ms=budget, confidence=0.9)[0].run()
    pred = FakePredictor()
    # with the mean, archs between budget/1.1 and budget are allowed; with the upper bound not
    assert max(pred.predict([c.arch for c in res_upper.evaluated]).mean) <= budget / 1.1 + 1e-9
    assert max(pred.predict([c.arch for c in res_mean.evaluated]).mean) > budget / 1.1


def test_impossible_budget_names_the_smallest_feasible_latency():
    evo, _, pred = make(budget_ms=0.01)
    with pytest.raises(
        UserError, match=r"smallest arch.*predicted latency bound [0-9.]+ ms over the budget of 0.01 ms"
    ):
        evo.run()


def test_an_impossible_flops_or_params_budget_is_said_in_its_own_units():
    for cons, pattern in (
        (FlopsConstraint(max_gflops=1e-6), r"smallest arch.*[0-9.]+ GFLOPs over the budget of 1e-06"),
        (ParamsConstraint(max_params=10), r"smallest arch.*[0-9.e+]+ parameters over the budget of 10"),
    ):
        with pytest.raises(UserError, match=pattern):
            Evolution(TINY, CachedFitness(synthetic_loss), ConstraintSet([cons]), EvolutionConfig(**SMALL)).run()


def test_flops_and_params_constraints():
    cons = ConstraintSet([FlopsConstraint(max_gflops=0.3), ParamsConstraint(max_params=1.5e6)])
    fit = CachedFitness(Guarded(cons))
    res = Evolution(TINY, fit, cons, EvolutionConfig(**SMALL)).run()
    for c in res.evaluated:
        assert protocol_cost(c.arch).total_flops <= 0.3e9 and param_count(c.arch).total <= 1.5e6


def test_multi_objective_returns_a_pareto_front():
    evo, _, _ = make(objectives=("loss", "latency"), budget_ms=4.0)
    res = evo.run()
    front = res.pareto()
    assert len(front) >= 2
    lat = [c.latency for c in front]
    loss = [c.loss for c in front]
    assert lat == sorted(lat) and loss == sorted(loss, reverse=True)  # trade-off: faster = worse
    for c in res.evaluated:  # nothing evaluated dominates a front member
        assert not any(c.loss < f.loss and c.latency < f.latency for f in front)


def test_random_search_spends_the_same_budget():
    cons = ConstraintSet([LatencyConstraint(FakePredictor(), 3.0, 0.9)])
    fit = CachedFitness(Guarded(cons))
    res = random_search(TINY, fit, cons, n_evals=30, seed=1)
    assert fit.evaluations == 30 and len(res.evaluated) == 30


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError):
        EvolutionConfig(objectives=("latency",))
    with pytest.raises(UserError):
        EvolutionConfig(parents=0)
    with pytest.raises(UserError, match="latency predictor"):
        Evolution(
            TINY, CachedFitness(synthetic_loss), ConstraintSet([]), EvolutionConfig(objectives=("loss", "latency"))
        )


# ---- Pareto utilities on known points -----------------------------------------------------------
def test_fronts_crowding_and_hypervolume_on_known_points():
    F = np.array([[1, 5], [2, 3], [3, 1], [2, 4], [4, 4], [1, 5]], dtype=float)
    fr = fronts(F)
    assert sorted(fr[0].tolist()) == [0, 1, 2, 5] and fr[1].tolist() == [3] and fr[2].tolist() == [4]
    assert pareto_mask(F).tolist() == [True, True, True, False, False, True]
    order = rank_and_crowding_order(F[:5])
    assert set(order[:3].tolist()) == {0, 1, 2} and order[3] == 3 and order[4] == 4
    # (1,5),(2,3),(3,1) against (5,6): 4*1 + 3*2 + 2*2 = 14
    assert hypervolume(F[:3], np.array([5.0, 6.0])) == pytest.approx(14.0)
    assert hypervolume(np.array([[6.0, 7.0]]), np.array([5.0, 6.0])) == 0.0


def _factory():
    return synthetic_loss


def test_process_pool_runner_matches_in_process():
    from moenas.search.fitness_runners import ProcessPoolRunner

    archs = TINY.sample_n(9, seed=5)
    runner = ProcessPoolRunner(_factory, workers=2, batch_size=4)
    try:
        pooled, here = runner.evaluate(None, archs), InProcessRunner().evaluate(synthetic_loss, archs)
        assert [v for v, _ in pooled] == [v for v, _ in here]
        assert all(np.isnan(se) for _, se in pooled + here)  # a bare float's error is unknown
    finally:
        runner.close()
