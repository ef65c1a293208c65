"""Test-only supernet helpers, importable as ``supernets``."""

from __future__ import annotations

import torch

from moenas.search.supernet import SuperNet, build_supernet


def perturbed(space, kind: str, mode: str, init: str = "copy") -> SuperNet:
    """A supernet of either family (3 MoS banks, dropout 0.1) whose weights are all nudged by
    noise, so identical initial MoS banks or symmetric inits hide no slicing or mixing error;
    in eval mode."""
    net = build_supernet(space, kind, mos_mode=mode, mos_experts=3, dropout=0.1, mos_init=init)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()
