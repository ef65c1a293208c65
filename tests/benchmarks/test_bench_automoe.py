"""benchmarks/bench_automoe.py: the table and the targets it derives (no training, no timing)."""

from __future__ import annotations

import csv

import pytest
from bench_module import load_bench

from moenas.arch import SearchSpace


@pytest.fixture(scope="module")
def bench():
    mod = load_bench("bench_automoe")
    return mod


def _rows(bench):
    space = SearchSpace.load("tiny")
    dense = space.dense()
    moe = [a for a in space.sample_n(40, seed=3) if any(layer.is_moe for layer in a.encoder.layers)][:2]
    dw = dense.sample_n(2, seed=4)
    rows = [{"budget": None, "budget_ms": None, "role": "largest-dense", "arch": dense.largest().to_dict()}]
    for i in range(2):
        rows += [
            {"budget": i, "budget_ms": 5.0 + i, "role": "moe-winner", "arch": moe[i].to_dict()},
            {"budget": i, "budget_ms": 5.0 + i, "role": "dense-winner", "arch": dw[i].to_dict()},
        ]
    return rows, [dense.largest(), moe[0], dw[0], moe[1], dw[1]]


def test_dense_variant_has_one_expert_everywhere_and_belongs_to_the_space():
    space = SearchSpace.load("tiny")
    dense = space.dense()
    assert dense.is_dense and not space.is_dense
    for a in dense.sample_n(20, seed=0):
        assert a.is_dense and space.contains(a)


def test_table_and_targets(bench, tmp_path):
    rows, archs = _rows(bench)
    largest, moe0, dense0, moe1, dense1 = archs
    bleu = {largest: 10.0, moe0: 9.0, dense0: 8.0, moe1: 11.0, dense1: 12.0}
    ms = {largest: 30.0, moe0: 8.0, dense0: 9.0, moe1: 10.0, dense1: 14.0}
    quality = {
        a.arch_id: {"inherited_val_loss": 4.0, "inherited_bleu": b - 1, "val_loss": 3.9, "bleu": b}
        for a, b in bleu.items()
    }
    measured = {"ms": {a.arch_id: v for a, v in ms.items()}, "ci_rel": {}, "device": "cpu: test", "cores": 2}
    table = bench.table_rows(bench.BenchConfig(), rows, quality, measured)
    assert len(table) == 5
    for r in table:
        assert 0 < r["ffn_flop_share"] < 1 and r["amdahl_max_speedup"] == pytest.approx(
            1 / (1 - r["ffn_flop_share"]), rel=1e-2
        )
        assert r["params_active_m"] <= r["params_total_m"]
    fam = bench.bench_family(bench.BenchConfig())
    comp = {(c["budget"], c["dense_role"]): c for c in bench.comparisons(table, fam)}
    # budget 0: MoE 9 vs dense 8 BLEU; the fastest MoE winner with BLEU >= 8 is moe0 (8 ms): 9/8
    assert comp[(0, "dense-winner")]["moe_minus_dense_bleu"] == 1.0
    assert comp[(0, "dense-winner")]["latency_ratio_at_equal_bleu"] == pytest.approx(9 / 8, rel=1e-3)
    # largest dense (BLEU 10): only moe1 (BLEU 11, 10 ms) is at least as good: 30/10
    assert comp[(None, "largest-dense")]["latency_ratio_at_equal_bleu"] == pytest.approx(3.0, rel=1e-3)
    # budget 1: the dense winner (BLEU 12) beats every MoE winner: no equal-BLEU ratio
    assert comp[(1, "dense-winner")]["moe_minus_dense_bleu"] == -1.0
    assert "latency_ratio_at_equal_bleu" not in comp[(1, "dense-winner")]
    out = tmp_path / "r.csv"
    bench.write_csv(table, out, fam)
    assert len(list(csv.DictReader(out.open()))) == 5
    assert len(list(csv.DictReader((tmp_path / "r_targets.csv").open()))) == 3


