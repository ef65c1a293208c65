"""The decoder-only family through the profiler: prefill and decode graphs equal CausalLM, only
routed experts run in them, the workload and its reference, rows, the CLI (profile, resume,
merge, export) and datasets written before the family read back unchanged."""

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from fast_profile import NO_DRIFT, QUIET, fast_rule

from moenas.arch import LayerArch, SearchSpace, StackArch, UserError
from moenas.arch.arch import LMArch
from moenas.arch.family import DECODER_ONLY
from moenas.arch.lm_model import build_lm_model
from moenas.arch.protocol import LatencyProtocol, LMProtocol
from moenas.cli import main
from moenas.data import profiles as P
from moenas.profiler.fingerprint import ID_FIELDS, fingerprint_id
from moenas.profiler.onnx_export import ExportedArch
from moenas.profiler.onnx_export_lm import DecodeStepGraph, PrefillGraph, example_inputs, export_lm
from moenas.profiler.op_profile import expert_rows, trace_node_events
from moenas.profiler.rows import RunColumns, measurement_rows
from moenas.profiler.runner import reference_arch
from moenas.profiler.stats import Measurement, summarize
from moenas.profiler.workload import LMWorkload, Workload, make_workload

ATOL = 1e-4
SPACE = SearchSpace.load("lm-tiny")
LM_FLAGS = ["--prompt-len", "6", "--decode-steps", "2", *fast_rule(), *NO_DRIFT, *QUIET]


def _session(graph, profile_prefix=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def _moe_arch(top_k=2):
    """MoE layers of 3 and 4 experts around a dense one, uneven heads."""
    return LMArch(
        decoder=StackArch(64, (LayerArch(2, (96, 160, 224)), LayerArch(4, (128,)), LayerArch(2, (96, 160, 224, 288)))),
        top_k=top_k,
        qkv_dim=128,
        vocab_size=700,
    )


def _lm_archs():
    return [SPACE.sample(s) for s in (0, 1, 2)] + [_moe_arch(1), _moe_arch(2)]


@pytest.mark.parametrize("arch", _lm_archs(), ids=lambda a: f"{a.arch_id}-k{a.top_k}")
def test_prefill_and_decode_graphs_equal_causal_lm(arch):
    model = build_lm_model(arch, 0).eval()
    ex = export_lm(arch, model=model)
    for part, module in (("prefill", PrefillGraph(model)), ("decode", DecodeStepGraph(model))):
        sess = ex.session(part)
        names = [i.name for i in sess.get_inputs()]
        for batch, seq, past in ((1, 12, 5), (3, 2, 1), (2, 9, 0)):
            feeds = example_inputs(arch, part, batch, seq, past, seed=batch * 10 + seq)
            got = sess.run(None, {n: feeds[n].numpy() for n in names})
            with torch.no_grad():
                want = module(*[feeds[n] for n in names])
            assert [g.shape for g in got] == [tuple(w.shape) for w in want]
            assert max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)) <= ATOL, (part, batch, seq, past)


def test_graph_names_follow_onnxruntime_genai_and_the_manifest():
    arch = _moe_arch()
    ex = export_lm(arch, protocol=LMProtocol(prompt_len=16))
    n = len(arch.decoder.layers)
    kv = lambda prefix: [f"{prefix}.{i}.{k}" for i in range(n) for k in ("key", "value")]  # noqa: E731
    pre, dec = ex.session("prefill"), ex.session("decode")
    assert [i.name for i in pre.get_inputs()] == ["input_ids"]
    assert [o.name for o in pre.get_outputs()] == ["logits", *kv("present")]
    assert [i.name for i in dec.get_inputs()] == ["input_ids", *kv("past_key_values")]
    assert [o.name for o in dec.get_outputs()] == ["logits", *kv("present")]
    m = ex.manifest
    assert m["family"] == "decoder-only" and m["protocol"] == LMProtocol(prompt_len=16).to_dict()
    assert m["prefill"]["file"] == "prefill.onnx" and m["decode"]["outputs"][1]["shape"] == [
        "batch",
        2,
        "past_len_plus_1",
        64,
    ]
    assert ex.files() == {"prefill": "prefill.onnx", "decode": "decode.onnx"}


