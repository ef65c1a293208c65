"""The ``onnxruntime`` timing backend: CPU, and CUDA when onnxruntime has the CUDA execution
provider. Sessions are built from the in-memory export (:mod:`moenas.profiler.onnx_export`)
and fed through IOBinding, so on CUDA the KV cache stays on the device. It is the one backend
with an operator profiler (``--op-profile``): its sessions run here, the trace is parsed by
:mod:`moenas.profiler.op_profile`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from moenas.arch.family import FamilyRegistry, ModelFamily

from .backend_base import Backend, DecoderOnlyPrepared, EncoderDecoderPrepared, PreparedWorkload, register_backend
from .onnx_export import ExportedArch
from .op_profile import ops_ms, trace_node_events
from .workload import LMWorkload, Workload, WorkloadBase


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    devices = ("cpu", "cuda")
    needs_onnx = True
    PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        have = set(ort.get_available_providers())
        return tuple(d for d in cls.devices if cls.PROVIDERS[d] in have)

    def _options(self, profile_prefix: str | None = None) -> ort.SessionOptions:
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
        return {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "providers": self._providers(),
            "intra_op_num_threads": self.threads_intra,
            "inter_op_num_threads": self.threads_inter,
            "execution_mode": "sequential",
            "graph_optimization_level": "all",
            "session_from": "bytes, weights as in-memory external initializers",
            "io_binding": True,
        }

    def _providers(self) -> list[str]:
        return [self.PROVIDERS[self.device]] + (["CPUExecutionProvider"] if self.device != "cpu" else [])

    def session(self, exported: ExportedArch, part: str, profile_prefix: str | None = None) -> ort.InferenceSession:
        """Session for ``part`` of an export (a component of its family: 'encoder', 'decoder',
        'prefill', 'decode'); profiling when a prefix is given."""
        return exported.session(part, self._options(profile_prefix), self._providers())

    def _prepared(self, workload: WorkloadBase, sessions: list[ort.InferenceSession]) -> PreparedWorkload:
        """The prepared workload of ``workload``'s family on ``sessions`` (one per component)."""
        return PREPARED.for_family(workload.family)(self, workload, *sessions)

    def prepare(self, workload: WorkloadBase) -> PreparedWorkload:
        exp = workload.onnx()
        return self._prepared(workload, [self.session(exp, part) for part in workload.family.components])

    def op_profile(self, workload: WorkloadBase, runs: int = 3) -> dict[str, dict[str, float]]:
        """{component: {op_type: ms per run}} from a separate set of profiling sessions (never
        the ones whose latency is recorded: profiling adds overhead). The first component runs
        once in set-up (profiled too), every later one once as warm-up, then all of them
        ``runs`` times: each component's trace covers ``runs`` + 1 runs."""
        exp = workload.onnx()
        parts = workload.family.components
        with tempfile.TemporaryDirectory(prefix="moenas-opprof-") as tmp:
            sessions = [self.session(exp, part, os.path.join(tmp, part)) for part in parts]
            prepared = self._prepared(workload, sessions)  # its set-up run of the first component is profiled too
            for part in parts[1:]:  # warm-up
                getattr(prepared, f"run_{part}")()
            for _ in range(runs):
                for part in parts:
                    getattr(prepared, f"run_{part}")()
            events = [trace_node_events(sess.end_profiling()) for sess in sessions]
            prepared.close()
        return {part: ops_ms(ev, runs + 1) for part, ev in zip(parts, events)}


class _OrtPrepared:
    """What every family's onnxruntime prepared workload shares: device values, the last logits."""

    dev: str
    family: ClassVar[ModelFamily]
    _last: ort.OrtValue | None

    def _value(self, a: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.dev, 0)

    def logits(self) -> np.ndarray:
        if self._last is None:
            getattr(self, f"run_{self.family.components[-1]}")()
        return self._last.numpy()


