"""The timing-backend interface and the registry it plugs into.

A :class:`Backend` (one runtime on one device with explicit thread counts) turns a workload
(:func:`~moenas.profiler.workload.make_workload`: one arch under one latency protocol) into a
:class:`PreparedWorkload` of the workload's model family (:mod:`moenas.arch.family`), with one
synchronous ``run_<component>`` per component: for encoder-decoder
(:class:`EncoderDecoderPrepared`), ``run_encoder`` / ``run_decoder`` execute the protocol's
encoder and its decoder steps; for decoder-only (:class:`DecoderOnlyPrepared`), ``run_prefill``
/ ``run_decode`` the prompt's pass and the decode steps (a GPU backend synchronises before
returning). The profiler times :meth:`PreparedWorkload.step`; everything else (export, session
creation, input upload, the untimed encoder or prefill pass whose output feeds the timed
decoder or decode steps) happens in :meth:`Backend.prepare`, which dispatches on the
workload's family.

Adding a backend = a module that subclasses :class:`Backend` and a prepared class per family
it times, and decorates the backend with
:func:`register_backend`, imported by :mod:`moenas.profiler.backends` (which is where callers
get backends from); the shared contract (:mod:`moenas.profiler.testing`) then covers it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from moenas.arch import UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, TOTAL, ModelFamily

from .workload import WorkloadBase


class PreparedWorkload(ABC):
    """A workload made ready to time on one backend (sessions built, inputs on the device,
    the untimed set-up pass done). ``run_*`` must be synchronous. A backend's class derives
    from its family's :class:`EncoderDecoderPrepared` or :class:`DecoderOnlyPrepared`."""

    # what step() times: one run_<component> method per component, in the family's order
    family: ClassVar[ModelFamily] = ENCODER_DECODER

    @abstractmethod
    def logits(self) -> np.ndarray:
        """Final-step logits of the last run of the family's last component as a
        (:attr:`~moenas.profiler.workload.WorkloadBase.logit_rows`, V) float32 array."""

    def step(self) -> dict[str, float]:
        """One timed repetition: seconds per component of :attr:`family` (run in its order, back
        to back) and their sum under :data:`~moenas.arch.family.TOTAL`."""
        runs = [(c, getattr(self, f"run_{c}")) for c in self.family.components]  # looked up before the clock starts
        out: dict[str, float] = {}
        start = t0 = time.perf_counter()
        for comp, run in runs:
            run()
            t1 = time.perf_counter()
            out[comp], t0 = t1 - t0, t1
        out[TOTAL] = t0 - start
        return out

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions / device memory."""


class EncoderDecoderPrepared(PreparedWorkload):
    """``run_encoder``: encode + cross keys/values of the (batch, src_len) source;
    ``run_decoder``: the protocol's decoder steps on batch * beam rows (from an empty cache)."""

    family: ClassVar[ModelFamily] = ENCODER_DECODER

    @abstractmethod
    def run_encoder(self) -> None: ...

    @abstractmethod
    def run_decoder(self) -> None: ...


class DecoderOnlyPrepared(PreparedWorkload):
    """``run_prefill``: the (batch, prompt_len) prompt in one pass, producing the KV cache;
    ``run_decode``: ``decode_steps`` single-token steps on the growing cache, starting from the
    prompt's cache computed (untimed) when the workload was prepared."""

    family: ClassVar[ModelFamily] = DECODER_ONLY

    @abstractmethod
    def run_prefill(self) -> None: ...

    @abstractmethod
    def run_decode(self) -> None: ...


class Backend(ABC):
    """One runtime on one device with explicit intra-/inter-op thread counts."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]]
    needs_onnx: ClassVar[bool] = False

    def __init__(self, device: str = "cpu", threads_intra: int = 1, threads_inter: int = 1):
        if device not in self.available_devices():
            have = ", ".join(self.available_devices()) or "none"
            raise UserError(f"backend {self.name!r} has no device {device!r} on this machine (available: {have})")
        if threads_intra < 1 or threads_inter < 1:
            raise UserError("thread counts must be >= 1")
        self.device, self.threads_intra, self.threads_inter = device, threads_intra, threads_inter

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        return cls.devices

    @abstractmethod
    def session_options(self) -> dict[str, Any]:
        """Everything about how the runtime is configured (recorded per row)."""

    @abstractmethod
    def prepare(self, workload: WorkloadBase) -> PreparedWorkload:
        """``workload`` prepared on this backend: the prepared class of its family."""

    def op_profile(self, workload: WorkloadBase, runs: int = 3) -> dict[str, dict[str, float]]:
        """ms per operator type per component; only runtimes with a profiler implement it."""
        raise UserError(f"backend {self.name!r} has no operator profiler (use --backend onnxruntime)")


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` available as ``--backend cls.name``."""
    BACKENDS[cls.name] = cls
    return cls
