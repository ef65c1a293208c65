"""Routing metadata for grouped-expert kernels (pure PyTorch, no host synchronisation).

From the router's top-k choice ``topk_ids`` (T, k) we build:

* ``sorted_slots`` (T*k,) int32: the *slots* ``t*k + j`` reordered so that all slots routed to
  expert 0 come first, then expert 1, ... (stable: ascending slot, hence ascending token, inside
  an expert). Row ``r`` of every grouped buffer (hidden activations etc.) belongs to slot
  ``sorted_slots[r]``, token ``sorted_slots[r] // k``.
* ``expert_offsets`` (E+1,) int32: expert ``e`` owns rows ``offsets[e]:offsets[e+1]``.
* ``expert_counts`` (E,) int32.
* the **tile table** the kernels iterate over: M-tile ``i`` covers rows
  ``tile_row_start[i] : min(tile_row_start[i] + block_m, offsets[e+1])`` of expert
  ``e = tile_expert[i]``; unused trailing tiles have ``tile_expert = -1`` and exit at once.
  Tokens are never padded to block multiples in memory: a partial tile is masked in-kernel.

The number of tiles depends on the counts, which live on the device. To avoid a host sync (and
stay CUDA-graph and torch.compile friendly) the table has a fixed length, an upper bound:
``sum_e ceil(c_e / bm) <= floor(T*k / bm) + min(E, T*k)`` and ``<= T*k``.

The weight-gradient kernel iterates over *hidden* tiles instead; their table depends only on the
python-int hidden sizes and is built on the host (:func:`hidden_tile_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "RoutingMeta",
    "build_routing",
    "sort_slots",
    "max_m_tiles",
    "build_tile_table",
    "hidden_tile_table",
    "hidden_offsets_tensor",
]


@dataclass(frozen=True)
class RoutingMeta:
    """Grouping of token-slots by expert plus the M-tile table for one ``block_m``."""

    num_tokens: int
    topk: int
    num_experts: int
    block_m: int
    sorted_slots: Tensor  # (T*k,) int32
    expert_offsets: Tensor  # (E+1,) int32
    expert_counts: Tensor  # (E,) int32
    tile_expert: Tensor  # (max_tiles,) int32, -1 = unused tile
    tile_row_start: Tensor  # (max_tiles,) int32

    @property
    def num_slots(self) -> int:
        return self.num_tokens * self.topk

    @property
    def max_tiles(self) -> int:
        return int(self.tile_expert.numel())

    @property
    def sorted_tokens(self) -> Tensor:
        """Token id of each sorted row, (T*k,) int64."""
        return self.sorted_slots.long() // self.topk

    def inverse_permutation(self) -> Tensor:
        """Row of each slot in the sorted order, (T*k,) int64 (``inv[sorted_slots[r]] == r``)."""
        inv = torch.empty_like(self.sorted_slots, dtype=torch.long)
        inv[self.sorted_slots.long()] = torch.arange(self.num_slots, device=self.sorted_slots.device)
        return inv

    def num_valid_tiles(self) -> int:
        """Number of used tiles (host sync; for tests and profiling only)."""
        return int((self.tile_expert >= 0).sum().item())


def sort_slots(topk_ids: Tensor, num_experts: int) -> tuple[Tensor, Tensor]:
    """Return ``(sorted_slots int32, expert_offsets int32)`` for ``topk_ids`` (T, k).

    Expert ids must lie in ``[0, num_experts)``; ids outside are not checked here (that would
    need a host sync) and their slots fall outside every expert's row range.
    """
    flat = topk_ids.reshape(-1)
    sorted_ids, order = torch.sort(flat, stable=True)
    bounds = torch.arange(num_experts + 1, device=flat.device, dtype=sorted_ids.dtype)
    offsets = torch.searchsorted(sorted_ids, bounds, right=False)
    return order.to(torch.int32), offsets.to(torch.int32)


def max_m_tiles(num_slots: int, num_experts: int, block_m: int) -> int:
    """Upper bound on the number of M-tiles over all experts (see module docstring)."""
    if num_slots <= 0:
        return 0
    return min(num_slots, num_slots // block_m + min(num_experts, num_slots))


def build_tile_table(expert_offsets: Tensor, num_slots: int, block_m: int) -> tuple[Tensor, Tensor]:
    """M-tile table ``(tile_expert, tile_row_start)`` (int32, fixed length, -1 = unused)."""
    num_experts = expert_offsets.numel() - 1
    n_tiles = max_m_tiles(num_slots, num_experts, block_m)
    device = expert_offsets.device
    offs = expert_offsets.long()
    counts = offs[1:] - offs[:-1]
    tiles_per_e = (counts + block_m - 1) // block_m
    tile_end = torch.cumsum(tiles_per_e, 0)  # inclusive
    tile_begin = tile_end - tiles_per_e
    i = torch.arange(n_tiles, device=device, dtype=torch.long)
    e = torch.searchsorted(tile_end, i, right=True)  # in [0, E]; E = past the last tile
    valid = e < num_experts
    e_c = e.clamp(max=max(num_experts - 1, 0))
    row = offs[e_c] + (i - tile_begin[e_c]) * block_m
    tile_expert = torch.where(valid, e, torch.full_like(e, -1)).to(torch.int32)
    tile_row = torch.where(valid, row, torch.zeros_like(row)).to(torch.int32)
    return tile_expert, tile_row


def build_routing(topk_ids: Tensor, num_experts: int, block_m: int = 64) -> RoutingMeta:
    """Build the :class:`RoutingMeta` for router output ``topk_ids`` (T, k) (or (T,) for k=1)."""
    if topk_ids.dim() == 1:
        topk_ids = topk_ids[:, None]
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids must be (T, k), got shape {tuple(topk_ids.shape)}")
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")
    if block_m < 1:
        raise ValueError(f"block_m must be >= 1, got {block_m}")
    t, k = topk_ids.shape
    sorted_slots, offsets = sort_slots(topk_ids, num_experts)
    tile_expert, tile_row = build_tile_table(offsets, t * k, block_m)
    return RoutingMeta(
        num_tokens=int(t),
        topk=int(k),
        num_experts=int(num_experts),
        block_m=int(block_m),
        sorted_slots=sorted_slots,
        expert_offsets=offsets,
        expert_counts=(offsets[1:] - offsets[:-1]).to(torch.int32),
        tile_expert=tile_expert,
        tile_row_start=tile_row,
    )


_HOST_TABLE_CACHE: dict[tuple, Tensor] = {}


def hidden_tile_table(hidden_sizes, block_h: int, device) -> Tensor:
    """(2, n) int32 table of hidden tiles ``(expert, first hidden unit)`` over all experts.

    Static (depends only on python ints), cached per device so that repeated calls do no copy.
    """
    key = ("htiles", tuple(int(h) for h in hidden_sizes), int(block_h), str(device))
    tab = _HOST_TABLE_CACHE.get(key)
    if tab is None:
        experts, starts = [], []
        for e, h in enumerate(key[1]):
            for n0 in range(0, h, block_h):
                experts.append(e)
                starts.append(n0)
        tab = torch.tensor([experts, starts], dtype=torch.int32).reshape(2, -1).to(device)
        _HOST_TABLE_CACHE[key] = tab
    return tab


def hidden_offsets_tensor(hidden_sizes, device) -> Tensor:
    """(E+1,) int32 exclusive cumsum of ``hidden_sizes`` on ``device`` (cached)."""
    key = ("hoffs", tuple(int(h) for h in hidden_sizes), str(device))
    tab = _HOST_TABLE_CACHE.get(key)
    if tab is None:
        offs = [0]
        for h in key[1]:
            offs.append(offs[-1] + h)
        tab = torch.tensor(offs, dtype=torch.int32).to(device)
        _HOST_TABLE_CACHE[key] = tab
    return tab