def test_prefill_and_greedy_decode_through_onnxruntime_equal_torch_generate():
    arch = _moe_arch()
    model = build_lm_model(arch, 0).eval()
    ex = export_lm(arch, model=model)
    pre, dec = ex.session("prefill"), ex.session("decode")
    prompt = torch.randint(4, arch.vocab_size, (2, 11), generator=torch.Generator().manual_seed(3))
    out = pre.run(None, {"input_ids": prompt.numpy()})
    past_names = [i.name for i in dec.get_inputs()][1:]
    tokens = []
    for step in range(6):  # the prefill's token, then 5 decode steps
        nxt = out[0].argmax(-1)[:, None].astype(np.int64)
        tokens.append(nxt)
        if step < 5:
            out = dec.run(None, {"input_ids": nxt, **dict(zip(past_names, out[1:]))})
    assert out[1].shape[2] == 11 + 5  # the cache grew by one per step
    assert np.array_equal(np.concatenate(tokens, 1), model.generate(prompt, 6).numpy())


def _force_all_to(model, expert, value=50.0):
    """Every token of every MoE layer to ``expert`` (as test_profiler_export's helper does)."""
    for layer in model.layers:
        if hasattr(layer.ffn, "router"):
            with torch.no_grad():
                layer.norm2.weight[0], layer.norm2.bias[0] = 0.0, value
                layer.ffn.router.weight.zero_()
                layer.ffn.router.weight[expert, 0] = 1.0


def _decode_expert_rows(arch, model, tmp_path, batch):
    sess = _session(export_lm(arch, model=model).model_bytes("decode"), str(tmp_path / "dec"))
    feeds = example_inputs(arch, "decode", batch=batch, past_len=4)
    sess.run(None, {n: v.numpy() for n, v in feeds.items()})
    return expert_rows(trace_node_events(sess.end_profiling()))


@pytest.mark.parametrize("top_k", [1, 2])
def test_decode_graph_runs_only_routed_experts(tmp_path, top_k):
    """onnxruntime's profile of one decode step of `batch` tokens: a layer's expert GEMMs see
    batch * k rows together, not batch * E; forced routing puts them all on one expert."""
    arch, batch = _moe_arch(top_k), 6
    model = build_lm_model(arch, 0).eval()
    rows = _decode_expert_rows(arch, model, tmp_path, batch)
    for layer, n_exp in (("layers.0", 3), ("layers.2", 4)):
        per_expert = [rows.get((layer, e), 0) for e in range(n_exp)]
        assert sum(per_expert) == batch * top_k < batch * n_exp, (layer, per_expert)
    _force_all_to(model, expert=2)
    rows = _decode_expert_rows(arch, model, tmp_path, batch)
    if top_k == 1:
        assert [rows.get(("layers.2", e), 0) for e in range(4)] == [0, 0, batch, 0]


def test_workload_is_made_for_the_arch_family_with_a_seeded_reference():
    arch, p = _moe_arch(), LMProtocol(batch=2, prompt_len=7, decode_steps=3)
    w = make_workload(arch, p)
    assert isinstance(w, LMWorkload) and w.family is DECODER_ONLY
    assert w.prompt.shape == (2, 7) and w.decode_tokens.shape == (3, 2, 1)
    assert torch.equal(make_workload(arch, p).prompt, w.prompt)  # the same arch, the same inputs
    ref = w.reference()
    assert ref["logits"].shape == (2, arch.vocab_size) and w.logit_rows == 2
    # every prompt and decode token routed top_k times in each MoE layer
    assert sorted(ref["expert_counts"]) == ["decoder.0", "decoder.2"]
    assert all(sum(c) == 2 * (7 + 3) * 2 for c in ref["expert_counts"].values())
    model = build_lm_model(arch, 0).eval()
    with torch.no_grad():
        logits, cache = model.prefill(w.prompt)
        for tok in w.decode_tokens:
            logits, cache = model.step(tok, cache)
    assert np.allclose(ref["logits"], logits.numpy(), atol=1e-5)
    assert isinstance(make_workload(SearchSpace.load("tiny").sample(0)), Workload)  # default protocol per family
    with pytest.raises(UserError, match="decoder-only but the protocol times encoder-decoder"):
        make_workload(arch, LatencyProtocol())


