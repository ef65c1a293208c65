"""Transfer to a new device from 20 measured archs.

There is no second real device here: the "new device" is synthetic (moenas.predictor.synthetic
device "c": faster FLOPs, slower memory, cheaper operators than device "a"), i.e. the latencies
are a different nonlinear function of the same archs."""
import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.predictor import metrics as M
from moenas.predictor.models import TransferModel, make_model
from moenas.predictor.synthetic import DEVICES, true_latency


def test_transfer_from_20_beats_scratch_from_20():
    sp = SearchSpace.load("tiny")
    archs = sp.sample_n(360, seed=0)
    rng = np.random.default_rng(0)
    ya = true_latency(archs, DEVICES["a"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    yc = true_latency(archs, DEVICES["c"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    base = make_model("hybrid", space="tiny", folds=3, params={"n_estimators": 150}).fit(archs[:200], ya[:200])
    few, test = slice(200, 220), slice(260, 360)   # the 20 used on the new device; a disjoint holdout
    tm = TransferModel(base=base).fit(archs[few], yc[few])
    assert tm.n_train_ == 20
    mape_transfer = M.mape(yc[test], tm.predict(archs[test]))
    mape_base = M.mape(yc[test], base.predict(archs[test]))
    scratch = make_model("hybrid", space="tiny", folds=3, params={"n_estimators": 150}).fit(archs[few], yc[few])
    mape_scratch = M.mape(yc[test], scratch.predict(archs[test]))
    assert mape_transfer < 4.0 and mape_transfer < mape_scratch and mape_transfer < mape_base / 3
    m, lo, hi = tm.predict_interval(archs[test], 0.9)
    assert np.all(lo <= m) and np.all(m <= hi) and M.coverage(yc[test], lo, hi) >= 70
    with pytest.raises(UserError, match="at least 3"):
        TransferModel(base=base).fit(archs[:2], yc[:2])


def test_jackknife_plus_intervals_cover_and_old_models_still_predict():
    """Jackknife+ over refits without each transfer arch (strength reselected each time): on a
    synthetic device with 4% measurement noise, 90% intervals from 15 archs cover >= 85% of
    200 held-out archs, averaged over 5 draws; a model saved before the refits were kept
    (no ``jackknife_``) falls back to the split-conformal band."""
    sp = SearchSpace.load("tiny")
    archs = sp.sample_n(420, seed=1)
    rng = np.random.default_rng(1)
    ya = true_latency(archs, DEVICES["a"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    yc = true_latency(archs, DEVICES["c"])["total"] * np.exp(rng.normal(0, 0.04, len(archs)))
    base = make_model("gbt", space="tiny", folds=3, params={"n_estimators": 100}).fit(archs[:200], ya[:200])
    test = slice(220, 420)
    covs = []
    for d in range(5):
        few = rng.choice(np.arange(200, 220), 15, replace=False) if d else np.arange(200, 215)
        tm = TransferModel(base=base).fit([archs[i] for i in few], yc[few])
        assert tm.jackknife_["coef"].shape[0] == 15 and len(tm.abs_log_residuals_) == 15
        m, lo, hi = tm.predict_interval(archs[test], 0.9)
        assert np.all(lo <= m) and np.all(m <= hi)
        covs.append(M.coverage(yc[test], lo, hi))
    assert np.mean(covs) >= 85
    tm.jackknife_ = None  # as a model saved before moenas kept the refits
    m2, lo2, hi2 = tm.predict_interval(archs[test], 0.9)
    assert np.allclose(m2, m) and np.all(lo2 <= m2) and np.all(m2 <= hi2)
