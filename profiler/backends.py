"""Timing backends behind one interface, and the workload they time.

A :class:`Backend` (one runtime on one device with explicit thread counts) turns a
:class:`Workload` (one arch under one :class:`~moenas.arch.protocol.LatencyProtocol`) into a
:class:`Runner`, whose ``run_encoder`` / ``run_decoder`` execute the protocol's encoder and
its decoder steps synchronously (a GPU runner synchronises before returning). The profiler
times ``Runner.step``; everything else (export, session creation, input upload, the untimed
encoder pass whose cross keys/values feed the decoder) happens in ``prepare``.

Adding a backend = subclassing :class:`Backend` (and :class:`Runner`) and decorating it with
:func:`register_backend`; the shared contract test (:mod:`moenas.profiler.testing`) then
covers it. Shipped: ``onnxruntime`` (cpu; cuda when onnxruntime has the CUDA execution
provider) and ``torch`` (eager; cpu, cuda). A Triton-kernel backend is a ``TorchBackend``
subclass with ``moe_backend = "triton"``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from moenas.arch import Arch, UserError
from moenas.arch.model import SubTransformer, build_model

from moenas.arch.protocol import LatencyProtocol

# ---- the workload --------------------------------------------------------------------------


class Workload:
    """One arch under one protocol: its seeded model, its inputs, its (lazy, cached) ONNX export
    and a torch CPU reference run of the very same inputs (outputs + per-expert token counts)."""

    def __init__(self, arch: Arch, protocol: LatencyProtocol = LatencyProtocol(), export_method: str = "torchscript"):
        self.arch, self.protocol, self.export_method = arch, protocol, export_method
        p = protocol
        g = torch.Generator().manual_seed(p.arch_seed(arch.arch_id))
        self.src = torch.randint(4, arch.vocab_size, (p.batch, p.src_len), generator=g)
        self.step_tokens = torch.randint(4, arch.vocab_size, (p.decoder_steps, p.decoder_batch, 1), generator=g)
        self._model: SubTransformer | None = None
        self._onnx = None
        self._reference: dict[str, Any] | None = None
        self.seconds: dict[str, float] = {"build": 0.0, "export": 0.0, "reference": 0.0}

    def model(self) -> SubTransformer:
        """The seeded CPU model (built once)."""
        if self._model is None:
            t = time.perf_counter()
            self._model = build_model(self.arch, self.protocol.model_seed).eval()
            self.seconds["build"] += time.perf_counter() - t
        return self._model

    def build_model(self, device: str = "cpu", moe_backend: str = "torch") -> SubTransformer:
        """A model with the same weights on ``device`` (the CPU one itself when it fits)."""
        if device == "cpu" and moe_backend == "torch":
            return self.model()
        m = build_model(self.arch, self.protocol.model_seed, moe_backend=moe_backend).eval()
        return m.to(device)

    def onnx(self):
        """The ONNX export of :meth:`model` (exported once, kept in memory)."""
        if self._onnx is None:
            from .onnx_export import export_arch

            model = self.model()
            t = time.perf_counter()
            self._onnx = export_arch(self.arch, seed=self.protocol.model_seed, method=self.export_method, model=model)
            self.seconds["export"] += time.perf_counter() - t
        return self._onnx

    def drop_onnx(self) -> None:
        self._onnx = None

    def reference(self) -> dict[str, Any]:
        """Torch CPU run of the protocol inputs: final-step logits (decoder batch, V), the flat
        cross keys/values (batch), and expert token counts ('encoder.i'/'decoder.i' -> list;
        decoder counts summed over all steps)."""
        if self._reference is None:
            t = time.perf_counter()
            m = self.model()
            beam = self.protocol.beam
            with torch.inference_mode():
                states, _ = m.encode(self.src)
                counts = {k: list(v) for k, v in m.expert_counts().items()}
                cross = m.cross_kv(states, None)
                flat = [x for k, v, _ in cross for x in (k, v)]
                cross_b = [(k.repeat_interleave(beam, 0), v.repeat_interleave(beam, 0), None) for k, v, _ in cross]
                cache = empty_cache(m, self.protocol.decoder_batch)
                for t_ in range(self.protocol.decoder_steps):
                    logits, cache = m.step(self.step_tokens[t_], cache, cross_b)
                    for k, v in m.expert_counts().items():
                        if k.startswith("decoder."):
                            counts[k] = [a + b for a, b in zip(counts.get(k, [0] * len(v)), v)]
            self._reference = {"logits": logits.numpy(), "cross": [x.numpy() for x in flat], "expert_counts": counts}
            self.seconds["reference"] += time.perf_counter() - t
        return self._reference


def empty_cache(model: SubTransformer, batch: int, device: str | torch.device = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder layer an empty (batch, heads, 0, head_dim) key/value cache."""
    out = []
    for layer in model.dec_layers:
        a = layer.self_attn
        z = torch.zeros(batch, a.heads, 0, a.head_dim, device=device)
        out.append((z, z.clone()))
    return out


