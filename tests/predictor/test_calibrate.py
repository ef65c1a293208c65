"""Calibration from the reference workload (`moenas calibrate`, the predict warning).

The datasets are synthetic (moenas.predictor.synthetic) with reference timings added: machine
"b" measures the same archs as machine "a" with its own noise, every latency and the reference
model k times slower, so the rescaled predictor of "a" must predict what a predictor fitted on
"b" predicts. The CLI test times the reference model of each family's space (tiny, lm-tiny) for
real, under a small stop rule; nothing asserts a speed."""

import json
import math
import pickle
from statistics import NormalDist

import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.cli import main
from moenas.data.profiles import write_profiles
from moenas.data.reference import beyond_noise, reference_stats, stored_reference
from moenas.predictor import Predictor
from moenas.predictor import metrics as M
from moenas.predictor.api import fit_predictor
from moenas.predictor.calibrate import ScaledModel
from moenas.predictor.calibration import REFERENCE_REPRESENTATIVENESS_LOG_SD, calibrated, factor_log_sd
from moenas.predictor.dataset import load_dataset
from moenas.predictor.machine import holds_on
from moenas.predictor.synthetic import make_profiles

REF_MS = 8.0  # the reference model on machine "a", ms
K = 0.78  # machine "b" runs everything 0.78x as long (a faster second machine, as once measured)
SMALL_RULE = {"warmup": 1, "min_runs": 3, "max_runs": 8, "max_seconds": 2.0, "target_rel": 0.05, "confidence": 0.95}
LATENCY_COLS = ["median_ms", "p10_ms", "p90_ms", "mean_ms", "std_ms", "ci_lo_ms", "ci_hi_ms"]


def _with_reference(df, meta, ref_ms: float, seed: int, fingerprint_id: str | None = None, measured: bool = False):
    """Add the reference checks (1% lognormal spread, one pair per measurement) to synthetic rows.
    ``measured``: label the rows as onnxruntime on this CPU so `calibrate` will time them."""
    df, meta = df.copy(), dict(meta)
    rng = np.random.default_rng(seed)
    mids = df["measurement_id"].unique()
    before = dict(zip(mids, ref_ms * np.exp(rng.normal(0, 0.01, len(mids)))))
    after = dict(zip(mids, ref_ms * np.exp(rng.normal(0, 0.01, len(mids)))))
    df["ref_before_ms"] = df["measurement_id"].map(before).astype(float)
    df["ref_after_ms"] = df["measurement_id"].map(after).astype(float)
    if fingerprint_id:
        df["fingerprint_id"] = fingerprint_id
        meta["fingerprint_id"] = fingerprint_id
        meta["fingerprint"] = {**meta.get("fingerprint", {}), "fingerprint_id": fingerprint_id}
    if measured:  # pretend: the latencies stay synthetic, the reference is timed for real
        df["backend"], df["device"] = "onnxruntime", "cpu"
        meta.pop("synthetic", None)
        meta["measurement"] = {"reference_stop_rule": SMALL_RULE}
    return df, meta


def _scaled(df, k: float):
    df = df.copy()
    for c in LATENCY_COLS + ["ref_before_ms", "ref_after_ms"]:
        df[c] = df[c] * k
    return df


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibrate")
    archs = SearchSpace.load("tiny").sample_n(120, seed=3)
    a, meta_a = _with_reference(*make_profiles("tiny", 0, "a", seed=0, archs=archs), REF_MS, 1, "machine-a")
    b0, meta_b = _with_reference(*make_profiles("tiny", 0, "a", seed=1, archs=archs), REF_MS, 2, "machine-b")
    write_profiles(d / "a.parquet", a, meta_a)
    write_profiles(d / "b.parquet", _scaled(b0, K), meta_b)
    return {"a": load_dataset([d / "a.parquet"]), "b": load_dataset([d / "b.parquet"]), "dir": d, "archs": archs}


def _fit(ds):
    return fit_predictor(ds, "gbt", folds=3, with_learning_curve=False, params={"n_estimators": 80})[0]


@pytest.fixture(scope="module")
def fitted(machines):
    return {"a": _fit(machines["a"]), "b": _fit(machines["b"])}