def test_language_model_table_compares_decode_ms_per_token_at_equal_perplexity(bench):
    """lm-tiny: budgets on decode ms/token, quality = perplexity (lower is better)."""
    c = bench.BenchConfig(**bench.PRESETS["lm-tiny"])
    fam = bench.bench_family(c)
    assert fam.budget.component == "decode" and fam.quality == "perplexity" and not fam.higher
    space = SearchSpace.load("lm-tiny")
    dense = space.dense()
    moe = [a for a in space.sample_n(20, seed=3) if not a.is_dense][:1]
    rows = [
        {"budget": None, "budget_ms": None, "role": "largest-dense", "arch": dense.largest().to_dict()},
        {"budget": 0, "budget_ms": 0.3, "role": "moe-winner", "arch": moe[0].to_dict()},
    ]
    archs = [dense.largest(), moe[0]]
    ppl = {archs[0].arch_id: 150.0, archs[1].arch_id: 140.0}  # the MoE winner is at least as good
    decode = {archs[0].arch_id: 24.0, archs[1].arch_id: 8.0}  # ms for the protocol's 32 steps
    quality = {
        i: {"inherited_val_loss": 5.0, "inherited_perplexity": p + 5, "val_loss": 5.0, "perplexity": p}
        for i, p in ppl.items()
    }
    measured = {
        "ms": {i: d + 4 for i, d in decode.items()},
        "ci_rel": {},
        "components": {i: {"prefill": 4.0, "decode": d} for i, d in decode.items()},
    }
    table = bench.table_rows(c, rows, quality, measured)
    by = {r["role"]: r for r in table}
    assert by["moe-winner"]["measured_decode_per_token_ms"] == pytest.approx(8.0 / 32)
    assert by["moe-winner"]["tokens_per_s"] == pytest.approx(32000 / 8.0, rel=1e-3)
    (comp,) = bench.comparisons(table, fam)
    assert comp["latency_ratio_at_equal_perplexity"] == pytest.approx(3.0, rel=1e-3)
    assert comp["dense_perplexity"] == 150.0 and comp["moe_perplexity"] == 140.0


def test_unknown_stage_is_one_line(bench, tmp_path, capsys):
    assert bench.main(["--work", str(tmp_path), "--stages", "train,bogus"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_unknown_combo_is_one_line(bench, tmp_path, capsys):
    assert bench.main(["--work", str(tmp_path), "--stages", "rank-table", "--combos", "slice/uniform,mos/bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mos/bogus" in err


def test_rank_table_leaves_out_unfinished_settings(bench, tmp_path, capsys, monkeypatch):
    """No supernet trained yet: every setting is left out and the stage says so (exit 2), no CSV."""
    archs = SearchSpace.load("tiny").sample_n(3, seed=5)
    monkeypatch.setattr(bench, "rank_archs", lambda c, work, log: archs)
    out = tmp_path / "b.csv"
    assert (
        bench.main(["--work", str(tmp_path), "--stages", "rank-table", "--combos", "mos/sandwich", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "mos/sandwich: not fine-tuned yet" in err and "no supernet setting" in err
    assert not out.with_name("b_rank.csv").exists()


def test_rank_csv_keeps_the_other_settings(bench, tmp_path):
    """Each setting runs in its own session: writing one keeps the others' rows, replaces its own."""
    path = tmp_path / "r_rank.csv"
    row = lambda combo, tau: {
        "combo": combo,
        "archs": 20,
        "kendall_tau_bleu": tau,
        "kendall_tau_loss": tau,  # noqa: E731
        "mean_bleu_gain": 1.0,
    }
    bench.write_rank_csv([row("slice/uniform", 0.85)], path)
    bench.write_rank_csv([row("mos/sandwich", 0.7)], path)
    bench.write_rank_csv([row("mos/sandwich", 0.75)], path)
    got = list(csv.DictReader(path.open()))
    assert [(r["combo"], float(r["kendall_tau_bleu"])) for r in got] == [
        ("slice/uniform", 0.85),
        ("mos/sandwich", 0.75),
    ]
    assert all(r["date"] for r in got)