# ---- the interface ---------------------------------------------------------------------------


class Runner(ABC):
    """A prepared workload on one backend. ``run_*`` must be synchronous."""

    @abstractmethod
    def run_encoder(self) -> None: ...

    @abstractmethod
    def run_decoder(self) -> None: ...

    @abstractmethod
    def logits(self) -> np.ndarray:
        """Final-step logits of the last ``run_decoder`` as a (decoder batch, V) float32 array."""

    def step(self) -> dict[str, float]:
        """One timed repetition: seconds for encoder, decoder and their sum."""
        t0 = time.perf_counter()
        self.run_encoder()
        t1 = time.perf_counter()
        self.run_decoder()
        t2 = time.perf_counter()
        return {"encoder": t1 - t0, "decoder": t2 - t1, "total": t2 - t0}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions / device memory."""


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
    def prepare(self, workload: Workload) -> Runner: ...

    def op_profile(self, workload: Workload, runs: int = 3) -> dict[str, dict[str, float]]:
        """ms per operator type per component; only runtimes with a profiler implement it."""
        raise UserError(f"backend {self.name!r} has no operator profiler (use --backend onnxruntime)")


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` available as ``--backend cls.name``."""
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str, device: str = "cpu", threads_intra: int = 1, threads_inter: int = 1) -> Backend:
    """The registered backend ``name`` on ``device``; UserError if either is not available."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r} (available: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[name](device, threads_intra, threads_inter)


def available() -> dict[str, tuple[str, ...]]:
    """Registered backend name -> the devices it can use on this machine."""
    return {n: c.available_devices() for n, c in sorted(BACKENDS.items())}


# ---- onnxruntime -------------------------------------------------------------------------------


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    devices = ("cpu", "cuda")
    needs_onnx = True
    PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        return tuple(d for d in cls.devices if cls.PROVIDERS[d] in have)

    def _options(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads_intra
        so.inter_op_num_threads = self.threads_inter
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def session_options(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "runtime": "onnxruntime", "version": ort.__version__, "providers": self._providers(),
            "intra_op_num_threads": self.threads_intra, "inter_op_num_threads": self.threads_inter,
            "execution_mode": "sequential", "graph_optimization_level": "all",
            "session_from": "bytes, weights as in-memory external initializers", "io_binding": True,
        }

    def _providers(self) -> list[str]:
        return [self.PROVIDERS[self.device]] + (["CPUExecutionProvider"] if self.device != "cpu" else [])

    def session(self, exported, part: str, profile_prefix: str | None = None):
        """Session for ``part`` of an :class:`~moenas.profiler.onnx_export.ExportedArch`."""
        return exported.session(part, self._options(profile_prefix), self._providers())

    def prepare(self, workload: Workload) -> "OrtRunner":
        exp = workload.onnx()
        return OrtRunner(self, workload, self.session(exp, "encoder"), self.session(exp, "decoder"))

    def op_profile(self, workload: Workload, runs: int = 3) -> dict[str, dict[str, float]]:
        from .op_profile import ort_op_profile

        return ort_op_profile(self, workload, runs)


class OrtRunner(Runner):
    """Feeds and fetches through IOBinding so that on CUDA the KV cache stays on the device."""

    def __init__(self, backend: OnnxRuntimeBackend, workload: Workload, enc, dec):
        import onnxruntime as ort

        self.enc, self.dec = enc, dec
        self.dev = "cuda" if backend.device == "cuda" else "cpu"
        p = workload.protocol

        def ov(a: np.ndarray):
            return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.dev, 0)

        self.src = ov(workload.src.numpy())
        self.tokens = [ov(t.numpy()) for t in workload.step_tokens]
        self.enc_out = [o.name for o in enc.get_outputs()]
        cross = enc.run(None, {"src": workload.src.numpy()})  # untimed: feeds the decoder
        self.cross = {n: ov(np.repeat(c, p.beam, axis=0)) for n, c in zip(self.enc_out, cross)}
        self.past_names = [i.name for i in dec.get_inputs() if i.name.startswith("past_")]
        self.dec_out = [o.name for o in dec.get_outputs()]
        arch = workload.arch
        self.empty = []
        for layer in arch.decoder.layers:
            for _ in "kv":
                self.empty.append(ov(np.zeros((p.decoder_batch, layer.heads, 0, arch.qkv_dim // layer.heads), np.float32)))
        self._last = None

    def run_encoder(self) -> None:
        io = self.enc.io_binding()
        io.bind_ortvalue_input("src", self.src)
        for n in self.enc_out:
            io.bind_output(n, self.dev)
        self.enc.run_with_iobinding(io)
        if self.dev != "cpu":
            io.synchronize_outputs()

    def run_decoder(self) -> None:
        past = self.empty
        io = None
        for tok in self.tokens:
            io = self.dec.io_binding()
            io.bind_ortvalue_input("tokens", tok)
            for n, v in self.cross.items():
                io.bind_ortvalue_input(n, v)
            for n, v in zip(self.past_names, past):
                io.bind_ortvalue_input(n, v)
            for n in self.dec_out:
                io.bind_output(n, self.dev)
            self.dec.run_with_iobinding(io)
            outs = io.get_outputs()
            past = outs[1:]
        if self.dev != "cpu":
            io.synchronize_outputs()
        self._last = outs[0]

    def logits(self) -> np.ndarray:
        if self._last is None:
            self.run_decoder()
        return self._last.numpy()

    def close(self) -> None:
        self.enc = self.dec = None
        self.cross, self.tokens, self.empty, self._last = {}, [], [], None


# ---- torch eager ---------------------------------------------------------------------------------


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
            "runtime": "torch", "version": torch.__version__, "mode": "eager", "inference_mode": True,
            "moe_backend": self.moe_backend, "intra_op_num_threads": torch.get_num_threads(),
            "inter_op_num_threads": torch.get_num_interop_threads(),
        }

    def prepare(self, workload: Workload) -> "TorchRunner":
        self._set_threads()
        return TorchRunner(self, workload)


class TorchRunner(Runner):
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
            self.cross = [(k.repeat_interleave(self.beam, 0), v.repeat_interleave(self.beam, 0), None)
                          for k, v, _ in self.model.cross_kv(states, None)]
        self._sync()
        self._last: torch.Tensor | None = None

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

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

    def logits(self) -> np.ndarray:
        if self._last is None:
            self.run_decoder()
        return self._last.float().cpu().numpy()

    def close(self) -> None:
        self.model = self.cross = self._last = None
        if self.cuda:
            torch.cuda.empty_cache()


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
        from moenas.moe_kernels import triton_available

        return ("cuda",) if torch.cuda.is_available() and triton_available("cuda") else ()
