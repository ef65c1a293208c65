"""Shared test set-up: one thread per test process, seeded RNGs, Triton's interpreter on CPU,
and the tests' own helper modules (tests/helpers/) importable.

The one rule for TRITON_INTERPRET, applied here and nowhere else: without a CUDA device that
torch can use (``torch.cuda.is_available()``, the test that picks the kernels' device too) the
Triton kernels run under the interpreter, so TRITON_INTERPRET=1 unless the user set it; with
one it stays unset, so that the compiled kernels are tested. It must be set before anything
imports triton, and torch.utils.flop_counter (used by tests/arch) does: this conftest is
imported before any test module, and ``import torch`` itself does not import triton."""

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# --import-mode=importlib puts no test folder on sys.path; tests/helpers holds shared helpers
# (its own folder: tests/ itself holds folders named like moenas' subpackages)
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