def test_rescale_recovers_a_known_factor(fitted):
    pa, pb = fitted["a"], fitted["b"]
    ref_b = stored_reference(pb.metadata)["median_ms"]
    cal = calibrated(pa, {"median_ms": ref_b}, {"fingerprint_id": "machine-b"})
    f = cal.metadata["calibration"]["factor"]
    assert f == pytest.approx(K, rel=0.01)
    test = SearchSpace.load("tiny").sample_n(60, seed=11)
    m, m_a, m_b = cal.predict(test), pa.predict(test), pb.predict(test)
    np.testing.assert_allclose(m.mean, m_a.mean * f, rtol=1e-12)  # the mean: a pure rescale
    # the interval: widened by the factor's uncertainty, in log space, in quadrature
    sd = cal.metadata["calibration"]["factor_log_sd"]
    assert sd == pytest.approx(
        math.hypot(REFERENCE_REPRESENTATIVENESS_LOG_SD, stored_reference(pa.metadata)["noise_rel"])
    )
    q_a = np.log(m_a.upper / m_a.mean)
    np.testing.assert_allclose(np.log(m.upper / m.mean), np.hypot(q_a, NormalDist().inv_cdf(0.95) * sd), rtol=1e-9)
    np.testing.assert_allclose(np.log(m.mean / m.lower), np.log(m.upper / m.mean), rtol=1e-9)  # symmetric in log
    assert M.mape(m_b.mean, m.mean) < 3.0  # what machine b's own predictor says
    assert M.mape(m_b.mean, m_a.mean) > 20.0  # ... and what the uncorrected one missed
    assert beyond_noise(f, stored_reference(pa.metadata)["noise_rel"])
    assert not beyond_noise(1.01, 0.004) and holds_on(cal.metadata) == "machine-b"


def test_factor_uncertainties_add_and_compose_in_quadrature(fitted):
    assert factor_log_sd(None, None) == REFERENCE_REPRESENTATIVENESS_LOG_SD
    assert factor_log_sd(0.03, 0.0392) == pytest.approx(
        math.sqrt(REFERENCE_REPRESENTATIVENESS_LOG_SD**2 + 0.03**2 + 0.02**2)
    )
    pa = fitted["a"]
    ref = stored_reference(pa.metadata)["median_ms"]
    once = calibrated(pa, {"median_ms": ref * 1.2})
    twice = calibrated(once, {"median_ms": ref * 1.2 * 0.9})
    sd1 = once.metadata["calibration"]["factor_log_sd"]
    sd2 = twice.metadata["calibration"]["factor_log_sd"]
    assert twice.model.factor == pytest.approx(1.2 * 0.9) and twice.model.log_sd == pytest.approx(math.hypot(sd1, sd2))


def test_a_scaled_model_saved_before_the_widening_loads_unwidened(fitted):
    """A ScaledModel pickled without ``log_sd`` (files calibrated before it existed): the same
    intervals as then, a pure rescale."""
    pa = fitted["a"]
    old = ScaledModel(pa.model, 1.5).fit()
    del old.log_sd
    back = pickle.loads(pickle.dumps(old))
    archs = SearchSpace.load("tiny").sample_n(5, seed=2)
    mean, lo, hi = back.predict_interval(archs, 0.9)
    _, lo_a, hi_a = pa.model.predict_interval(archs, 0.9)
    assert back.log_sd == 0.0
    np.testing.assert_allclose(lo, lo_a * 1.5, rtol=1e-12)
    np.testing.assert_allclose(hi, hi_a * 1.5, rtol=1e-12)


