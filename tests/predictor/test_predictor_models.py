"""One contract every latency model passes (optuna-style: parametrised over the registry)."""

import numpy as np
import pytest
from sklearn.base import clone

from moenas.arch import SearchSpace, UserError
from moenas.arch.family import FAMILIES
from moenas.predictor import metrics as M
from moenas.predictor.models import MODELS, LatencyModel, make_model
from moenas.predictor.synthetic import DEVICES, true_latency

# Small but faithful settings so the whole contract runs in seconds; defaults are benchmarked.
FAST = {
    "hat-mlp": {"hidden_layer_sizes": (64, 64, 64), "max_iter": 150},
    "automoe-mlp": {"hidden_layer_sizes": (64, 64, 64), "steps": 600, "learning_rate_init": 1e-3},
    "gbt": {"n_estimators": 100},
    "rf": {"n_estimators": 50},
    "hybrid": {"n_estimators": 100},
}


def _data(space, n, seed=0, device="a"):
    archs = SearchSpace.load(space).sample_n(n, seed=seed)
    rng = np.random.default_rng(seed)
    y = true_latency(archs, DEVICES[device])["total"] * np.exp(rng.normal(0, 0.015, n))
    return archs, y


def _model(name, space, seed=0):
    est = make_model(name, space=space, folds=3, random_state=seed, params=FAST.get(name))
    if name in ("stack", "auto"):
        est.set_params(candidates=("flops-linear", "hybrid"))
    return est


# the contract's spaces: two of the encoder-decoder family, one of the decoder-only family
CONTRACT_SPACES = ["tiny", "automoe-wmt", "lm-tiny"]


def test_the_contract_covers_every_model_family():
    assert {SearchSpace.load(s).family.name for s in CONTRACT_SPACES} == set(FAMILIES)


@pytest.mark.parametrize("space", CONTRACT_SPACES)
@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name, space):
    archs, y = _data(space, 60)
    est = _model(name, space)
    assert clone(est).get_params() == est.get_params()  # sklearn: params in __init__ only
    assert est.fit(archs, y) is est  # fit returns self
    assert [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]  # fitted attrs end in _
    new, y_new = _data(space, 20, seed=1)
    mean = est.predict(new)
    assert mean.shape == (20,) and np.all(np.isfinite(mean)) and np.all(mean > 0)
    m, lo, hi = est.predict_interval(new, confidence=0.9)
    np.testing.assert_array_equal(m, mean)
    assert np.all(lo <= m) and np.all(m <= hi) and np.all(lo > 0)
    _, lo2, hi2 = est.predict_interval(new, confidence=0.5)
    assert np.all(hi2 - lo2 <= hi - lo)  # a lower confidence is never wider
    assert M.mape(y_new, mean) < 30  # learned something (flops-linear is crude)
    again = _model(name, space).fit(archs, y).predict(new)  # same seed -> same predictions
    np.testing.assert_allclose(again, mean, rtol=1e-12)
    assert est.predict([a.to_json() for a in new[:3]]).shape == (3,)  # JSON strings work too


def test_bad_training_input():
    archs, y = _data("tiny", 20)
    with pytest.raises(UserError, match="at least"):
        LatencyModel("gbt").fit(archs[:3], y[:3])
    with pytest.raises(UserError, match="positive"):
        LatencyModel("gbt").fit(archs, -y)
    with pytest.raises(UserError, match="archs but"):
        LatencyModel("gbt").fit(archs, y[:5])
    with pytest.raises(UserError, match="unknown model"):
        make_model("nope")


def test_interval_coverage_is_near_nominal():
    archs, y = _data("tiny", 300)
    est = make_model("hybrid", space="tiny", params=FAST["hybrid"]).fit(archs[:200], y[:200])
    _, lo, hi = est.predict_interval(archs[200:], 0.9)
    assert 80 <= M.coverage(y[200:], lo, hi) <= 99


