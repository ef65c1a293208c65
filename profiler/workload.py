"""What a timing backend times: one arch under one latency protocol.

A :class:`Workload` holds the arch's seeded model, the protocol's inputs (source tokens and the
decoder's step tokens, seeded from ``input_seed`` and the arch id, so an arch always gets the
same inputs), its ONNX export (made on first use, kept in memory) and a torch CPU reference run
of the very same inputs: the final logits every backend must reproduce and the per-expert token
counts stored with each measurement. A backend turns it into a prepared workload
(:mod:`moenas.profiler.backend_base`).

Each model family has its workload class (:class:`Workload`: encoder-decoder under a
``LatencyProtocol``; :class:`LMWorkload`: decoder-only under an ``LMProtocol``, a prompt and
decode-step tokens); callers get the right one from :func:`make_workload`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import nn

from moenas.arch import Arch, UserError
from moenas.arch.arch import AnyArch, LMArch
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily
from moenas.arch.lm_model import build_lm_model
from moenas.arch.model import SubTransformer, build_model
from moenas.arch.protocol import LatencyProtocol, LMProtocol, Protocol, default_protocol

from .onnx_export import ExportedArch, export_arch
from .onnx_export_lm import export_lm

Counts = dict[str, list[int]]


class WorkloadBase:
    """What every family's workload shares: the seeded CPU model (built once), its lazy ONNX
    export, the lazy torch reference run, and ``seconds`` (wall time of model build, export
    and reference run). A family's subclass draws the protocol's inputs and says how to build,
    export and run the model (:meth:`_build`, :meth:`_export`, :meth:`_run_reference`)."""

    family: ClassVar[ModelFamily]

    def __init__(self, arch: AnyArch, protocol: Protocol, export_method: str = "torchscript"):
        for what, fam in (("arch", arch.family), ("protocol", protocol.family)):
            if fam is not self.family:
                raise UserError(f"a {self.family.name} workload needs a {self.family.name} {what}, got {fam.name}")
        self.arch, self.protocol, self.export_method = arch, protocol, export_method
        self._model: nn.Module | None = None
        self._onnx: ExportedArch | None = None
        self._reference: dict[str, Any] | None = None
        self.seconds: dict[str, float] = {"build": 0.0, "export": 0.0, "reference": 0.0}

    def _draw(self, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """Random int64 token ids (4 .. V-1: no special id) of each shape, drawn in order from
        the arch's input seed (:meth:`ProtocolBase.arch_seed`): the same arch, the same inputs."""
        g = torch.Generator().manual_seed(self.protocol.arch_seed(self.arch.arch_id))
        return [torch.randint(4, self.arch.vocab_size, shape, generator=g) for shape in shapes]

    def _build(self, moe_backend: str = "torch") -> nn.Module:
        """A fresh model with the protocol's seeded weights, on the CPU."""
        raise NotImplementedError

    def _export(self, model: nn.Module) -> ExportedArch:
        raise NotImplementedError

    def _run_reference(self, model: nn.Module) -> dict[str, Any]:
        """Outputs of the protocol inputs on ``model``: at least 'logits' and 'expert_counts'."""
        raise NotImplementedError

    @property
    def logit_rows(self) -> int:
        """Rows of the final logits (:meth:`reference`'s and every backend's ``logits()``)."""
        return self.protocol.batch

    def model(self) -> nn.Module:
        """The seeded CPU model (built once)."""
        if self._model is None:
            t = time.perf_counter()
            self._model = self._build().eval()
            self.seconds["build"] += time.perf_counter() - t
        return self._model

    def build_model(self, device: str = "cpu", moe_backend: str = "torch") -> nn.Module:
        """A model with the same weights on ``device`` (the CPU one itself when it fits)."""
        if device == "cpu" and moe_backend == "torch":
            return self.model()
        return self._build(moe_backend).eval().to(device)

    def onnx(self) -> ExportedArch:
        """The ONNX export of :meth:`model` (exported once, kept in memory)."""
        if self._onnx is None:
            model = self.model()
            t = time.perf_counter()
            self._onnx = self._export(model)
            self.seconds["export"] += time.perf_counter() - t
        return self._onnx

    def reference(self) -> dict[str, Any]:
        """Torch CPU run of the protocol inputs (computed once): see :meth:`_run_reference`."""
        if self._reference is None:
            t = time.perf_counter()
            m = self.model()
            with torch.inference_mode():
                self._reference = self._run_reference(m)
            self.seconds["reference"] += time.perf_counter() - t
        return self._reference