def _rows(arch, protocol):
    """The rows of one made-up measurement of ``arch`` under ``protocol``."""
    fp = {k: f"{k}-x" for k in ID_FIELDS} | {"cpu_cores": 2, "gpu_name": None, "gpu_driver": None}
    run = RunColumns(
        space="s",
        backend="onnxruntime",
        device="cpu",
        threads_intra=1,
        threads_inter=1,
        target_rel=0.02,
        protocol=protocol,
        session_options={},
        fingerprint=fp | {"fingerprint_id": fingerprint_id(fp)},
        export_method="torchscript",
        run_id="r",
    )
    samples = {c: [1.0 + i, 1.1 + i] * 3 for i, c in enumerate(protocol.family.components)}
    samples["total"] = [sum(v) for v in zip(*samples.values())]
    m = Measurement(samples, {c: summarize(v) for c, v in samples.items()}, n_warmup=1, timed_s=0.1, warmup_s=0.0)
    return measurement_rows(
        run,
        arch,
        m,
        {"decoder.0": [3, 1, 2]},
        None,
        measurement_id=protocol.family.name,
        timestamp="2026-01-01T00:00:00",
        repeat_index=0,
        remeasured=False,
        ref_before_ms=None,
    )


def test_lm_rows_carry_the_protocol_and_leave_the_other_family_na(tmp_path):
    p = LMProtocol(batch=1, prompt_len=9, decode_steps=4)
    rows = _rows(_moe_arch(), p)
    assert [r["component"] for r in rows] == ["prefill", "decode", "total"]
    for r in rows:
        assert (r["family"], r["prompt_len"], r["decode_steps"], r["batch"]) == ("decoder-only", 9, 4, 1)
        assert r["src_len"] is None and r["decoder_steps"] is None and r["beam"] is None
        assert r["protocol_id"] == p.protocol_id
    out = tmp_path / "lm.parquet"
    P.write_profiles(
        out, P.to_frame(rows), {"protocol": p.to_dict(), "protocol_id": p.protocol_id, "fingerprint_id": "f"}
    )
    df, meta = P.read_profiles(out)
    assert list(df.columns) == list(P.COLUMNS)
    assert P.dataset_protocol(df, meta) == p == P.row_protocol(df.iloc[0])
    assert P.dataset_protocol(df, {}) == p  # no metadata (a reshaped file): from the rows
    ed = _rows(SearchSpace.load("tiny").sample(0), LatencyProtocol())
    assert all(r["family"] is None and r["prompt_len"] is None and r["src_len"] == 30 for r in ed)


def test_a_component_outside_its_rows_family_is_refused(tmp_path):
    df = P.to_frame(_rows(SearchSpace.load("tiny").sample(0), LatencyProtocol()))
    df.loc[0, "component"] = "prefill"  # an encoder-decoder row (family NA) cannot time a prefill
    out = tmp_path / "bad.parquet"
    P.write_profiles(out, df, {"protocol_id": "x", "fingerprint_id": "f"})
    with pytest.raises(UserError, match="component 'prefill' is not one of family encoder-decoder's"):
        P.read_profiles(out)


@pytest.mark.parametrize("name", ["tiny-cpu-ort", "automoe-wmt-cpu-ort"])
def test_shipped_datasets_read_back_with_their_columns_unchanged(name):
    """The new protocol columns come last and NA: every earlier column is where it was."""
    import pyarrow.parquet as pq

    path = P.shipped(name)
    raw = pq.read_table(path).to_pandas()
    df, meta = P.read_profiles(path)
    assert list(df.columns) == list(P.COLUMNS) and list(df.columns[: len(raw.columns)]) == list(raw.columns)
    assert df[["family", "prompt_len", "decode_steps"]].isna().all().all()
    pd.testing.assert_frame_equal(df[list(raw.columns)], raw.astype({c: P.COLUMNS[c] for c in raw.columns}))
    assert P.dataset_protocol(df, meta) == LatencyProtocol()


def test_reference_arch_is_a_fixed_arch_of_the_family():
    ref = reference_arch(None, DECODER_ONLY)
    assert ref == reference_arch(SPACE, DECODER_ONLY) and SPACE.contains(ref) is not False
    assert ref.family is DECODER_ONLY
    assert reference_arch(None) == reference_arch(SearchSpace.load("tiny"))  # encoder-decoder's as before


def _cli(args, capsys):
    rc = main(args)
    return rc, capsys.readouterr().err


