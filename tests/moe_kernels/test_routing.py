"""Routing metadata: permutation, offsets, counts and tile table (hand-computed + properties)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moenas.moe_kernels import build_routing, triton_available
from moenas.moe_kernels.routing import hidden_tile_table, max_m_tiles


def test_hand_computed_example():
    # 3 tokens, top-2, 4 experts; expert 3 gets no token.
    # slots (t*k+j): 0->e2 1->e0 | 2->e0 3->e1 | 4->e2 5->e0
    ids = torch.tensor([[2, 0], [0, 1], [2, 0]])
    r = build_routing(ids, num_experts=4, block_m=2)
    assert r.sorted_slots.tolist() == [1, 2, 5, 3, 0, 4]  # e0: 1,2,5  e1: 3  e2: 0,4
    assert r.expert_offsets.tolist() == [0, 3, 4, 6, 6]
    assert r.expert_counts.tolist() == [3, 1, 2, 0]
    assert r.sorted_tokens.tolist() == [0, 1, 2, 1, 0, 2]
    # tiles of 2 rows: e0 -> rows [0,2) and [2,3); e1 -> [3,4); e2 -> [4,6); e3 -> none.
    # table length = min(6, 6 // 2 + min(4, 6)) = 6, two unused tiles (-1)
    assert r.tile_expert.tolist() == [0, 0, 1, 2, -1, -1]
    assert r.tile_row_start.tolist() == [0, 2, 3, 4, 0, 0]
    assert r.num_valid_tiles() == 4
    assert r.inverse_permutation().tolist() == [4, 0, 1, 3, 5, 2]
    assert r.sorted_slots.dtype == torch.int32 and r.tile_expert.dtype == torch.int32


def test_top1_single_token_single_expert():
    # one token, top-1, E = 1: one row, one tile
    r = build_routing(torch.tensor([[0]]), num_experts=1, block_m=64)
    assert r.sorted_slots.tolist() == [0]
    assert r.expert_offsets.tolist() == [0, 1]
    assert r.tile_expert.tolist() == [0]
    assert r.tile_row_start.tolist() == [0]


def test_all_tokens_to_one_expert():
    # 10 tokens all on expert 1 of 3, block 4 -> tiles at rows 0, 4, 8 of expert 1
    r = build_routing(torch.full((10, 1), 1), num_experts=3, block_m=4)
    assert r.expert_offsets.tolist() == [0, 0, 10, 10]
    assert r.sorted_slots.tolist() == list(range(10))
    valid = r.tile_expert >= 0
    assert r.tile_expert[valid].tolist() == [1, 1, 1]
    assert r.tile_row_start[valid].tolist() == [0, 4, 8]


def test_empty_input():
    r = build_routing(torch.empty(0, 2, dtype=torch.long), num_experts=3, block_m=4)
    assert r.sorted_slots.numel() == 0 and r.max_tiles == 0
    assert r.expert_offsets.tolist() == [0, 0, 0, 0]


def test_hidden_tile_table():
    # hidden sizes 5, 8, 3 with tiles of 4 -> (e, n0): (0,0) (0,4) (1,0) (1,4) (2,0)
    tab = hidden_tile_table((5, 8, 3), 4, "cpu")
    assert tab.tolist() == [[0, 0, 1, 1, 2], [0, 4, 0, 4, 0]]


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(0, 40),
    k=st.integers(1, 3),
    e=st.integers(1, 6),
    bm=st.sampled_from([1, 2, 3, 4, 16]),
    seed=st.integers(0, 2**16),
)
def test_routing_invariants(t, k, e, bm, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, e, (t, k), generator=g)
    r = build_routing(ids, num_experts=e, block_m=bm)
    n = t * k
    flat = ids.reshape(-1)
    # a permutation of the slots, grouped by expert, stable inside an expert
    ss = r.sorted_slots.long()
    assert sorted(ss.tolist()) == list(range(n))
    assert torch.equal(r.expert_counts.long(), torch.bincount(flat, minlength=e))
    offs = r.expert_offsets.tolist()
    for ex in range(e):
        seg = ss[offs[ex] : offs[ex + 1]]
        assert bool((flat[seg] == ex).all())
        assert seg.tolist() == sorted(seg.tolist())
    # tiles: every row covered exactly once, tiles never cross experts, size <= bm
    assert r.max_tiles == max_m_tiles(n, e, bm)
    covered = torch.zeros(n, dtype=torch.long)
    for ex, r0 in zip(r.tile_expert.tolist(), r.tile_row_start.tolist()):
        if ex < 0:
            continue
        r1 = min(r0 + bm, offs[ex + 1])
        assert offs[ex] <= r0 < r1
        covered[r0:r1] += 1
    assert bool((covered == 1).all())
    # used tiles come first
    te = r.tile_expert.tolist()
    nv = sum(1 for v in te if v >= 0)
    assert all(v >= 0 for v in te[:nv]) and all(v < 0 for v in te[nv:])


@pytest.mark.skipif(
    not triton_available("cuda" if torch.cuda.is_available() else "cpu"), reason="needs the Triton interpreter or a GPU"
)
@pytest.mark.parametrize("bm", [1, 4, 16])
def test_triton_tile_table_matches_torch(bm, device):
    # the one-program Triton builder gives the torch builder's table (incl. the -1 tail)
    from moenas.moe_kernels.launch import build_tile_table_triton

    g = torch.Generator().manual_seed(bm)
    for t, k, e in [(0, 1, 3), (1, 1, 1), (37, 2, 5), (300, 2, 4)]:
        ids = torch.randint(0, e, (t, k), generator=g)
        if t > 10:
            ids[: t // 2] = 0  # skewed: many tiles for expert 0, more than one BLOCK of 256
        r = build_routing(ids.to(device), num_experts=e, block_m=bm)
        te, tr = build_tile_table_triton(r.expert_offsets, t * k, bm)
        assert te.tolist() == r.tile_expert.tolist()
        assert tr.tolist() == r.tile_row_start.tolist()
