"""Persistence: round trip, metadata, and refusal of modified / untrusted / foreign predictors."""

import copy
import json
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from moenas.arch import SearchSpace, UserError
from moenas.predictor import Predictor, fit_predictor, persist
from moenas.predictor.dataset import Dataset
from moenas.predictor.synthetic import DEVICES, PROTOCOL, true_latency


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    archs = SearchSpace.load("tiny").sample_n(60, seed=0)
    y = true_latency(archs, DEVICES["a"])["total"]
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
        noise_floor=1.5,
        sha256="abc",
        paths=["x.parquet"],
        synthetic=True,
    )
    pred, _ = fit_predictor(ds, "gbt", folds=3, params={"n_estimators": 50}, with_learning_curve=False)
    d = tmp_path_factory.mktemp("pred") / "gbt"
    pred.save(d)
    return d, pred, archs


def test_round_trip(saved):
    d, pred, archs = saved
    loaded = Predictor.load(d, protocol=PROTOCOL, space="tiny", target="total")
    a, b = pred.predict(archs, 0.8), loaded.predict(archs, 0.8)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.upper, b.upper)
    m = loaded.metadata
    for key in (
        "model",
        "target",
        "space",
        "protocol",
        "device",
        "fingerprint_id",
        "features",
        "versions",
        "metrics",
        "model_sha256",
        "dataset",
    ):
        assert key in m, key
    assert m["dataset"]["sha256"] == "abc" and "scikit-learn" in m["versions"] and m["features"]["names"]
    with pytest.raises(UserError, match="exists"):
        pred.save(d)  # never overwrite without asking


def test_a_model_file_with_the_protocol_as_a_dict_still_loads(saved, tmp_path):
    """Predictors saved before the estimators held a LatencyProtocol stored its fields as dicts."""
    _, pred, archs = saved
    old = copy.deepcopy(pred.model)
    old.protocol = old.features_.protocol = PROTOCOL.to_dict()  # the dataset's dict
    old.features_.protocol_ = {"batch": 1, "src_len": 30, "decoder_steps": 30, "beam": 5}  # the 4 keys it used
    d = persist.save(old, pred.metadata, tmp_path / "old")
    loaded = Predictor.load(d, protocol=PROTOCOL)
    m = loaded.model
    assert m.protocol == m.features_.protocol == m.features_.protocol_ == PROTOCOL
    np.testing.assert_array_equal(loaded.predict(archs).mean, pred.predict(archs).mean)


def test_mismatches_are_refused(saved):
    d, _, _ = saved
    with pytest.raises(UserError, match="protocol"):
        Predictor.load(d, protocol=replace(PROTOCOL, beam=4))
    with pytest.raises(UserError, match="space"):
        Predictor.load(d, space="automoe-wmt")
    with pytest.raises(UserError, match="latency"):
        Predictor.load(d, target="encoder")
    with pytest.raises(UserError, match="no such predictor"):
        Predictor.load(d.parent / "missing")


def _copy(src, dst):
    dst.mkdir()
    for f in (persist.MODEL_FILE, persist.META_FILE):
        (dst / f).write_bytes((src / f).read_bytes())
    return dst


def test_modified_model_file_is_refused(saved, tmp_path):
    d = _copy(saved[0], tmp_path / "p")
    raw = bytearray((d / persist.MODEL_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / persist.MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(UserError, match="modified"):
        Predictor.load(d)


def test_untrusted_type_is_refused_not_executed(saved, tmp_path):
    d = _copy(saved[0], tmp_path / "p")
    # a file whose hash matches its metadata but which names os.system: must never be constructed
    evil = FunctionTransformer(func=os.system, kw_args={"command": "touch PWNED"})
    sio.dump(evil, d / persist.MODEL_FILE)
    meta = json.loads((d / persist.META_FILE).read_text())
    meta["model_sha256"] = persist._sha256(d / persist.MODEL_FILE)
    (d / persist.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="untrusted"):
        Predictor.load(d)
    assert not (tmp_path / "PWNED").exists()


def test_foreign_or_newer_metadata_is_refused(saved, tmp_path):
    d = _copy(saved[0], tmp_path / "p")
    meta = json.loads((d / persist.META_FILE).read_text())
    (d / persist.META_FILE).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(UserError, match="format version 99"):
        Predictor.load(d)
    (d / persist.META_FILE).write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        Predictor.load(d)


def test_other_sklearn_version_warns(saved, tmp_path):
    d = _copy(saved[0], tmp_path / "p")
    meta = json.loads((d / persist.META_FILE).read_text())
    meta["versions"]["scikit-learn"] = "0.1.0"
    (d / persist.META_FILE).write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Predictor.load(d)
    assert any("scikit-learn 0.1.0" in str(x.message) for x in w)


def _as_saved_before_feature_names(obj):
    """Strip, in place, what the cores gained when they took feature names as a parameter
    (``feature_names``, ``base_columns``, ``n_features_in_``, ``n_iter_``): their older state."""
    from sklearn.base import BaseEstimator

    from moenas.predictor.models import ColumnModel
    from moenas.predictor.stacking import StackedModel

    if isinstance(obj, dict):
        for v in obj.values():
            _as_saved_before_feature_names(v)
    elif isinstance(obj, BaseEstimator):
        if isinstance(obj, (ColumnModel, StackedModel)):
            for k in ("feature_names", "base_columns", "n_features_in_", "n_iter_"):
                obj.__dict__.pop(k, None)
        for v in list(vars(obj).values()):
            _as_saved_before_feature_names(v)


def test_a_model_file_from_before_feature_names_loads_predicts_and_clones(tmp_path):
    """Older files hold cores without the feature_names / base_columns parameters: they load,
    predict the same numbers and clone, the missing parameters at their defaults."""
    from sklearn.base import clone

    from moenas.predictor.models import ROOFLINE_COLUMNS

    archs = SearchSpace.load("tiny").sample_n(40, seed=0)
    y = true_latency(archs, DEVICES["a"])["total"]
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
    pred, _ = fit_predictor(
        ds, "stack", folds=3, params={"candidates": ("flops-linear", "hybrid")}, with_learning_curve=False
    )
    old = copy.deepcopy(pred.model)
    _as_saved_before_feature_names(old)
    assert "feature_names" not in vars(old.core_.cores["hybrid"])
    loaded = Predictor.load(persist.save(old, pred.metadata, tmp_path / "old"))
    np.testing.assert_array_equal(loaded.predict(archs).mean, pred.predict(archs).mean)
    hybrid = loaded.model.core_.fitted_["hybrid"]
    assert hybrid.feature_names is None and hybrid.base_columns == ROOFLINE_COLUMNS
    assert clone(loaded.model.core_).get_params(deep=False).keys() == pred.model.core_.get_params(deep=False).keys()
