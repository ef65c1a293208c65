"""The contract every timing backend passes (optuna ``testing/`` style).

A new backend gets tested by registering it: ``tests/profiler/test_profiler_backends.py``
parametrizes :func:`backend_cases` over every registered backend and every device it reports
as available, and runs :func:`check_backend_contract` on each, for every model family (its
:data:`CONTRACT_ARCHS` arch under its :data:`CONTRACT_PROTOCOLS` protocol: a new family is
covered once it registers both). Third-party code can call the same function on its own class.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from moenas.arch import Arch, LayerArch, StackArch, UserError
from moenas.arch.arch import AnyArch, LMArch
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, TOTAL, FamilyRegistry, ModelFamily
from moenas.arch.protocol import LatencyProtocol, LMProtocol, Protocol

from .backends import BACKENDS, Backend, PreparedWorkload, get_backend
from .workload import make_workload

# A small protocol that keeps the contract fast but exercises every feature: batch > 1,
# beam > 1, several decoder steps (past length 0, 1, 2).
CONTRACT_PROTOCOL = LatencyProtocol(batch=2, src_len=5, decoder_steps=3, beam=2)
# The decoder-only family's: batch > 1, a prompt of several tokens, several decode steps
# (cache length 5, 6, 7).
CONTRACT_LM_PROTOCOL = LMProtocol(batch=2, prompt_len=5, decode_steps=3)
# family name -> the contract's protocol of that family
CONTRACT_PROTOCOLS: FamilyRegistry[Protocol] = FamilyRegistry(
    "backend contract protocol", (CONTRACT_PROTOCOL, CONTRACT_LM_PROTOCOL)
)


def contract_arch() -> Arch:
    """Tiny-scale arch with MoE layers in encoder and decoder, uneven heads, cross span 2."""
    return Arch(
        encoder=StackArch(64, (LayerArch(2, (128, 256, 128)), LayerArch(4, (256,)))),
        decoder=StackArch(64, (LayerArch(2, (128, 512), 4, 2), LayerArch(4, (256,), 2, 1))),
        top_k=1,
        qkv_dim=128,
        vocab_size=500,
    )


def contract_lm_arch() -> LMArch:
    """Tiny decoder-only arch: an MoE layer and a dense one, uneven heads, top-2 routing."""
    return LMArch(
        decoder=StackArch(64, (LayerArch(2, (128, 256, 128)), LayerArch(4, (256,)))),
        top_k=2,
        qkv_dim=128,
        vocab_size=500,
    )


# family name -> the contract's arch of that family
CONTRACT_ARCHS: FamilyRegistry[Callable[[], AnyArch]] = FamilyRegistry(
    "backend contract arch", {ENCODER_DECODER: contract_arch, DECODER_ONLY: contract_lm_arch}
)


def family_contract_arch(family: ModelFamily | str) -> AnyArch:
    """The contract's arch of ``family`` (a ModelFamily or its name)."""
    return CONTRACT_ARCHS.for_family(family)()


def contract_protocol(arch: AnyArch) -> Protocol:
    """The contract's protocol for ``arch``'s family."""
    return CONTRACT_PROTOCOLS.for_family(arch.family)


def backend_cases() -> list[tuple[str, str]]:
    """(backend name, device) for every registered backend and each device available here."""
    return [(name, dev) for name, cls in sorted(BACKENDS.items()) for dev in cls.available_devices()]


def check_backend_contract(name: str, device: str, arch: AnyArch | None = None, atol: float = 1e-4) -> None:
    """AssertionError naming the first promise backend ``name`` on ``device`` breaks, for
    ``arch``'s model family (default: :func:`contract_arch`, encoder-decoder; another family's:
    :func:`family_contract_arch`) under its :func:`contract_protocol`."""
    arch = arch or contract_arch()
    be = get_backend(name, device, 1, 1)
    assert isinstance(be, Backend)
    # session options name the thread counts explicitly
    so = be.session_options()
    assert so["intra_op_num_threads"] == 1, so
    assert isinstance(so["inter_op_num_threads"], int), so
    w = make_workload(arch, contract_protocol(arch))
    ref = w.reference()
    prepared = be.prepare(w)
    assert isinstance(prepared, PreparedWorkload) and prepared.family is arch.family, type(prepared)
    runs = [getattr(prepared, f"run_{c}") for c in prepared.family.components]
    try:
        # computes the protocol's workload: final-step logits equal the torch CPU reference
        for run in runs:
            run()
        got = prepared.logits()
        assert got.shape == ref["logits"].shape == (w.logit_rows, arch.vocab_size)
        err = float(np.abs(got - ref["logits"]).max())
        assert err <= atol, f"{name}/{device}: logits differ from the torch reference by {err:g}"
        # repeatable (the last component again: decoder steps from an empty cache, decode
        # steps from the prompt's cache)
        runs[-1]()
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