def test_reference_metadata_round_trip(machines, fitted, tmp_path):
    pa = fitted["a"]
    ref = pa.metadata["reference"]
    assert ref["median_ms"] == pytest.approx(REF_MS, rel=0.01) and 0 < ref["noise_rel"] < 0.03
    assert ref["n_rows"] == 120 and ref["threads_intra"] == 1
    back = Predictor.load(pa.save(tmp_path / "a"))
    assert {k: back.metadata["reference"][k] for k in ("median_ms", "noise_rel", "n_checks")} == {
        k: ref[k] for k in ("median_ms", "noise_rel", "n_checks")
    }
    cal = calibrated(
        back,
        {"median_ms": REF_MS * 2, "ci_rel": 0.01, "n_runs": 20},
        {"fingerprint_id": "here"},
        source=str(tmp_path / "a"),
        when="2026-12-01T00:00:00+00:00",
    )
    loaded = Predictor.load(cal.save(tmp_path / "a2"))
    assert isinstance(loaded.model, ScaledModel)
    c = loaded.metadata["calibration"]
    assert c["factor"] == pytest.approx(2.0, rel=0.01) and c["date"].startswith("2026-12-01")
    assert c["source_fingerprint_id"] == "machine-a" and c["fingerprint_id"] == "here"
    assert loaded.metadata["reference"]["median_ms"] == REF_MS * 2
    archs = machines["archs"][:10]
    np.testing.assert_allclose(loaded.predict(archs).mean, back.predict(archs).mean * c["factor"], rtol=1e-12)
    again = calibrated(loaded, {"median_ms": REF_MS}, {"fingerprint_id": "third"})  # composes, no nesting
    assert not isinstance(again.model.base, ScaledModel)
    np.testing.assert_allclose(
        again.predict(archs).mean, back.predict(archs).mean * REF_MS / ref["median_ms"], rtol=1e-9
    )


