"""The row builder: pure (no timing), every row matches the schema, a misspelt key is caught."""

import json

import pytest

from moenas.arch import SearchSpace
from moenas.arch.family import ENCODER_DECODER
from moenas.arch.protocol import LatencyProtocol
from moenas.data.profiles import COLUMNS, read_profiles, to_frame, write_profiles
from moenas.profiler import rows as rows_mod
from moenas.profiler.fingerprint import ID_FIELDS, fingerprint_id
from moenas.profiler.rows import RunColumns, measurement_rows
from moenas.profiler.stats import Measurement, summarize

ARCH = SearchSpace.load("tiny").sample_n(1, seed=4)[0]
PROTOCOL = LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2)


def _fingerprint():
    fp = {k: f"{k}-x" for k in ID_FIELDS} | {"cpu_cores": 2, "gpu_name": None, "gpu_driver": None}
    return fp | {"fingerprint_id": fingerprint_id(fp)}


def run_columns(**kw):
    base = dict(
        space="tiny",
        backend="onnxruntime",
        device="cpu",
        threads_intra=1,
        threads_inter=1,
        target_rel=0.02,
        protocol=PROTOCOL,
        session_options={"intra_op_num_threads": 1, "inter_op_num_threads": 1},
        fingerprint=_fingerprint(),
        export_method="torchscript",
        run_id="run1",
    )
    return RunColumns(**(base | kw))


def measurement(enc=(1.0, 1.2, 1.1, 0.9, 1.0, 1.05), dec=(3.0, 3.3, 2.9, 3.1, 3.0, 3.2)):
    samples = {"encoder": list(enc), "decoder": list(dec), "total": [a + b for a, b in zip(enc, dec)]}
    return Measurement(samples, {c: summarize(v) for c, v in samples.items()}, n_warmup=2, timed_s=0.1, warmup_s=0.01)


def build(ops=None, run=None, **kw):
    args = (
        dict(measurement_id="m1", timestamp="2026-01-01T00:00:00", repeat_index=0, remeasured=False, ref_before_ms=8.0)
        | kw
    )
    return measurement_rows(run or run_columns(), ARCH, measurement(), {"encoder.0": [3, 1]}, ops, **args)


def test_rows_have_exactly_the_schema_and_the_measurement():
    rows = build(repeat_index=1, remeasured=True)
    assert [r["component"] for r in rows] == list(ENCODER_DECODER.row_components)
    m = measurement()
    for r in rows:
        assert set(r) == set(COLUMNS)
        assert r["median_ms"] == m.summaries[r["component"]].median_ms and r["n_runs"] == 6 and r["n_warmup"] == 2
        assert r["arch_id"] == ARCH.arch_id and r["measurement_id"] == "m1" and r["protocol_id"] == PROTOCOL.protocol_id
        assert r["src_len"] == 4 and r["beam"] == 2 and r["repeat_index"] == 1 and r["remeasured"]
        assert r["ref_before_ms"] == 8.0 and r["ref_after_ms"] is None and r["drift_flag"] is False
        assert json.loads(r["expert_counts"]) == {"encoder.0": [3, 1]} and r["op_profile"] is None
        assert json.loads(r["versions"]) == {k: f"{k}-x" for k in rows_mod.VERSION_FIELDS}
    assert to_frame(rows)["median_ms"].tolist() == [r["median_ms"] for r in rows]


def test_total_op_profile_is_encoder_plus_decoder():
    ops = {"encoder": {"MatMul": 1.0, "Add": 0.25}, "decoder": {"MatMul": 2.0, "Gather": 0.5}}
    got = {r["component"]: json.loads(r["op_profile"]) for r in build(ops)}
    assert got["encoder"] == ops["encoder"] and got["decoder"] == ops["decoder"]
    assert got["total"] == {"MatMul": 3.0, "Gather": 0.5, "Add": 0.25}
    assert list(got["total"]) == ["MatMul", "Gather", "Add"]  # largest first


def test_shared_columns_are_computed_once_per_run(monkeypatch):
    run = run_columns()
    calls = []
    real = rows_mod.json.dumps
    monkeypatch.setattr(rows_mod.json, "dumps", lambda *a, **k: calls.append(a) or real(*a, **k))
    build(run=run)
    build(run=run, measurement_id="m2")
    versions_dumps = [a for a in calls if isinstance(a[0], dict) and set(a[0]) == set(rows_mod.VERSION_FIELDS)]
    assert len(versions_dumps) == 1


def test_a_misspelt_or_missing_key_is_caught(monkeypatch):
    real = RunColumns.values.func

    def misspelt(self):
        v = dict(real(self))
        v["treads_intra"] = v.pop("threads_intra")
        return v

    monkeypatch.setattr(RunColumns, "values", property(misspelt))
    with pytest.raises(ValueError, match=r"unknown columns \['treads_intra'\], missing columns \['threads_intra'\]"):
        build()


def test_built_rows_write_and_read_back(tmp_path):
    out = tmp_path / "r.parquet"
    write_profiles(out, to_frame(build()), {"protocol_id": PROTOCOL.protocol_id, "fingerprint_id": "f"})
    df, _ = read_profiles(out)
    assert list(df.columns) == list(COLUMNS) and len(df) == 3
    assert df.loc[df["component"] == "total", "export_method"].item() == "torchscript"