class Workload(WorkloadBase):
    """One encoder-decoder arch under one :class:`LatencyProtocol`: its seeded model, its
    inputs, its (lazy, cached) ONNX export and a torch CPU reference run of the very same inputs
    (outputs + per-expert token counts).

    ``src``: (batch, src_len) int64; ``step_tokens``: (decoder_steps, decoder_batch, 1) int64."""

    family: ClassVar[ModelFamily] = ENCODER_DECODER

    def __init__(self, arch: Arch, protocol: LatencyProtocol = LatencyProtocol(), export_method: str = "torchscript"):
        super().__init__(arch, protocol, export_method)
        p = protocol
        self.src, self.step_tokens = self._draw((p.batch, p.src_len), (p.decoder_steps, p.decoder_batch, 1))

    @property
    def logit_rows(self) -> int:
        return self.protocol.decoder_batch

    def _build(self, moe_backend: str = "torch") -> SubTransformer:
        return build_model(self.arch, self.protocol.model_seed, moe_backend=moe_backend)

    def _export(self, model: nn.Module) -> ExportedArch:
        return export_arch(self.arch, seed=self.protocol.model_seed, method=self.export_method, model=model)

    def _run_reference(self, m: nn.Module) -> dict[str, Any]:
        """Final-step logits (decoder batch, V), the flat cross keys/values (batch), and expert
        token counts ('encoder.i'/'decoder.i' -> list; decoder counts summed over all steps)."""
        beam = self.protocol.beam
        states, _ = m.encode(self.src)
        # the encoder's layers only: a decoder layer's reading may still be a timed step's (the torch
        # backend times this very model), and the decoder steps below add up from zero
        counts = {k: list(v) for k, v in m.expert_counts().items() if k.startswith("encoder.")}
        cross = m.cross_kv(states, None)
        flat = [x for k, v, _ in cross for x in (k, v)]
        cross_b = [(k.repeat_interleave(beam, 0), v.repeat_interleave(beam, 0), None) for k, v, _ in cross]
        cache = empty_cache(m, self.protocol.decoder_batch)
        for t_ in range(self.protocol.decoder_steps):
            logits, cache = m.step(self.step_tokens[t_], cache, cross_b)
            add_counts(counts, {k: v for k, v in m.expert_counts().items() if k.startswith("decoder.")})
        return {"logits": logits.numpy(), "cross": [x.numpy() for x in flat], "expert_counts": counts}


class LMWorkload(WorkloadBase):
    """One decoder-only arch under one :class:`LMProtocol`: its seeded ``CausalLM``, its
    inputs, its (lazy, cached) ONNX export (prefill and decode graphs) and a torch CPU
    reference run of the very same inputs.

    ``prompt``: (batch, prompt_len) int64; ``decode_tokens``: (decode_steps, batch, 1) int64,
    step t's token (drawn at random: which token greedy picks does not change the work)."""

    family: ClassVar[ModelFamily] = DECODER_ONLY

    def __init__(self, arch: LMArch, protocol: LMProtocol = LMProtocol(), export_method: str = "torchscript"):
        super().__init__(arch, protocol, export_method)
        p = protocol
        self.prompt, self.decode_tokens = self._draw((p.batch, p.prompt_len), (p.decode_steps, p.batch, 1))

    def _build(self, moe_backend: str = "torch") -> nn.Module:
        return build_lm_model(self.arch, self.protocol.model_seed, moe_backend=moe_backend)

    def _export(self, model: nn.Module) -> ExportedArch:
        return export_lm(
            self.arch, seed=self.protocol.model_seed, method=self.export_method, model=model, protocol=self.protocol
        )

    def _run_reference(self, m: nn.Module) -> dict[str, Any]:
        """The last decode step's logits (batch, V) and expert token counts ('decoder.i' ->
        list), summed over the prefill and every decode step."""
        logits, cache = m.prefill(self.prompt)
        counts: Counts = {}
        add_counts(counts, m.expert_counts())
        for tok in self.decode_tokens:
            logits, cache = m.step(tok, cache)
            add_counts(counts, m.expert_counts())
        return {"logits": logits.numpy(), "expert_counts": counts}


# family name -> its workload class
WORKLOADS: FamilyRegistry[type[WorkloadBase]] = FamilyRegistry("workload", (Workload, LMWorkload))


def make_workload(arch: AnyArch, protocol: Protocol | None = None, export_method: str = "torchscript") -> WorkloadBase:
    """The workload of ``arch``'s family under ``protocol`` (None: the family's default);
    UserError when the protocol is of another family."""
    protocol = protocol or default_protocol(arch)
    if protocol.family is not arch.family:
        raise UserError(
            f"arch {arch.arch_id} is {arch.family.name} but the protocol times {protocol.family.name} models"
        )
    return WORKLOADS.for_family(arch.family)(arch, protocol, export_method)


def add_counts(total: Counts, new: dict[str, list[int]]) -> None:
    """Add ``new``'s per-expert token counts to ``total``, layer by layer (in place)."""
    for k, v in new.items():
        total[k] = [a + b for a, b in zip(total.get(k, [0] * len(v)), v)]


def empty_cache(
    model: SubTransformer, batch: int, device: str | torch.device = "cpu"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder layer an empty (batch, heads, 0, head_dim) key/value cache."""
    out = []
    for layer in model.dec_layers:
        a = layer.self_attn
        z = torch.zeros(batch, a.heads, 0, a.head_dim, device=device)
        out.append((z, z.clone()))
    return out