def test_old_predictor_without_reference_is_refused(fitted, tmp_path, capsys):
    pa = fitted["a"]
    d = pa.save(tmp_path / "old")
    meta = json.loads((d / "predictor.json").read_text())
    del meta["reference"]  # as written before references were stored
    (d / "predictor.json").write_text(json.dumps(meta))
    old = Predictor.load(d)  # still loads (missing key = unknown)
    assert stored_reference(old.metadata) is None
    with pytest.raises(UserError, match="refit"):
        calibrated(old, {"median_ms": 5.0})
    capsys.readouterr()
    assert main(["calibrate", "--predictor", str(d), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "moenas fit" in err and not (tmp_path / "new").exists()
    plain = make_profiles("tiny", 10, "a")[0]  # synthetic rows carry no reference timing
    assert reference_stats(plain[plain["component"] == "total"]) is None


@pytest.fixture(scope="module", params=["tiny"])
def here_predictor(machines, request):
    """A predictor of data labelled as measured on this very machine (latencies synthetic), of
    the space ``request.param`` (tiny unless a test asks for another family's, lm-tiny)."""
    from moenas.profiler.fingerprint import fingerprint

    d, space = machines["dir"], request.param
    fid = fingerprint("cpu")["fingerprint_id"]
    df, meta = _with_reference(*make_profiles(space, 60, "a", seed=4), REF_MS, 5, fid, measured=True)
    meta["fingerprint"] = fingerprint("cpu")
    write_profiles(d / f"here-{space}.parquet", df, meta)
    out = d / f"p_here-{space}"
    assert (
        main(
            [
                "fit",
                "--data",
                str(d / f"here-{space}.parquet"),
                "--model",
                "flops-linear",  # a rescale is a rescale of any model; gbt's fit and save took seconds
                "--folds",
                "3",
                "--no-learning-curve",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.mark.parametrize("here_predictor", ["tiny", "lm-tiny"], indirect=True)  # a space of each model family
def test_calibrate_cli_times_the_reference(here_predictor, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "p2"
    assert main(["calibrate", "--predictor", str(here_predictor), "--out", str(out), "--checks", "1", "--json"]) == 0
    io = capsys.readouterr()
    rep = json.loads(io.out)  # progress went to stderr, stdout is the JSON
    assert "timing the reference model" in io.err
    assert rep["factor"] == pytest.approx(rep["reference_ms_here"] / rep["reference_ms_source"])
    assert rep["reference_ms_source"] == pytest.approx(REF_MS, rel=0.01) and rep["timing"]["n_runs"] >= 3
    p, p2 = Predictor.load(here_predictor), Predictor.load(out)
    assert p2.metadata["calibration"]["factor"] == rep["factor"] and p2.metadata["chosen"].startswith("calibrated(")
    archs = SearchSpace.load(p.metadata["space"]).sample_n(5, seed=1)
    np.testing.assert_allclose(p2.predict(archs).mean, p.predict(archs).mean * rep["factor"], rtol=1e-12)
    sd = p2.metadata["calibration"]["factor_log_sd"]  # the timing's own precision counts too
    assert sd > math.hypot(REFERENCE_REPRESENTATIVENESS_LOG_SD, stored_reference(p.metadata)["noise_rel"])
    assert np.all(p2.predict(archs).lower < p.predict(archs).lower * rep["factor"])
    assert main(["calibrate", "--predictor", str(here_predictor), "--out", str(out)]) == 2  # exists
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err


def test_calibrate_refuses_a_space_of_another_family(here_predictor, tmp_path, capsys):
    """The reference model of an encoder-decoder predictor's data is no language model's."""
    capsys.readouterr()
    argv = ["calibrate", "--predictor", str(here_predictor), "--out", str(tmp_path / "x"), "--space", "lm-tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "space 'lm-tiny' is decoder-only but the protocol times encoder-decoder" in err
    )
    assert not (tmp_path / "x").exists()


def test_calibrate_refuses_what_cannot_be_timed(fitted, tmp_path, capsys):
    d = Predictor(fitted["a"].model, dict(fitted["a"].metadata)).save(
        tmp_path / "synthetic"
    )  # synthetic backend: nothing to time
    capsys.readouterr()
    assert main(["calibrate", "--predictor", str(d), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "synthetic" in err


def test_predict_warns_on_another_machine_in_one_line(here_predictor, tmp_path, capsys, monkeypatch):
    import moenas.profiler.fingerprint as F

    archs = tmp_path / "a.jsonl"
    archs.write_text("\n".join(a.to_json() for a in SearchSpace.load("tiny").sample_n(3, seed=2)) + "\n")
    capsys.readouterr()
    assert main(["predict", "--predictor", str(here_predictor), str(archs), "--json"]) == 0
    same = capsys.readouterr()
    assert same.err == ""  # this machine: no warning
    real = F.fingerprint
    monkeypatch.setattr(
        F, "fingerprint", lambda device="cpu": {**real(device), "os": "Linux other", "fingerprint_id": "0123456789ab"}
    )
    assert main(["predict", "--predictor", str(here_predictor), str(archs), "--json"]) == 0
    other = capsys.readouterr()
    assert json.loads(other.out) == json.loads(same.out)  # stdout unchanged and parseable
    lines = other.err.strip().splitlines()
    assert len(lines) == 1 and "moenas calibrate" in lines[0] and "differs in os" in lines[0]


def test_warning_follows_the_machine_a_predictor_holds_on():
    from moenas.predictor.machine import elsewhere_message

    here = {"fingerprint_id": "here", "os": "Linux 2"}
    meta = {
        "fingerprint_id": "there",
        "fingerprint": {"fingerprint_id": "there", "os": "Linux 1"},
        "backend": "onnxruntime",
    }
    assert "differs in os" in elsewhere_message(meta, "P", here)
    assert elsewhere_message({**meta, "calibration": {"fingerprint_id": "here"}}, "P", here) is None  # calibrated here
    assert elsewhere_message({**meta, "backend": "synthetic"}, "P", here) is None  # no machine at all
    assert elsewhere_message({"backend": "onnxruntime"}, "P", here) is None  # unknown: silent


def test_a_transferred_predictor_predicts_its_own_jackknife_intervals(machines, fitted):
    """Predictor.predict gives the model's own interval (a transfer's jackknife+), so what the
    transfer-coverage benchmark measures on TransferModel is what search and the demo get; a
    calibration of it scales that interval and widens it."""
    from moenas.predictor.api import transfer_predictor

    b = machines["b"]
    few = b.subset(list(range(12)))
    tp, _ = transfer_predictor(fitted["a"], few, n_samples=len(few), seed=0, confidence=0.9)
    archs = SearchSpace.load("tiny").sample_n(8, seed=5)
    mean, lo, hi = tp.model.predict_interval(archs, 0.9)
    p = tp.predict(archs, 0.9)
    np.testing.assert_allclose(p.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(p.lower, lo, rtol=1e-12)
    np.testing.assert_allclose(p.upper, hi, rtol=1e-12)
    cal = calibrated(tp, {"median_ms": stored_reference(tp.metadata)["median_ms"] * 1.1})
    c = cal.predict(archs, 0.9)
    np.testing.assert_allclose(c.mean, mean * 1.1, rtol=1e-9)
    assert np.all(c.lower < lo * 1.1) and np.all(c.upper > hi * 1.1)
