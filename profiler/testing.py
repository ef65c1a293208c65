"""The contract every timing backend passes (optuna ``testing/`` style).

A new backend gets tested by registering it: ``tests/profiler/test_profiler_backends.py``
parametrizes :func:`backend_cases` over every registered backend and every device it reports
as available, and runs :func:`check_backend_contract` on each. Third-party code can call the
same function on its own class.
"""
from __future__ import annotations

import math

import numpy as np

from moenas.arch import Arch, LayerArch, StackArch, UserError
from moenas.arch.family import TOTAL
from moenas.arch.protocol import LatencyProtocol

from .backends import BACKENDS, Backend, PreparedWorkload, get_backend
from .workload import Workload

# A small protocol that keeps the contract fast but exercises every feature: batch > 1,
# beam > 1, several decoder steps (past length 0, 1, 2).
CONTRACT_PROTOCOL = LatencyProtocol(batch=2, src_len=5, decoder_steps=3, beam=2)


def contract_arch() -> Arch:
    """Tiny-scale arch with MoE layers in encoder and decoder, uneven heads, cross span 2."""
    return Arch(
        encoder=StackArch(64, (LayerArch(2, (128, 256, 128)), LayerArch(4, (256,)))),
        decoder=StackArch(64, (LayerArch(2, (128, 512), 4, 2), LayerArch(4, (256,), 2, 1))),
        top_k=1, qkv_dim=128, vocab_size=500,
    )


def backend_cases() -> list[tuple[str, str]]:
    """(backend name, device) for every registered backend and each device available here."""
    return [(name, dev) for name, cls in sorted(BACKENDS.items()) for dev in cls.available_devices()]


def check_backend_contract(name: str, device: str, arch: Arch | None = None, atol: float = 1e-4) -> None:
    """AssertionError naming the first promise backend ``name`` on ``device`` breaks."""
    arch = arch or contract_arch()
    be = get_backend(name, device, 1, 1)
    assert isinstance(be, Backend)
    # session options name the thread counts explicitly
    so = be.session_options()
    assert so["intra_op_num_threads"] == 1, so
    assert isinstance(so["inter_op_num_threads"], int), so
    w = Workload(arch, CONTRACT_PROTOCOL)
    ref = w.reference()
    prepared = be.prepare(w)
    assert isinstance(prepared, PreparedWorkload)
    try:
        # computes the protocol's workload: final-step logits equal the torch CPU reference
        prepared.run_encoder()
        prepared.run_decoder()
        got = prepared.logits()
        assert got.shape == ref["logits"].shape == (CONTRACT_PROTOCOL.decoder_batch, arch.vocab_size)
        err = float(np.abs(got - ref["logits"]).max())
        assert err <= atol, f"{name}/{device}: logits differ from the torch reference by {err:g}"
        # repeatable
        prepared.run_decoder()
        assert float(np.abs(prepared.logits() - got).max()) <= atol
        # one timed repetition: a positive, finite time per component of the family, and their total
        t = prepared.step()
        assert list(t) == list(prepared.family.row_components)
        assert all(math.isfinite(v) and v > 0 for v in t.values())
        assert abs(t[TOTAL] - sum(t[c] for c in prepared.family.components)) <= 1e-6 + 1e-3 * t[TOTAL]
    finally:
        prepared.close()
    # a device this backend does not have is a UserError
    try:
        get_backend(name, "no-such-device")
    except UserError:
        pass
    else:  # pragma: no cover - contract violation
        raise AssertionError(f"{name}: an unknown device must raise UserError")
