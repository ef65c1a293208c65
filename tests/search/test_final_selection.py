"""Final selection by measurement: pools, picks, ties within noise, the verdict between MoE and
dense, the none-meets line; and the fitness's error bar it rests on."""

import numpy as np
import pytest
import torch

from moenas.arch import SearchSpace
from moenas.search.evolution import Candidate
from moenas.search.final_selection import Finalist, decide, largest, pick, pool, verdict
from moenas.search.fitness_noise import SentenceStats, bleu_stats, paired_se, ties
from moenas.search.report import Verification

TINY = SearchSpace.load("tiny")
ARCHS = TINY.sample_n(12, seed=3)
DENSE = TINY.dense().sample_n(4, seed=4)


def stats(per_sentence, counts=None) -> SentenceStats:
    """Loss statistics: per-sentence mean nats, 10 tokens each unless given."""
    x = np.asarray(per_sentence, dtype=float)
    c = np.full_like(x, 10.0) if counts is None else np.asarray(counts, dtype=float)
    return SentenceStats("loss", np.stack([x * c, c], axis=1))


def finalist(role, arch, loss, measured, budget=10.0, st=None, se=0.05) -> Finalist:
    c = Candidate(arch, loss, measured, [0.0], se)
    row = Verification(
        arch.arch_id, role, loss, measured, measured * 0.9, measured * 1.1, measured, budget, 1.0, 1.0, loss_se=se
    )
    return Finalist(role, c, st, row)


BASE = np.random.default_rng(0).normal(3.8, 0.8, 200)  # per-sentence losses shared by every arch (hard sentences)


def shifted(delta, noise=0.01, seed=1):
    """An arch whose per-sentence losses are BASE + delta, plus a little independent noise."""
    return stats(BASE + delta + np.random.default_rng(seed).normal(0, noise, BASE.size))


# ---- the fitness's error bar -------------------------------------------------------------------
def test_loss_stats_value_and_error_match_the_ratio_estimator():
    s = stats(BASE)
    assert s.value() == pytest.approx(BASE.mean())
    analytic = BASE.std(ddof=1) / np.sqrt(BASE.size)
    assert s.se() == pytest.approx(analytic, rel=0.1)  # the bootstrap agrees with the formula
    assert s.se() == s.se()  # seeded: the same statistics give the same error


def test_paired_error_is_far_below_the_unpaired_one_for_archs_sharing_hard_sentences():
    a, b = shifted(0.0, seed=1), shifted(0.02, seed=2)
    assert paired_se(a, b) < 0.1 * np.hypot(a.se(), b.se())
    assert not ties(a.value() - b.value(), paired_se(a, b))  # 0.02 nats is beyond a 0.001 paired error
    with pytest.raises(ValueError):
        paired_se(a, stats(BASE[:10]))


