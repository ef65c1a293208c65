"""What a timing backend times: one arch under one latency protocol.

A :class:`Workload` holds the arch's seeded model, the protocol's inputs (source tokens and the
decoder's step tokens, seeded from ``input_seed`` and the arch id, so an arch always gets the
same inputs), its ONNX export (made on first use, kept in memory) and a torch CPU reference run
of the very same inputs: the final logits every backend must reproduce and the per-expert token
counts stored with each measurement. A backend turns it into a prepared workload
(:mod:`moenas.profiler.backend_base`).
"""
from __future__ import annotations

import time
from typing import Any

import torch

from moenas.arch import Arch
from moenas.arch.model import SubTransformer, build_model
from moenas.arch.protocol import LatencyProtocol

from .onnx_export import ExportedArch, export_arch


class Workload:
    """One arch under one protocol: its seeded model, its inputs, its (lazy, cached) ONNX export
    and a torch CPU reference run of the very same inputs (outputs + per-expert token counts).

    ``src``: (batch, src_len) int64; ``step_tokens``: (decoder_steps, decoder_batch, 1) int64.
    ``seconds`` accumulates the wall time of model build, export and the reference run."""

    def __init__(self, arch: Arch, protocol: LatencyProtocol = LatencyProtocol(), export_method: str = "torchscript"):
        self.arch, self.protocol, self.export_method = arch, protocol, export_method
        p = protocol
        g = torch.Generator().manual_seed(p.arch_seed(arch.arch_id))
        self.src = torch.randint(4, arch.vocab_size, (p.batch, p.src_len), generator=g)
        self.step_tokens = torch.randint(4, arch.vocab_size, (p.decoder_steps, p.decoder_batch, 1), generator=g)
        self._model: SubTransformer | None = None
        self._onnx: ExportedArch | None = None
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

    def onnx(self) -> ExportedArch:
        """The ONNX export of :meth:`model` (exported once, kept in memory)."""
        if self._onnx is None:
            model = self.model()
            t = time.perf_counter()
            self._onnx = export_arch(self.arch, seed=self.protocol.model_seed, method=self.export_method, model=model)
            self.seconds["export"] += time.perf_counter() - t
        return self._onnx

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
