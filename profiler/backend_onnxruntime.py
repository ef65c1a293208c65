"""The ``onnxruntime`` timing backend: CPU, and CUDA when onnxruntime has the CUDA execution
provider. Sessions are built from the in-memory export (:mod:`moenas.profiler.onnx_export`)
and fed through IOBinding, so on CUDA the KV cache stays on the device. It is the one backend
with an operator profiler (``--op-profile``): its sessions run here, the trace is parsed by
:mod:`moenas.profiler.op_profile`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import onnxruntime as ort

from .backend_base import Backend, PreparedWorkload, register_backend
from .onnx_export import ExportedArch
from .op_profile import ops_ms, trace_node_events
from .workload import Workload


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
            "runtime": "onnxruntime", "version": ort.__version__, "providers": self._providers(),
            "intra_op_num_threads": self.threads_intra, "inter_op_num_threads": self.threads_inter,
            "execution_mode": "sequential", "graph_optimization_level": "all",
            "session_from": "bytes, weights as in-memory external initializers", "io_binding": True,
        }

    def _providers(self) -> list[str]:
        return [self.PROVIDERS[self.device]] + (["CPUExecutionProvider"] if self.device != "cpu" else [])

    def session(self, exported: ExportedArch, part: str, profile_prefix: str | None = None) -> ort.InferenceSession:
        """Session for ``part`` ('encoder' or 'decoder') of an export; profiling when a prefix is given."""
        return exported.session(part, self._options(profile_prefix), self._providers())

    def prepare(self, workload: Workload) -> OrtPreparedWorkload:
        exp = workload.onnx()
        return OrtPreparedWorkload(self, workload, self.session(exp, "encoder"), self.session(exp, "decoder"))

    def op_profile(self, workload: Workload, runs: int = 3) -> dict[str, dict[str, float]]:
        """{"encoder": {op_type: ms per run}, "decoder": {...}} from a separate pair of profiling
        sessions (never the ones whose latency is recorded: profiling adds overhead): one
        warm-up, then ``runs`` repetitions."""
        exp = workload.onnx()
        with tempfile.TemporaryDirectory(prefix="moenas-opprof-") as tmp:
            enc = self.session(exp, "encoder", os.path.join(tmp, "enc"))
            dec = self.session(exp, "decoder", os.path.join(tmp, "dec"))
            prepared = OrtPreparedWorkload(self, workload, enc, dec)  # its set-up encoder run is profiled too
            prepared.run_decoder()  # warm-up
            for _ in range(runs):
                prepared.run_encoder()
                prepared.run_decoder()
            enc_events = trace_node_events(enc.end_profiling())
            dec_events = trace_node_events(dec.end_profiling())
            prepared.close()
        # encoder: 1 set-up run + `runs`; decoder: 1 warm-up + `runs`, each of decoder_steps steps
        return {"encoder": ops_ms(enc_events, runs + 1), "decoder": ops_ms(dec_events, runs + 1)}


class OrtPreparedWorkload(PreparedWorkload):
    """Feeds and fetches through IOBinding so that on CUDA the KV cache stays on the device."""

    def __init__(self, backend: OnnxRuntimeBackend, workload: Workload, enc: ort.InferenceSession,
                 dec: ort.InferenceSession):
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

    def _value(self, a: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.dev, 0)

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