def test_bleu_statistics_give_sacrebleus_corpus_bleu():
    import sacrebleu

    hyps = ["das ist ein kleiner Test", "hallo Welt", "eine Datei öffnen", "Fenster schließen"]
    refs = ["das ist ein kleiner Test", "hallo schöne Welt", "eine Datei öffnen", "das Fenster schließen"]
    s = SentenceStats("bleu", bleu_stats(hyps, refs))
    assert s.value() == pytest.approx(-sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert s.se() > 0


def test_token_nll_sums_exactly_as_the_training_loss():
    from moenas.search.evaluation import sentence_sums
    from moenas.search.loss import linear_cross_entropy, token_nll

    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(3, 7, 16, generator=g), torch.randn(50, 16, generator=g)
    target = torch.randint(1, 50, (3, 7), generator=g)
    target[0, 5:] = 0  # PAD
    target[2, 3:] = 0
    nll, total = token_nll(h, w, target, chunk=4)
    assert float(total) == float(linear_cross_entropy(h, w, target, reduction="sum", chunk=4))
    sums = sentence_sums(nll, target)
    assert sums[:, 1].tolist() == [5, 7, 3] and sums[:, 0].sum() == pytest.approx(float(total), rel=1e-6)


# ---- pools and picks ------------------------------------------------------------------------------
def test_pool_takes_the_k_best_and_every_arch_tied_with_the_best():
    losses = [3.70, 3.71, 3.80, 3.705, 3.90]
    cands = [Candidate(a, v, 5.0, [0.0], 0.05) for a, v in zip(ARCHS, losses)]
    deltas = dict(zip((a.arch_id for a in ARCHS), [0.0, 0.01, 0.10, 0.005, 0.2]))
    ids = [a.arch_id for a in ARCHS]  # each arch's own noise seed
    calls = []

    def stats_of(archs):
        calls.append(len(archs))
        return [shifted(deltas[a.arch_id], noise=0.1, seed=ids.index(a.arch_id)) for a in archs]

    got = [
        f.arch_id for f in pool(cands, 1, stats_of, "searched")
    ]  # one top arch: no paired error yet, the unpaired screen
    assert got[0] == ARCHS[0].arch_id  # the best by fitness first
    assert ARCHS[3].arch_id in got and ARCHS[1].arch_id in got  # 0.005 and 0.01 nats: within the paired noise
    assert ARCHS[4].arch_id not in got and ARCHS[2].arch_id not in got  # 0.1 and 0.2 nats: beyond it
    assert calls == [1, 3]  # the best, then 3 pre-screened by its error scale: 3.90 never reached the paired test
    assert [f.arch_id for f in pool(cands, 2, None, "searched")] == [ARCHS[0].arch_id, ARCHS[3].arch_id]
    calls.clear()
    got2 = pool(cands, 2, stats_of, "searched")  # two top archs: screened by twice the tie margin of their paired error
    assert calls == [2, 1] and {f.arch_id for f in got2} == {ARCHS[0].arch_id, ARCHS[3].arch_id, ARCHS[1].arch_id}


def test_ties_beyond_the_cap_keep_the_fastest_predicted():
    cands = [Candidate(a, 3.70 + 0.0001 * i, 10.0 - 0.1 * i, [0.0], 0.05) for i, a in enumerate(ARCHS[:10])]

    def stats_of(archs):  # every arch within noise of the best
        return [shifted(0.0, noise=0.1, seed=TINY_IDS.index(a.arch_id)) for a in archs]

    got = pool(cands, 2, stats_of, "searched")
    assert len(got) == 6  # the 2 best + at most 2k ties
    assert [f.candidate.latency for f in got[2:]] == sorted(c.latency for c in cands[2:])[:4]  # the fastest predicted
    assert len(pool(cands, 2, stats_of, "searched", max_ties=10)) == 10


TINY_IDS = [a.arch_id for a in ARCHS]


def test_an_arch_that_meets_the_budget_predicted_but_not_measured_is_passed_over():
    best = finalist("searched", ARCHS[0], 3.70, 10.06, st=shifted(0.0))  # predicted in budget, measured 0.6% over
    second = finalist("searched", ARCHS[1], 3.75, 9.5, st=shifted(0.05))  # worse beyond noise, but it fits
    assert best.row.meets_budget is False
    assert pick([best, second]) is second


def test_ties_within_noise_go_to_the_faster_and_a_clear_winner_keeps_its_place():
    a = finalist("searched", ARCHS[0], 3.700, 9.8, st=shifted(0.0, seed=1))
    tied = finalist("searched", ARCHS[1], 3.7005, 8.0, st=shifted(0.0005, seed=2))
    worse = finalist("searched", ARCHS[2], 3.80, 5.0, st=shifted(0.1, seed=3))
    assert pick([a, tied, worse]) is tied  # equal quality: the faster one
    assert pick([a, worse]) is a  # 0.1 nats beyond noise: quality wins over speed


def test_no_finalist_meets_the_budget_names_the_closest_and_by_how_much():
    fins = [
        finalist("searched", ARCHS[0], 3.7, 11.77, budget=11.7),
        finalist("dense", DENSE[0], 3.7, 12.5, budget=11.7),
    ]
    sel = decide(fins, 11.7, measured=True)
    assert sel.winner is None and sel.verdict is None
    msg = sel.none_meets_message()
    assert ARCHS[0].arch_id in msg and "0.6% over" in msg and "11.77" in msg and "\n" not in msg
    assert sel.to_dict()["winner"] is None


def test_the_verdict_never_calls_the_moe_arch_better_when_the_dense_one_is():
    moe = [a for a in ARCHS if not a.is_dense][0]
    m = finalist("searched", moe, 3.80, 8.0, st=shifted(0.10, seed=1))
    d = finalist("dense", DENSE[0], 3.70, 9.0, st=shifted(0.0, seed=2))
    v = verdict(m, d, 10.0)
    assert (
        v.winner is d and "beyond noise" in v.sentence and v.sentence.startswith(f"Deploy the dense arch `{d.arch_id}`")
    )
    assert v.loss_diff == pytest.approx(0.10) and 0 < v.loss_diff_se < 0.01
    assert "1.12x slower" in v.sentence  # the better arch is slower here, and the sentence says so
    tie = verdict(finalist("searched", moe, 3.7001, 8.0, st=shifted(0.0001, seed=1)), d, 10.0)
    assert tie.winner.role == "searched" and "within noise" in tie.sentence and "1.12x faster" in tie.sentence


def test_decide_picks_per_family_and_the_largest_dense_that_fits():
    fins = [
        finalist("searched", ARCHS[0], 3.7, 9.0, st=shifted(0.0, seed=1)),
        finalist("dense", DENSE[0], 3.9, 8.0, st=shifted(0.2, seed=2)),
    ]
    big = [finalist("largest-dense", a, 3.8, ms) for a, ms in zip(DENSE[1:3], (10.5, 9.9))]
    for f, g in zip(big, (2.0, 1.5)):
        f.row.gflops = g
    sel = decide(fins + big, 10.0, measured=True)
    assert sel.winner is fins[0] and sel.dense is fins[1]
    assert sel.largest_dense is big[1]  # the larger one misses the budget measured
    assert sel.to_dict()["pool"] == {"searched": 1, "dense": 1, "largest-dense": 2}


def test_largest_orders_by_protocol_flops():
    from moenas.arch.cost import protocol_cost

    cands = [Candidate(a, 3.7, 5.0, [0.0]) for a in DENSE]
    got = largest(cands, 2)
    flops = sorted((protocol_cost(a).total_flops for a in DENSE), reverse=True)
    assert [protocol_cost(f.candidate.arch).total_flops for f in got] == flops[:2]
