"""Transfer to a new device from 20 measured archs.

There is no second real device here: the "new device" is synthetic (moenas.predictor.synthetic
device "c": faster FLOPs, slower memory, cheaper operators than device "a"), i.e. the latencies
are a different nonlinear function of the same archs."""

import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.predictor import metrics as M
from moenas.predictor.models import make_model
from moenas.predictor.synthetic import DEVICES, true_latency
from moenas.predictor.transfer import TransferModel


def test_transfer_from_20_beats_scratch_from_20():
    sp = SearchSpace.load("tiny")
    archs = sp.sample_n(360, seed=0)
    rng = np.random.default_rng(0)
    ya = true_latency(archs, DEVICES["a"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    yc = true_latency(archs, DEVICES["c"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    base = make_model("hybrid", space="tiny", folds=3, params={"n_estimators": 150}).fit(archs[:200], ya[:200])
    few, test = slice(200, 220), slice(260, 360)  # the 20 used on the new device; a disjoint holdout
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
    200 held-out archs, averaged over 5 draws."""
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
        assert all(p.jackknife_["coef"].shape[0] == 15 for p in tm.parts_) and len(tm.abs_log_residuals_) == 15
        m, lo, hi = tm.predict_interval(archs[test], 0.9)
        assert np.all(lo <= m) and np.all(m <= hi)
        covs.append(M.coverage(yc[test], lo, hi))
    assert np.mean(covs) >= 85


def _synthetic_transfer(n_few: int, seed: int = 2):
    sp = SearchSpace.load("tiny")
    archs = sp.sample_n(320, seed=seed)
    rng = np.random.default_rng(seed)
    ya = true_latency(archs, DEVICES["a"])["total"] * np.exp(rng.normal(0, 0.015, len(archs)))
    yc = true_latency(archs, DEVICES["c"])["total"] * np.exp(rng.normal(0, 0.03, len(archs)))
    base = make_model("gbt", space="tiny", folds=3, params={"n_estimators": 80}).fit(archs[:200], ya[:200])
    return base, archs[200 : 200 + n_few], yc[200 : 200 + n_few], archs[220:], yc[220:]


def test_blend_weights_follow_the_leave_one_out_errors():
    """The blend's two corrections (scale alone, scale + features) get weights summing to 1,
    the larger to the one with the smaller jackknife error; its mean is their weighted
    geometric mean; features=() or blend=False fit one correction only."""
    base, few, yf, test, yt = _synthetic_transfer(12)
    tm = TransferModel(base=base).fit(few, yf)
    assert [p.features for p in tm.parts_] == [(), tuple(tm.features)]
    mse = [float(np.mean(p.jackknife_["signed"] ** 2)) for p in tm.parts_]
    assert np.isclose(tm.weights_.sum(), 1.0) and (tm.weights_[0] > tm.weights_[1]) == (mse[0] < mse[1])
    alone = [TransferModel(base=base, features=f, blend=False).fit(few, yf) for f in ((), tm.features)]
    geo = np.exp(sum(w * np.log(a.predict(test)) for w, a in zip(tm.weights_, alone)))
    assert np.allclose(tm.predict(test), geo, rtol=1e-9)
    assert len(alone[1].parts_) == 1 and len(TransferModel(base=base, features=()).fit(few, yf).parts_) == 1
    d = tm.describe()["blend"]
    assert [b["features"][0] for b in d] == ["scale", tm.features[0]] and np.isclose(
        sum(b["weight"] for b in d), 1, atol=1e-3
    )


def test_a_transfer_model_saved_before_the_blend_still_predicts():
    """A model saved by moenas before predictor/transfer.py holds one full correction in
    ``coef_``, ``z_mean_``, ... and its refits in ``jackknife_`` (or None, older still): it
    predicts as it did (= blend=False today), jackknife+ or split-conformal intervals."""
    base, few, yf, test, _ = _synthetic_transfer(12)
    new = TransferModel(base=base, blend=False).fit(few, yf)
    p = new.parts_[0]
    jk = {k: p.jackknife_[k] for k in ("z_mean", "z_std", "coef", "intercept")}
    jk["residuals"] = np.abs(p.jackknife_["signed"])
    old = TransferModel.__new__(TransferModel)
    old.__dict__.update(
        base=base,
        features=new.features,
        residual=False,
        random_state=0,
        z_mean_=p.z_mean_,
        z_std_=p.z_std_,
        alpha_=p.alpha_,
        coef_=p.coef_,
        intercept_=p.intercept_,
        jackknife_=jk,
        abs_log_residuals_=jk["residuals"],
        residual_model_=None,
        n_train_=12,
        features_=base.features_,
    )
    for a, b in zip(old.predict_interval(test, 0.9), new.predict_interval(test, 0.9)):
        assert np.allclose(a, b)
    assert np.isclose(old.scale_, new.scale_) and old.alpha_ == new.alpha_
    older = TransferModel.__new__(TransferModel)
    older.__dict__.update({**old.__dict__, "jackknife_": None})
    older.__dict__.pop("parts_", None)
    older.__dict__.pop("weights_", None)
    m, lo, hi = older.predict_interval(test, 0.9)
    assert np.allclose(m, new.predict(test)) and np.all(lo <= m) and np.all(m <= hi)
