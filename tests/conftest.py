"""Shared test set-up: one thread per test process, seeded RNGs, Triton's interpreter on CPU.

TRITON_INTERPRET must be set before anything imports triton, and torch.utils.flop_counter
(used by tests/arch) does: setting it in tests/moe_kernels/conftest.py alone was too late in a
whole-suite run. A CUDA machine leaves it unset so the compiled kernels are tested."""
import os
import random
import shutil
import subprocess


def _has_cuda() -> bool:  # without importing torch (which may import triton)
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
