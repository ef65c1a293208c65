"""Latency predictors of decoder-only language models through the public API: fit ('auto',
'gbt', 'flops-linear'), predict with intervals, transfer from 10 archs to a second device,
calibrate, save and load, for each target (total, prefill, decode); and a predictor of one
family refuses archs, data and protocols of the other, naming the family.

The data are synthetic (moenas.predictor.synthetic): ~150 lm-tiny archs on device "a", 40 on
device "c" (faster math, slower memory, cheaper operators)."""

import math

import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.arch.family import DECODER_ONLY
from moenas.arch.protocol import LatencyProtocol, LMProtocol
from moenas.data.profiles import write_profiles
from moenas.predictor import metrics as M
from moenas.predictor.api import Predictor, fit_predictor, fitted_on_differences, transfer_predictor
from moenas.predictor.calibration import calibrated
from moenas.predictor.dataset import load_dataset
from moenas.predictor.features import transfer_names
from moenas.predictor.synthetic import make_profiles

TARGETS = ["total", "prefill", "decode"]
REF_MS = 5.0  # the reference model's latency in the synthetic rows


def _with_reference(df, seed: int):
    """The reference model's checks before and after each measurement (1% spread)."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    for c in ("ref_before_ms", "ref_after_ms"):
        df[c] = REF_MS * np.exp(rng.normal(0, 0.01, len(df)))
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm-data")
    out = {}
    for device, n, seed in (("a", 150, 0), ("c", 40, 5)):
        df, meta = make_profiles("lm-tiny", n, device, seed=seed)
        out[device] = (
            write_profiles(d / f"{device}.parquet", _with_reference(df, seed), meta) and d / f"{device}.parquet"
        )
    ed, meta = make_profiles("tiny", 30, "a", seed=0)
    write_profiles(d / "ed.parquet", ed, meta)
    out["ed"] = d / "ed.parquet"
    return out


@pytest.fixture(scope="module")
def gbt(files):
    """A gbt predictor per target, fitted on device "a"."""
    return {
        t: fit_predictor(load_dataset([files["a"]], t), "gbt", folds=3, with_learning_curve=False)[0] for t in TARGETS
    }


def _holdout(ds, model: str):
    """(mean, lower, upper, truth) on the last 30 archs of a predictor fitted on the others."""
    train, test = ds.subset(range(len(ds) - 30)), ds.subset(range(len(ds) - 30, len(ds)))
    pred, rep = fit_predictor(train, model, folds=3, with_learning_curve=False)
    assert rep["cv"]["mape"] > 0 and pred.metadata["protocol"] == LMProtocol().to_dict()
    p = pred.predict(test.archs, confidence=0.9)
    return p, test.y


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model,bar", [("gbt", 8.0), ("flops-linear", 10.0), ("auto", 6.0)])
def test_fit_and_predict_each_target(files, target, model, bar):
    ds = load_dataset([files["a"]], target)
    p, y = _holdout(ds, model)
    assert len(p) == 30 and np.all(p.lower <= p.mean) and np.all(p.mean <= p.upper)
    assert M.mape(y, p.mean) < bar and M.coverage(y, p.lower, p.upper) >= 60


def test_features_of_an_lm_predictor_are_the_familys(gbt):
    names = gbt["total"].model.features_.feature_names_
    assert "flops_prefill" in names and not [n for n in names if "encoder" in n or "decoder" in n]


@pytest.mark.parametrize("target", TARGETS)
def test_transfer_from_10_archs_to_a_second_device(files, gbt, target):
    ds_c = load_dataset([files["c"]], target)
    tp, rep = transfer_predictor(gbt[target], ds_c, n_samples=10)
    rows = rep["holdout"]["rows"]
    assert rep["n_samples"] == 10 and rows["transfer"]["mape"] < 6.0
    assert rows["transfer"]["mape"] < rows["base_uncorrected"]["mape"]
    assert [p.features for p in tp.model.parts_] == [(), transfer_names(DECODER_ONLY)]
    p = tp.predict(ds_c.archs)
    assert np.all(p.lower <= p.mean) and np.all(p.mean <= p.upper)
    assert tp.metadata["transfer"]["n_samples"] == 10 and tp.protocol == LMProtocol()


def test_calibration_rescales_an_lm_predictor(files, gbt):
    pred = gbt["decode"]
    archs = SearchSpace.load("lm-tiny").sample_n(20, seed=7)
    cal = calibrated(pred, {"median_ms": 2 * pred.metadata["reference"]["median_ms"]})
    assert math.isclose(cal.metadata["calibration"]["factor"], 2.0)
    np.testing.assert_allclose(cal.predict(archs).mean, 2 * pred.predict(archs).mean, rtol=1e-12)


def test_an_lm_predictor_saves_and_loads(gbt, tmp_path):
    archs = SearchSpace.load("lm-tiny").sample_n(20, seed=8)
    loaded = Predictor.load(gbt["total"].save(tmp_path / "p"), protocol=LMProtocol(), space="lm-tiny", target="total")
    np.testing.assert_array_equal(loaded.predict(archs).mean, gbt["total"].predict(archs).mean)


def test_a_predictor_refuses_archs_of_the_other_family(files, gbt):
    ed_archs = SearchSpace.load("tiny").sample_n(3, seed=0)
    with pytest.raises(UserError, match="is encoder-decoder, these features .* are for decoder-only archs"):
        gbt["total"].predict(ed_archs)
    ed_pred, _ = fit_predictor(
        load_dataset([files["ed"]], "total"), "gbt", folds=3, with_learning_curve=False, params={"n_estimators": 20}
    )
    lm_archs = SearchSpace.load("lm-tiny").sample_n(3, seed=0)
    with pytest.raises(UserError, match="is decoder-only, these features .* are for encoder-decoder archs"):
        ed_pred.predict(lm_archs)
    with pytest.raises(UserError, match="two model families"):
        gbt["total"].predict(lm_archs + ed_archs)


def test_protocols_and_data_of_the_other_family_are_named(files, gbt):
    lm = gbt["total"]
    with pytest.raises(UserError, match="another latency protocol \\(family decoder-only vs encoder-decoder"):
        lm.check(protocol=LatencyProtocol())
    ed_ds = load_dataset([files["ed"]], "total")
    assert fitted_on_differences(lm.metadata, ed_ds.fitted_on())[0] == "protocol family decoder-only vs encoder-decoder"
    with pytest.raises(UserError, match="different latency protocols \\(family decoder-only vs encoder-decoder\\)"):
        transfer_predictor(lm, ed_ds, n_samples=10)
