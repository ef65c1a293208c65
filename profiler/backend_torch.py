"""The ``torch`` timing backend (eager, ``inference_mode``; CPU, CUDA) and its ``triton``
variant, whose MoE layers run on the grouped heterogeneous-expert kernels of
:mod:`moenas.moe_kernels` (CUDA only)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from moenas.arch.family import FamilyRegistry, ModelFamily
from moenas.moe_kernels import triton_available

from .backend_base import Backend, DecoderOnlyPrepared, EncoderDecoderPrepared, PreparedWorkload, register_backend
from .workload import LMWorkload, Workload, WorkloadBase, empty_cache


@register_backend
class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda")
    moe_backend: ClassVar[str] = "torch"

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

    def _set_threads(self) -> None:
        torch.set_num_threads(self.threads_intra)
        try:
            torch.set_num_interop_threads(self.threads_inter)
        except RuntimeError:  # settable once per process, before any inter-op work
            pass

    def session_options(self) -> dict[str, Any]:
        self._set_threads()
        return {
            "runtime": "torch",
            "version": torch.__version__,
            "mode": "eager",
            "inference_mode": True,
            "moe_backend": self.moe_backend,
            "intra_op_num_threads": torch.get_num_threads(),
            "inter_op_num_threads": torch.get_num_interop_threads(),
        }

    def prepare(self, workload: WorkloadBase) -> PreparedWorkload:
        self._set_threads()
        return PREPARED.for_family(workload.family)(self, workload)


class _TorchPrepared:
    """What every family's torch prepared workload shares: the device, the last logits, release."""

    cuda: bool
    model: torch.nn.Module | None
    _last: torch.Tensor | None
    family: ClassVar[ModelFamily]

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def logits(self) -> np.ndarray:
        if self._last is None:
            getattr(self, f"run_{self.family.components[-1]}")()
        return self._last.float().cpu().numpy()

    def close(self) -> None:
        self.model = self._last = None
        if self.cuda:
            torch.cuda.empty_cache()


class TorchPreparedWorkload(_TorchPrepared, EncoderDecoderPrepared):
    """The workload's model on the backend's device, the cross keys/values tiled to the beam."""

    def __init__(self, backend: TorchBackend, workload: Workload):
        dev = torch.device(backend.device)
        self.cuda = dev.type == "cuda"
        self.model = workload.build_model(backend.device, backend.moe_backend)
        p = workload.protocol
        self.beam, self.batch = p.beam, p.decoder_batch
        self.src = workload.src.to(dev)
        self.tokens = [t.to(dev) for t in workload.step_tokens]
        self.dev = dev
        with torch.inference_mode():
            states, _ = self.model.encode(self.src)
            self.cross = [
                (k.repeat_interleave(self.beam, 0), v.repeat_interleave(self.beam, 0), None)
                for k, v, _ in self.model.cross_kv(states, None)
            ]
        self._sync()
        self._last: torch.Tensor | None = None

    def run_encoder(self) -> None:
        with torch.inference_mode():
            states, _ = self.model.encode(self.src)
            self.model.cross_kv(states, None)
        self._sync()

    def run_decoder(self) -> None:
        with torch.inference_mode():
            cache = empty_cache(self.model, self.batch, self.dev)
            for tok in self.tokens:
                logits, cache = self.model.step(tok, cache, self.cross)
        self._sync()
        self._last = logits

    def close(self) -> None:
        self.cross = None
        super().close()


class TorchLMPreparedWorkload(_TorchPrepared, DecoderOnlyPrepared):
    """The workload's ``CausalLM`` on the backend's device and the prompt's KV cache (computed
    here, untimed) that every ``run_decode`` starts from."""

    def __init__(self, backend: TorchBackend, workload: LMWorkload):
        dev = torch.device(backend.device)
        self.cuda = dev.type == "cuda"
        self.model = workload.build_model(backend.device, backend.moe_backend)
        self.prompt = workload.prompt.to(dev)
        self.tokens = [t.to(dev) for t in workload.decode_tokens]
        with torch.inference_mode():
            _, self.cache = self.model.prefill(self.prompt)
        self._sync()
        self._last: torch.Tensor | None = None

    def run_prefill(self) -> None:
        with torch.inference_mode():
            self.model.prefill(self.prompt)
        self._sync()

    def run_decode(self) -> None:
        with torch.inference_mode():
            cache = self.cache
            for tok in self.tokens:
                logits, cache = self.model.step(tok, cache)
        self._sync()
        self._last = logits

    def close(self) -> None:
        self.cache = None
        super().close()


# family name -> the torch prepared workload of that family (what ``prepare`` builds)
PREPARED: FamilyRegistry[type[PreparedWorkload]] = FamilyRegistry(
    "torch prepared workload", (TorchPreparedWorkload, TorchLMPreparedWorkload)
)


@register_backend
class TritonBackend(TorchBackend):
    """Torch eager with the MoE layers on the grouped heterogeneous-expert Triton kernels
    (moenas.moe_kernels), so GPU predictors can cover them. CUDA only: on a CPU the kernels
    would run in Triton's interpreter, which times nothing real."""

    name = "triton"
    devices = ("cuda",)
    moe_backend: ClassVar[str] = "triton"

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        return ("cuda",) if torch.cuda.is_available() and triton_available("cuda") else ()
