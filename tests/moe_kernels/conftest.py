"""Test setup for moenas.moe_kernels.

Without a CUDA GPU the Triton kernels run under the Triton interpreter: tests/conftest.py sets
``TRITON_INTERPRET`` by one rule (no ``torch.cuda.is_available()``: interpreter), before
anything imports triton. The kernels' device here follows the same test, so a machine that
runs compiled kernels tests them on the GPU and one that interprets them tests them on CPU.
"""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture
def nan_fill():
    """Fill every buffer the Triton kernels must write with NaN before the launch."""
    from moenas.moe_kernels import launch

    old = launch.DEBUG_FILL
    launch.DEBUG_FILL = float("nan")
    try:
        yield
    finally:
        launch.DEBUG_FILL = old


@pytest.fixture
def small_config():
    """Small blocks (tl.dot needs >= 16) so that tiny shapes span several and partial tiles."""
    from moenas.moe_kernels import GemmConfig, MoEKernelConfig, WgradConfig

    g = GemmConfig(block_m=16, block_n=16, block_k=16, group_m=2, num_warps=4, num_stages=1)
    return MoEKernelConfig(
        up=g, down=g, wgrad=WgradConfig(block_h=16, block_d=16, block_r=16, num_warps=4, num_stages=1)
    )
