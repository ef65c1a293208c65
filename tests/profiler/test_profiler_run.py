"""Profiling runs end to end on tiny archs with a shrunken protocol: rows, resume after a kill,
shards and merge, drift flagging and re-measurement, op profiles, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fast_profile import ENC_DEC_SHAPES, NO_DRIFT, QUIET, fast_rule

from moenas.arch import SearchSpace, UserError
from moenas.arch.protocol import LatencyProtocol
from moenas.cli import main
from moenas.data.profiles import PROFILE_SCHEMA_VERSION, latency_table, noise_floor, read_profiles
from moenas.profiler.runner import ProfileConfig, Profiler, shard_archs
from moenas.profiler.stats import StopRule

FAST_PROTOCOL = LatencyProtocol(batch=1, src_len=4, decoder_steps=2, beam=2)
FAST_RULE = StopRule(warmup=1, min_runs=6, max_runs=8, max_seconds=0.5)
FAST_FLAGS = ENC_DEC_SHAPES + fast_rule() + NO_DRIFT + QUIET
SPACE = SearchSpace.load("tiny")


def cfg(out, n=3, seed=0, **kw):
    base = dict(
        archs=SPACE.sample_n(n, seed=seed),
        out=Path(out),
        space=SPACE,
        protocol=FAST_PROTOCOL,
        rule=FAST_RULE,
        ref_rule=FAST_RULE,
        drift_threshold=100.0,
        ref_wait_s=0.0,
        ref_retries=0,
        progress=False,
        command=["test"],
    )
    base.update(kw)
    return ProfileConfig(**base)


def test_run_writes_three_rows_per_measurement_with_metadata(tmp_path):
    out = tmp_path / "p.parquet"
    summary = Profiler(cfg(out, n=3, repeat_check=1)).run()
    df, meta = read_profiles(out)
    assert (tmp_path / "p.parquet.json").is_file() and not (tmp_path / "p.json").exists()
    assert json.loads((tmp_path / "p.parquet.json").read_text())["counts"] == meta["counts"]
    assert len(df) == 4 * 3 and summary["new_measurements"] == 4
    assert set(df["component"]) == {"encoder", "decoder", "total"}
    assert meta["schema_version"] == PROFILE_SCHEMA_VERSION and meta["protocol"]["src_len"] == 4
    for _mid, g in df.groupby("measurement_id"):
        parts = g.set_index("component")
        assert parts.loc["encoder", "n_runs"] == parts.loc["total", "n_runs"] >= 6
    row = df.iloc[0]
    assert row["threads_intra"] == 1 and row["threads_inter"] == 1 and row["backend"] == "onnxruntime"
    assert json.loads(row["session_options"])["intra_op_num_threads"] == 1
    assert (
        row["cpu_model"]
        and row["fingerprint_id"] == meta["fingerprint_id"]
        and row["protocol_id"] == meta["protocol_id"]
    )
    counts = json.loads(df[df["component"] == "total"].iloc[0]["expert_counts"])
    assert all(isinstance(v, list) for v in counts.values())
    assert (df["repeat_index"] == 1).sum() == 3  # one noise-floor re-measurement
    assert noise_floor(df) is not None and meta["noise_floor"]["pairs"] == 1
    assert len(latency_table(df)) == 3
    assert meta["reference"]["checks"] and meta["reference"]["baseline_ms"] > 0


def test_resume_after_interrupt_skips_finished_archs(tmp_path):
    out = tmp_path / "p.parquet"

    def stop_after_two(count, row):
        if count == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Profiler(cfg(out, n=4, ref_every=2, on_measured=stop_after_two)).run()
    df1, _ = read_profiles(out)
    assert df1["arch_id"].nunique() == 2  # every finished arch was kept
    Profiler(cfg(out, n=4, resume=True)).run()
    df2, meta = read_profiles(out)
    assert df2["arch_id"].nunique() == 4
    assert set(df1["measurement_id"]) <= set(df2["measurement_id"])  # finished rows kept
    first = df2[(df2["component"] == "total") & (df2["repeat_index"] == 0)]
    per_arch = first.groupby("arch_id").size()
    old = set(df1["arch_id"])
    # archs finished before the kill are not measured again as new work; since no reference
    # check closed their interval they are unverified (flagged) and re-measured once
    assert all(per_arch[a] == 1 for a in per_arch.index if a not in old)
    assert all(per_arch[a] == 2 for a in old)
    assert first[first["arch_id"].isin(old) & ~first["remeasured"]]["drift_flag"].all()
    assert len(latency_table(df2)) == 4
    assert len(meta["runs"]) == 2


@pytest.mark.slow  # a fresh interpreter + a kill: ~15 s on a quiet machine
def test_killed_subprocess_keeps_rows_and_resume_completes(tmp_path):
    out = tmp_path / "k.parquet"
    cmd = [sys.executable, "-m", "moenas", "profile", "--space", "tiny", "--n", "5", "--out", str(out), *FAST_FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if out.exists():
                try:
                    if read_profiles(out)[0]["arch_id"].nunique() >= 1:
                        break
                except UserError:
                    pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    df, _ = read_profiles(out)  # the killed run left a readable file
    done = df["arch_id"].nunique()
    assert done >= 1
    assert main(["profile", "--space", "tiny", "--n", "5", "--out", str(out), "--resume", *FAST_FLAGS]) == 0
    df2, _ = read_profiles(out)
    first = df2[(df2["component"] == "total") & (df2["repeat_index"] == 0)]
    assert first["arch_id"].nunique() == 5 and first.groupby("arch_id").size().max() <= 2
    assert len(latency_table(df2)) == 5


def test_shards_split_deterministically_and_merge(tmp_path):
    archs = SPACE.sample_n(4, seed=3)
    a, b = shard_archs(archs, (0, 2)), shard_archs(archs, (1, 2))
    assert {x.arch_id for x in a} | {x.arch_id for x in b} == {x.arch_id for x in archs}
    assert not {x.arch_id for x in a} & {x.arch_id for x in b}
    assert shard_archs(archs, (0, 2)) == a  # deterministic
    for i in range(2):
        Profiler(cfg(tmp_path / f"s{i}.parquet", archs=archs, shard=(i, 2))).run()
    assert (
        main(
            [
                "profile",
                "merge",
                str(tmp_path / "s0.parquet"),
                str(tmp_path / "s1.parquet"),
                "--out",
                str(tmp_path / "m.parquet"),
            ]
        )
        == 0
    )
    df, meta = read_profiles(tmp_path / "m.parquet")
    assert set(df["arch_id"]) == {x.arch_id for x in archs}
    assert len(meta["merged_from"]) == 2


def test_merge_refuses_incompatible_protocols(tmp_path, capsys):
    Profiler(cfg(tmp_path / "a.parquet", n=1)).run()
    Profiler(
        cfg(tmp_path / "b.parquet", n=1, protocol=LatencyProtocol(batch=1, src_len=5, decoder_steps=2, beam=2))
    ).run()
    args = [
        "profile",
        "merge",
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
        "--out",
        str(tmp_path / "m.parquet"),
    ]
    assert main(args) == 2
    assert "different protocols" in capsys.readouterr().err
    assert not (tmp_path / "m.parquet").exists()
    assert main(args + ["--allow-mixed"]) == 0
    assert read_profiles(tmp_path / "m.parquet")[0]["protocol_id"].nunique() == 2


def test_drift_flags_the_interval_and_remeasures_it(tmp_path, monkeypatch):
    # scripted reference medians: baseline 10, then 20 (drifted) after the 2nd arch, then back to 10
    medians = iter([10.0, 10.0, 20.0, 10.0] + [10.0] * 20)
    monkeypatch.setattr(Profiler, "_reference_ms", lambda self, group=None: next(medians))
    out = tmp_path / "d.parquet"
    Profiler(cfg(out, n=4, ref_every=2, drift_threshold=0.05, ref_retries=2)).run()
    df, meta = read_profiles(out)
    tot = df[df["component"] == "total"]
    flagged = tot[tot["drift_flag"]]
    assert flagged["arch_id"].nunique() == 2  # the interval closed by the 20 ms check
    assert tot["remeasured"].sum() == 2
    remeasured = tot[tot["remeasured"]]
    assert set(remeasured["arch_id"]) == set(flagged["arch_id"]) and not remeasured["drift_flag"].any()
    table = latency_table(df)
    assert len(table) == 4  # every arch has a valid measurement again
    assert set(table["median_ms"]) & set(remeasured["median_ms"]) == set(remeasured["median_ms"])
    assert [c["in_range"] for c in meta["reference"]["checks"]][:4] == [True, True, False, True]


@pytest.mark.parametrize("timing", ["follow", "group", "alone"])
def test_reference_timed_inside_each_group_is_its_check(tmp_path, monkeypatch, timing):
    """Group timing: the reference runs round-robin with the group's archs and that median judges
    the group (both ends of its rows' interval), as the group's follower (follow) or to the stop
    rule (group); alone: a separate check after each group."""
    import moenas.profiler.runner as R

    alone, followers = [], []
    real, real_il = R.measure, R.measure_interleaved
    monkeypatch.setattr(R, "measure", lambda step, rule: alone.append(1) or real(step, rule))
    monkeypatch.setattr(
        R,
        "measure_interleaved",
        lambda *a, follower=None, **k: followers.append(follower) or real_il(*a, follower=follower, **k),
    )
    out = tmp_path / "g.parquet"
    in_group = timing != "alone"
    Profiler(cfg(out, n=4, ref_every=2, ref_in_group=in_group, ref_follow=timing == "follow")).run()
    df, meta = read_profiles(out)
    checks = meta["reference"]["checks"]
    assert [c["timing"] for c in checks] == ["alone"] + ["group" if in_group else "alone"] * 2
    assert len(alone) == (1 if in_group else 3)  # only the baseline check times the reference alone
    assert meta["measurement"]["interleave"]["reference"] == timing
    assert followers == [0 if timing == "follow" else None] * 2
    tot = df[df["component"] == "total"]
    group_meds = {round(c["median_ms"], 4) for c in checks[1:]}
    assert set(tot["ref_after_ms"].round(4)) == group_meds
    if in_group:
        assert (tot["ref_before_ms"] == tot["ref_after_ms"]).all()


def test_remeasured_arch_reuses_its_export(tmp_path, monkeypatch):
    """A flagged arch is measured again from the export kept since its first measurement."""
    import moenas.profiler.workload as W

    exports = []
    real = W.export_arch
    monkeypatch.setattr(W, "export_arch", lambda arch, **kw: exports.append(arch.arch_id) or real(arch, **kw))
    medians = iter([10.0, 10.0, 20.0, 10.0] + [10.0] * 20)  # the second group drifted
    monkeypatch.setattr(Profiler, "_reference_ms", lambda self, group=None: next(medians))
    out = tmp_path / "e.parquet"
    Profiler(cfg(out, n=4, ref_every=2, drift_threshold=0.05, ref_retries=2)).run()
    tot = read_profiles(out)[0].query("component == 'total'")
    assert tot["remeasured"].sum() == 2
    archs = {a.arch_id for a in cfg(out, n=4).archs}
    assert sorted(e for e in exports if e in archs) == sorted(archs)  # each arch exported once, re-measured or not


def test_op_profile_column(tmp_path):
    out = tmp_path / "o.parquet"
    Profiler(cfg(out, n=1, op_profile=True)).run()
    df, _ = read_profiles(out)
    ops = {r["component"]: json.loads(r["op_profile"]) for _, r in df.iterrows()}
    assert "MatMul" in ops["decoder"] or "FusedMatMul" in ops["decoder"]
    for k, v in ops["total"].items():
        assert v == pytest.approx(ops["encoder"].get(k, 0) + ops["decoder"].get(k, 0), abs=1e-5)


def _run_cli(args, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("content", ["corrupt", "foreign"])
def test_bad_resume_file_is_refused_and_not_overwritten(tmp_path, capsys, content):
    out = tmp_path / "x.parquet"
    if content == "corrupt":
        out.write_bytes(b"PAR1 this is not parquet")
    else:
        pd.DataFrame({"a": [1, 2]}).to_parquet(out)
    before = out.read_bytes()
    rc, err = _run_cli(["profile", "--space", "tiny", "--n", "1", "--out", str(out), "--resume", *FAST_FLAGS], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("corrupt" in err) if content == "corrupt" else ("not a moenas profile dataset" in err)
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "nope"], "unknown backend"),
        (["--device", "tpu"], "no device"),
        (["--backend", "torch", "--op-profile"], "--op-profile needs"),
        (["--space", "nope"], "unknown space"),
        (["--shard", "3/2"], "--shard"),
        (["--ref-every", "0"], "--ref-every must be >= 1"),
        (["--visit-runs", "-1"], "--visit-runs must be >= 0"),
    ],
)
def test_bad_cli_input_exit_2(tmp_path, capsys, extra, message):
    args = ["profile", "--space", "tiny", "--n", "1", "--out", str(tmp_path / "y.parquet"), *FAST_FLAGS, *extra]
    rc, err = _run_cli(args, capsys)
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "y.parquet").exists()


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "p.parquet"
    Profiler(cfg(out, n=1)).run()
    before = out.read_bytes()
    rc, err = _run_cli(["profile", "--space", "tiny", "--n", "1", "--out", str(out), *FAST_FLAGS], capsys)
    assert rc == 2 and "--resume" in err and out.read_bytes() == before


def test_resume_refuses_another_protocol(tmp_path, capsys):
    out = tmp_path / "p.parquet"
    Profiler(cfg(out, n=1)).run()
    before = out.read_bytes()
    flags = [f if f != "4" else "6" for f in FAST_FLAGS]  # --src-len 6
    rc, err = _run_cli(["profile", "--space", "tiny", "--n", "1", "--out", str(out), "--resume", *flags], capsys)
    assert rc == 2 and "protocol" in err and out.read_bytes() == before


def test_json_summary(tmp_path, capsys):
    out = tmp_path / "j.parquet"
    assert main(["profile", "--space", "tiny", "--n", "1", "--out", str(out), "--json", *FAST_FLAGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["archs_valid"] == 1 and summary["rows"] == 3 and 0 <= summary["overhead_fraction"] <= 1


def test_archs_file_is_read_and_validated(tmp_path, capsys):
    archs = SPACE.sample_n(2, seed=7)
    (tmp_path / "a.jsonl").write_text("".join(a.to_json() + "\n" for a in archs))
    out = tmp_path / "f.parquet"
    assert (
        main(["profile", "--archs", str(tmp_path / "a.jsonl"), "--space", "tiny", "--out", str(out), *FAST_FLAGS]) == 0
    )
    assert set(read_profiles(out)[0]["arch_id"]) == {a.arch_id for a in archs}
    rc, err = _run_cli(
        [
            "profile",
            "--archs",
            str(tmp_path / "a.jsonl"),
            "--space",
            "hat-wmt",
            "--out",
            str(tmp_path / "g.parquet"),
            *FAST_FLAGS,
        ],
        capsys,
    )
    assert rc == 2 and "outside space" in err


@pytest.mark.parametrize("flags,expected", [([], 2), (["--max-remeasure", "0"], 0), (["--max-remeasure", "5"], 5)])
def test_max_remeasure_flag_reaches_the_profiler(tmp_path, flags, expected):
    from moenas.cli import build_parser
    from moenas.commands.profile import profile_config

    out = tmp_path / "m.parquet"
    args = build_parser().parse_args(["profile", "--space", "tiny", "--n", "2", "--out", str(out), *flags])
    assert profile_config(args, out).max_remeasure == expected
