"""Import hygiene: no triton needed to import or use the torch path; clear errors otherwise.

Runs in a subprocess because the test process has TRITON_INTERPRET=1 and triton loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch

    # 1) triton absent: the package imports, the torch path works, triton fails clearly
    sys.modules["triton"] = None  # makes `import triton` raise ImportError
    import importlib.util
    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda n, *a: None if n == "triton" else real_find_spec(n, *a)
    import moenas.moe_kernels as mk
    from moenas.moe_kernels import op
    importlib.util.find_spec = real_find_spec
    assert not mk.triton_available()
    x, ids, tw = torch.randn(3, 4), torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1)
    w = torch.randn(5, 4)
    out = mk.moe_ffn(x, ids, tw, w, None, w, None, (5,))  # auto -> torch
    assert out.shape == (3, 4)
    try:
        mk.moe_ffn(x, ids, tw, w, None, w, None, (5,), backend="triton")
        raise SystemExit("expected an error without triton")
    except RuntimeError as e:
        assert "triton is not installed" in str(e), e
    assert "moenas.moe_kernels.kernels" not in sys.modules
    for name in list(sys.modules):
        if name.startswith("moenas"):
            assert not name.startswith(("moenas.arch", "moenas.search", "moenas.profiler",
                                        "moenas.predictor", "moenas.data")), name

    # 2) triton present but no interpreter: CPU tensors get a clear error
    del sys.modules["triton"]
    op._TRITON_IMPORTABLE = True
    assert mk.triton_available() and not mk.triton_available("cpu")
    try:
        mk.moe_ffn(x, ids, tw, w, None, w, None, (5,), backend="triton")
        raise SystemExit("expected an error on CPU without the interpreter")
    except RuntimeError as e:
        assert "TRITON_INTERPRET=1" in str(e), e
    print("OK")
    """
)


def test_imports_without_triton_and_cpu_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU-only view even on a GPU machine
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout + res.stderr
