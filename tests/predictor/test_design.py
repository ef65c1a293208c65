"""Profiling designs: which archs to measure (moenas.predictor.design, `moenas profile --design`)."""

import numpy as np
import pytest

from moenas.arch import SearchSpace, UserError
from moenas.cli import build_parser
from moenas.data.profiles import read_profiles, shipped, write_profiles
from moenas.predictor.dataset import load_dataset
from moenas.predictor.design import DESIGNS, MIN_MEASURED, choose, design_matrix, maximin

POOL = SearchSpace.load("tiny").sample_n(200, seed=3)


def _min_pairwise(x):
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    return d[np.triu_indices(len(x), 1)].min()


@pytest.mark.parametrize("design", DESIGNS)
def test_each_design_picks_n_distinct_pool_archs_never_one_already_measured(design):
    measured = POOL[:8]
    y = np.linspace(1.0, 3.0, len(measured))
    got = choose(design, POOL, 20, measured, y, seed=1)
    assert len(got) == len(set(got)) == 20
    assert not {POOL[i].arch_id for i in got} & {a.arch_id for a in measured}
    assert got == choose(design, POOL, 20, measured, y, seed=1)  # seeded


def test_a_design_cannot_pick_more_than_the_pool_has_left():
    assert sorted(choose("space-filling", POOL[:10], 50, POOL[:4])) == list(range(4, 10))


def test_space_filling_spreads_the_picks_wider_than_random():
    x, _ = design_matrix(POOL)
    sf, rnd = choose("space-filling", POOL, 15), choose("random", POOL, 15, seed=0)
    assert _min_pairwise(x[sf]) > _min_pairwise(x[rnd])


def test_maximin_starts_at_the_extreme_and_keeps_away_from_fixed_rows():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [10.5]])
    assert maximin(x, 1) == [4]  # farthest from the centre (4.7)
    assert maximin(x, 2, fixed=np.array([[10.0]])) == [0, 2]
    assert maximin(x, 1, weight=np.array([0, 0, 5.0, 0, 0])) == [2]


def test_uncertainty_needs_measurements_before_it_differs_from_space_filling():
    few = POOL[: MIN_MEASURED - 1]
    y = np.ones(len(few))
    assert choose("uncertainty", POOL, 10, few, y) == choose("space-filling", POOL, 10, few, y)
    many = POOL[:30]
    y = np.array([1.0 + i % 7 for i in range(30)])
    assert choose("uncertainty", POOL, 10, many, y) != choose("space-filling", POOL, 10, many, y)


def test_unknown_design_is_a_user_error():
    with pytest.raises(UserError, match="unknown design"):
        choose("clever", POOL, 3)


def _profile_args(*extra):
    return build_parser().parse_args(["profile", "--space", "tiny", *extra])


def test_profile_design_grows_a_resumed_dataset_to_n(tmp_path):
    from moenas.commands.profile import profile_config

    df, meta = read_profiles(shipped("tiny-cpu-ort"))
    ids = sorted(df["arch_id"].unique())[:12]
    out = tmp_path / "d.parquet"
    write_profiles(out, df[df["arch_id"].isin(ids)], meta)
    have = load_dataset([out]).archs
    args = _profile_args("--n", "20", "--design", "uncertainty", "--pool", "100", "--resume", "--out", str(out))
    archs = profile_config(args, out).archs
    assert len(archs) == 20 and [a.arch_id for a in archs[: len(have)]] == [a.arch_id for a in have]
    assert len({a.arch_id for a in archs}) == 20
    space = SearchSpace.load("tiny")
    assert all(space.contains(a) for a in archs)


def test_profile_random_design_is_todays_sample(tmp_path):
    from moenas.commands.profile import profile_config

    out = tmp_path / "r.parquet"
    archs = profile_config(_profile_args("--n", "6", "--seed", "2", "--out", str(out)), out).archs
    assert [a.arch_id for a in archs] == [a.arch_id for a in SearchSpace.load("tiny").sample_n(6, seed=2)]
    sf = profile_config(_profile_args("--n", "6", "--design", "space-filling", "--out", str(out)), out).archs
    assert len(sf) == 6 and [a.arch_id for a in sf] != [a.arch_id for a in archs]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pool", "50"], "--pool is what --design"),
        (["--design", "space-filling", "--archs", "x.jsonl"], "with --archs FILE every arch"),
    ],
)
def test_profile_design_flags_that_cannot_apply_are_refused(tmp_path, extra, message):
    from moenas.commands.profile import profile_config

    out = tmp_path / "x.parquet"
    with pytest.raises(UserError, match=message):
        profile_config(_profile_args("--n", "3", "--out", str(out), *extra), out)