def test_profile_cli_times_an_lm_space_resumes_and_refuses_to_merge_with_encoder_decoder(tmp_path, capsys):
    out = tmp_path / "lm.parquet"
    assert main(["profile", "--space", "lm-tiny", "--n", "2", "--out", str(out), "--repeat-check", "1", *LM_FLAGS]) == 0
    df, meta = P.read_profiles(out)
    assert list(df["component"]) == ["prefill", "decode", "total"] * 3
    assert (df["repeat_index"] == 1).sum() == 3 and meta["noise_floor"]["pairs"] == 1
    assert set(meta["noise_floor"]["by_component"]) == {"prefill", "decode", "total"}
    assert set(df["family"]) == {"decoder-only"} and set(df["prompt_len"]) == {6} and set(df["decode_steps"]) == {2}
    assert df["src_len"].isna().all() and df["beam"].isna().all()
    assert P.dataset_protocol(df, meta) == LMProtocol(prompt_len=6, decode_steps=2)
    assert meta["reference"]["arch_id"] == reference_arch(SPACE, DECODER_ONLY).arch_id
    counts = json.loads(df.iloc[0]["expert_counts"])
    assert all(k.startswith("decoder.") for k in counts)
    first = set(df["measurement_id"])
    # --resume: the two measured archs are kept and not measured again, the third one is
    assert main(["profile", "--space", "lm-tiny", "--n", "3", "--out", str(out), "--resume", *LM_FLAGS]) == 0
    df2, _ = P.read_profiles(out)
    assert first <= set(df2["measurement_id"]) and df2["arch_id"].nunique() == 3
    first_rows = df2[(df2["component"] == "total") & (df2["repeat_index"] == 0)]
    assert (first_rows.groupby("arch_id").size() == 1).all()
    # an encoder-decoder dataset is another protocol: merge refuses the mix
    ed = tmp_path / "ed.parquet"
    ed_flags = ["--src-len", "4", "--decoder-steps", "2", "--beam", "2", *LM_FLAGS[4:]]
    assert main(["profile", "--space", "tiny", "--n", "1", "--out", str(ed), *ed_flags]) == 0
    capsys.readouterr()
    rc, err = _cli(["profile", "merge", str(out), str(ed), "--out", str(tmp_path / "m.parquet")], capsys)
    assert rc == 2 and "different protocols" in err and not (tmp_path / "m.parquet").exists()


@pytest.mark.parametrize(
    "space, flag",
    [
        ("lm-tiny", ["--beam", "2"]),
        ("lm-tiny", ["--src-len", "4"]),
        ("tiny", ["--prompt-len", "8"]),
        ("tiny", ["--decode-steps", "3"]),
    ],
)
def test_another_familys_protocol_flag_is_one_line_exit_2(tmp_path, capsys, space, flag):
    rc, err = _cli(["profile", "--space", space, "--n", "1", "--out", str(tmp_path / "x.parquet"), *flag], capsys)
    assert rc == 2 and err.count("\n") == 1 and "does not apply to" in err and flag[0] in err
    assert not (tmp_path / "x.parquet").exists()


def test_profile_archs_file_of_lm_archs_uses_the_lm_protocol(tmp_path):
    from moenas.cli import build_parser
    from moenas.commands.profile import profile_config

    (tmp_path / "a.jsonl").write_text("".join(a.to_json() + "\n" for a in SPACE.sample_n(2, seed=4)))
    out = tmp_path / "f.parquet"
    args = build_parser().parse_args(
        ["profile", "--archs", str(tmp_path / "a.jsonl"), "--out", str(out), "--decode-steps", "5"]
    )
    assert profile_config(args, out).protocol == LMProtocol(decode_steps=5)


def test_op_profile_of_an_lm_arch_has_prefill_decode_and_their_sum(tmp_path):
    from moenas.profiler.backends import get_backend

    ops = get_backend("onnxruntime").op_profile(
        make_workload(_moe_arch(), LMProtocol(prompt_len=5, decode_steps=2)), runs=1
    )
    assert list(ops) == ["prefill", "decode"]
    assert any(k in ops["decode"] for k in ("MatMul", "FusedMatMul", "Gemm", "FusedGemm"))


def test_export_cli_writes_prefill_decode_and_manifest(tmp_path, capsys):
    arch = SPACE.sample(3)
    (tmp_path / "a.json").write_text(arch.to_json())
    out = tmp_path / "exp"
    assert main(["export", str(tmp_path / "a.json"), "--out", str(out), "--space", "lm-tiny"]) == 0
    assert "prefill.onnx, decode.onnx, manifest.json" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["decode.onnx", "manifest.json", "prefill.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == "decoder-only" and manifest["arch_id"] == arch.arch_id
    assert manifest["protocol"] == LMProtocol().to_dict()
    loaded = ExportedArch.load(out)
    assert loaded.arch == arch and list(loaded.graphs) == ["prefill", "decode"]
    sess = _session(str(out / "decode.onnx"))
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in manifest["decode"]["inputs"]]
    rc, err = _cli(["export", str(tmp_path / "a.json"), "--out", str(tmp_path / "t"), "--supernet", "x.pt"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "x.pt" in err and not (tmp_path / "t").exists()