def test_auto_is_the_stack_of_its_candidates():
    """auto = the stack: every candidate's out-of-fold score and the blend's, weights on the
    simplex, and the prediction the weighted geometric mean of the refitted candidates."""
    archs, y = _data("tiny", 80)
    est = _model("auto", "tiny").fit(archs, y)
    assert est.chosen_ == "stack" and set(est.cv_scores_) == {"flops-linear", "hybrid", "stack"}
    w = est.core_.weights_
    assert set(w) <= {"flops-linear", "hybrid"} and abs(sum(w.values()) - 1) < 1e-9 and min(w.values()) >= 0.01
    X = est.features_.transform(archs[:10])
    blend = np.exp(sum(wc * np.log(est.core_.fitted_[c].predict(X)) for c, wc in w.items()))
    np.testing.assert_allclose(est.predict(archs[:10]), blend, rtol=1e-12)
    assert est.description_.startswith("stack(") and all(c in est.description_ for c in w)
    # the weights minimise the squared log error of the out-of-fold predictions: no candidate alone beats it
    from moenas.predictor.stacking import oof_predictions

    sq = lambda p: float(np.mean(np.log(y / p) ** 2))  # noqa: E731
    for c in ("flops-linear", "hybrid"):
        single = oof_predictions(est.core_.cores[c], est.features_.transform(archs), y, 3, 0)
        assert sq(est.oof_pred_) <= sq(single) + 1e-9


def test_simplex_weights_recover_a_known_blend():
    from moenas.predictor.stacking import simplex_weights

    rng = np.random.default_rng(0)
    L = rng.normal(size=(200, 3))
    w = simplex_weights(L, L @ np.array([0.2, 0.0, 0.8]))
    np.testing.assert_allclose(w, [0.2, 0.0, 0.8], atol=1e-4)
    w = simplex_weights(L, L @ np.array([1.5, -0.5, 0.0]))  # outside the simplex: projected onto it
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-9
    np.testing.assert_allclose(simplex_weights(L, L[:, 2]), [0, 0, 1], atol=1e-4)


def test_a_stack_round_trips_through_a_predictor_file(tmp_path):
    from moenas.predictor import Predictor
    from moenas.predictor.api import fit_predictor
    from moenas.predictor.dataset import Dataset
    from moenas.predictor.synthetic import PROTOCOL

    archs, y = _data("tiny", 40)
    ds = Dataset(
        archs,
        y,
        [a.arch_id for a in archs],
        "total",
        PROTOCOL,
        "pid",
        "tiny",
        "synthetic-cpu-a",
        "synthetic",
        "fid",
        synthetic=True,
    )
    pred, rep = fit_predictor(
        ds, "auto", folds=3, params={"candidates": ("flops-linear", "gbt")}, with_learning_curve=False
    )
    assert set(rep["cv_by_model_mape"]) == {"flops-linear", "gbt", "stack"}
    pred.save(tmp_path / "p")
    loaded = Predictor.load(tmp_path / "p")
    assert loaded.metadata["chosen"] == "stack" and loaded.metadata["description"].startswith("stack(")
    np.testing.assert_array_equal(loaded.predict(archs).mean, pred.predict(archs).mean)


@pytest.mark.parametrize("name", ["gbt", "rf", "hybrid"])
def test_tree_predictions_do_not_depend_on_chunking(name, monkeypatch):
    """Trees predict TREE_CHUNK rows at a time (for cache locality); the numbers must not change."""
    from moenas.predictor import models

    archs, y = _data("tiny", 40)
    est = _model(name, "tiny").fit(archs, y)
    X = est.features_.transform(SearchSpace.load("tiny").sample_n(50, seed=5))
    whole = est.predict_features(X)
    monkeypatch.setattr(models, "TREE_CHUNK", 7)  # several chunks and a ragged last one
    np.testing.assert_array_equal(est.predict_features(X), whole)