class OrtPreparedWorkload(_OrtPrepared, EncoderDecoderPrepared):
    """Feeds and fetches through IOBinding so that on CUDA the KV cache stays on the device."""

    def __init__(
        self, backend: OnnxRuntimeBackend, workload: Workload, enc: ort.InferenceSession, dec: ort.InferenceSession
    ):
        self.enc, self.dec = enc, dec
        self.dev = "cuda" if backend.device == "cuda" else "cpu"
        p = workload.protocol
        self.src = self._value(workload.src.numpy())
        self.tokens = [self._value(t.numpy()) for t in workload.step_tokens]
        self.enc_out = [o.name for o in enc.get_outputs()]
        cross = enc.run(None, {"src": workload.src.numpy()})  # untimed: feeds the decoder
        self.cross = {n: self._value(np.repeat(c, p.beam, axis=0)) for n, c in zip(self.enc_out, cross)}
        self.past_names = [i.name for i in dec.get_inputs() if i.name.startswith("past_")]
        self.dec_out = [o.name for o in dec.get_outputs()]
        arch = workload.arch
        self.empty = []
        for layer in arch.decoder.layers:
            for _ in "kv":
                shape = (p.decoder_batch, layer.heads, 0, arch.qkv_dim // layer.heads)
                self.empty.append(self._value(np.zeros(shape, np.float32)))
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

    def close(self) -> None:
        self.enc = self.dec = None
        self.cross, self.tokens, self.empty, self._last = {}, [], [], None


class OrtLMPreparedWorkload(_OrtPrepared, DecoderOnlyPrepared):
    """The prefill and decode sessions fed through IOBinding (on CUDA the cache stays on the
    device); the prompt's cache that every ``run_decode`` starts from is computed here, untimed."""

    def __init__(
        self,
        backend: OnnxRuntimeBackend,
        workload: LMWorkload,
        prefill: ort.InferenceSession,
        decode: ort.InferenceSession,
    ):
        self.prefill, self.decode = prefill, decode
        self.dev = "cuda" if backend.device == "cuda" else "cpu"
        self.prompt_feeds = [("input_ids", self._value(workload.prompt.numpy()))]
        self.tokens = [self._value(t.numpy()) for t in workload.decode_tokens]
        self.prefill_out = [o.name for o in prefill.get_outputs()]
        self.past_names = [i.name for i in decode.get_inputs() if i.name.startswith("past_key_values.")]
        self.decode_out = [o.name for o in decode.get_outputs()]
        self.cache = self._run(self.prefill, self.prompt_feeds, self.prefill_out, sync=True).get_outputs()[1:]
        self._last: ort.OrtValue | None = None

    def _run(
        self, sess: ort.InferenceSession, feeds: list[tuple[str, ort.OrtValue]], outputs: list[str], sync: bool
    ) -> ort.IOBinding:
        """One run of ``sess`` with ``feeds`` bound, ``outputs`` on the device; waits for the
        device when ``sync``."""
        io = sess.io_binding()
        for name, value in feeds:
            io.bind_ortvalue_input(name, value)
        for name in outputs:
            io.bind_output(name, self.dev)
        sess.run_with_iobinding(io)
        if sync and self.dev != "cpu":
            io.synchronize_outputs()
        return io

    def run_prefill(self) -> None:
        self._run(self.prefill, self.prompt_feeds, self.prefill_out, sync=True)

    def run_decode(self) -> None:
        past, last = self.cache, len(self.tokens) - 1
        for i, tok in enumerate(self.tokens):
            outs = self._run(
                self.decode, [("input_ids", tok), *zip(self.past_names, past)], self.decode_out, sync=i == last
            ).get_outputs()
            past = outs[1:]
        self._last = outs[0]

    def close(self) -> None:
        self.prefill = self.decode = None
        self.prompt_feeds, self.tokens, self.cache, self._last = [], [], [], None


# family name -> the onnxruntime prepared workload of that family (on one session per component)
PREPARED: FamilyRegistry[type[PreparedWorkload]] = FamilyRegistry(
    "onnxruntime prepared workload", (OrtPreparedWorkload, OrtLMPreparedWorkload)
)
