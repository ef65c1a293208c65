"""The weight-sharing SuperTransformer (HAT + AutoMoE), and extraction of sub-Transformers.

Storage: the weights of the space's largest model, with every layer holding the space's
maximum number of experts, each at the largest expert size. A sub-architecture's weights are
leading slices of these (HAT):

  embeddings            (V, D_max)        -> [:, :D]
  layer norms           (D_max,)          -> [:D]
  q/k/v projections     (Q, D_max)        -> [:, :D]   (qkv_dim Q is fixed; heads only re-split it)
  output projection     (D_max, Q)        -> [:D, :]
  expert j fc1          (H_max, D_max)    -> [:h_j, :D]  each expert's size sliced independently
  expert j fc2          (D_max, H_max)    -> [:D, :h_j]  (AutoMoE)
  router                (E_max, D_max)    -> [:E, :D]  rows of the active experts
  layer i               layers 0..n-1 of the stack

A dense layer (one expert) uses expert 0 as its FFN and no router.

Exactness by construction: :meth:`SuperNet.forward` runs the standalone
:class:`moenas.arch.model.SubTransformer` itself (built once per arch on the ``meta`` device,
holding no memory) through ``torch.func.functional_call`` with the sliced tensors as its
parameters. The supernet therefore computes *the same code* as the extracted model, and
:func:`extract` just copies :meth:`SuperNet.params_for` into a real SubTransformer.

Mixture-of-Supernets (``kind="mos"``, :mod:`moenas.search.mos`) replaces the FFN expert
weights by an architecture-routed mixture of m weight banks; everything else is the same.

Both model families: :class:`SuperNet` over a :class:`SearchSpace` runs SubTransformers;
:class:`LMSuperNet` over an :class:`LMSearchSpace` runs the decoder-only
:class:`moenas.arch.lm_model.CausalLM` (``forward(ids, arch)``), whose layers are the encoder's
blocks and so are sliced by the same code (embedding ``embed``, final ``norm``, ``layers.i``).
:func:`supernet_from_config` (and :func:`build_supernet`) picks the class the space's family names.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call

from moenas.arch import Arch, LayerArch, LMArch, StackArch, StackSpace, UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily, family_named
from moenas.arch.lm_model import CausalLM
from moenas.arch.model import SubTransformer
from moenas.arch.space import AnySpace, space_from_dict

from .names import KINDS, MOS_INITS, MOS_MODES


@dataclass(frozen=True)
class SupernetConfig:
    """Everything needed to rebuild a supernet (primitives only: it goes into checkpoints).

    mos_experts: m, the number of weight banks mixed per FFN (MoS);
    mos_mode: ``layer`` (one mixing weight per bank and layer) or ``neuron`` (one per bank,
    layer and output neuron); mos_hidden: width of the architecture router's hidden layer."""

    space: dict
    kind: str = "slice"
    dropout: float = 0.1
    seed: int = 0
    mos_experts: int = 2
    mos_mode: str = "layer"
    mos_hidden: int = 64
    mos_init: str = "copy"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown supernet kind {self.kind!r} (choose from {', '.join(KINDS)})")
        if self.mos_mode not in MOS_MODES:
            raise UserError(f"unknown MoS mode {self.mos_mode!r} (choose from {', '.join(MOS_MODES)})")
        if self.mos_init not in MOS_INITS:
            raise UserError(f"unknown MoS init {self.mos_init!r} (choose from {', '.join(MOS_INITS)})")
        if self.mos_experts < 1:
            raise UserError("mos_experts must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SupernetConfig":
        return cls(**d)

    @classmethod
    def for_space(cls, space: AnySpace, **kw: Any) -> "SupernetConfig":
        return cls(space=space.to_dict(), **kw)

    @property
    def family(self) -> ModelFamily:
        """The model family of the space's archs."""
        return family_named(self.space, "supernet space")


def _key(name: str) -> str:  # parameter names may not contain "."
    return name.replace(".", "/")


def _store_stack(st: StackArch, sp: StackSpace) -> StackArch:
    """The largest arch's stack with every layer at the space's most experts, each at the
    largest expert size: the shapes the supernet stores."""
    experts = (max(sp.expert_sizes),) * max(sp.experts)
    return StackArch(st.embed_dim, tuple(replace(lay, experts=experts) for lay in st.layers))


class SuperNet(nn.Module):
    """Weight-sharing supernet over a search space; see the module docstring.

    ``forward(src, tgt_in, arch=None, hidden=False)`` -> logits (B, T, V) of ``arch`` (or of
    the arch set by :meth:`set_arch`), or with ``hidden`` (states, output weight) as
    :meth:`SubTransformer.forward`; afterwards :attr:`aux_loss` holds that arch's load-balancing loss and
    :meth:`expert_counts` its routing counts.

    A subclass for another family sets :attr:`family` and :attr:`model_cls` and says what the
    storage arch is (:meth:`_store_arch`), which stacks hold FFNs (:meth:`ffn_stacks`) and how
    an arch's parameters are sliced (:meth:`params_for`)."""

    family: ClassVar[ModelFamily] = ENCODER_DECODER
    model_cls: ClassVar[type[nn.Module]] = SubTransformer

    def __init__(self, config: SupernetConfig):
        super().__init__()
        self.config = config
        self.space = space_from_dict(config.space, source="supernet space")
        if self.space.family is not self.family:
            raise UserError(f"a {self.space.family.name} space needs supernet_from_config, not {type(self).__name__}")
        self.max_arch = self.space.largest()
        self.max_experts = max(max(st.experts) for _, st, _ in self.ffn_stacks())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            store = self.model_cls(self._store_arch())
        self.weights = nn.ParameterDict()
        for name, p in store.named_parameters():
            name = self._canonical(name)
            if self._is_expert_weight(name) and config.kind == "mos":
                continue  # held by the MoS weight banks instead
            self.weights[_key(name)] = nn.Parameter(p.detach().clone())
        self.mos = None
        if config.kind == "mos":
            from .mos import MoSWeights

            self.mos = MoSWeights(self, store)
        self._templates: OrderedDict[str, SubTransformer] = OrderedDict()
        self.arch: Arch | None = None
        self.aux_loss: torch.Tensor | None = None
        self._last: list[SubTransformer] = []  # a list, so the template is not registered as a submodule

    # ---- what the family decides -------------------------------------------------------------
    def _store_arch(self) -> Arch:
        """The storage model: the largest arch, every layer at max experts x max expert size."""
        sp, largest = self.space, self.max_arch
        return replace(
            largest,
            encoder=_store_stack(largest.encoder, sp.encoder),
            decoder=_store_stack(largest.decoder, sp.decoder),
        )

    def ffn_stacks(self) -> list[tuple[str, StackSpace, StackArch]]:
        """(parameter prefix of the stack's layers, its genes, its largest stack) per stack, in
        the order MoS lays out its router's outputs."""
        sp, big = self.space, self.max_arch
        return [("enc_layers", sp.encoder, big.encoder), ("dec_layers", sp.decoder, big.decoder)]

    # ---- names ------------------------------------------------------------------------------
    @staticmethod
    def _canonical(name: str) -> str:
        """Storage name: a dense FFN's fc1/fc2 is expert 0."""
        for fc in ("fc1", "fc2"):
            name = name.replace(f"ffn.{fc}.", f"ffn.experts.0.{fc}.")
        return name

    @staticmethod
    def _is_expert_weight(name: str) -> bool:
        return ".ffn.experts." in name

    def w(self, name: str) -> torch.Tensor:
        return self.weights[_key(name)]

    # ---- the arch -----------------------------------------------------------------------------
    def set_arch(self, arch: Arch | LMArch) -> "SuperNet":
        self.arch = self.space.validate(arch)
        return self

    def _template(self, arch: Arch | LMArch) -> nn.Module:
        t = self._templates.get(arch.arch_id)
        if t is None:
            with torch.device("meta"):
                t = self.model_cls(arch, dropout=self.config.dropout)
            self._templates[arch.arch_id] = t
            while len(self._templates) > 64:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(arch.arch_id)
        return t

    # ---- weights of one arch -------------------------------------------------------------------
    def params_for(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The sub-Transformer's parameters (SubTransformer names) as slices of the supernet's
        (views that carry gradients back to the supernet)."""
        out: dict[str, torch.Tensor] = {}
        de, dd = arch.encoder.embed_dim, arch.decoder.embed_dim
        out["enc_embed.weight"] = self.w("enc_embed.weight")[:, :de]
        out["dec_embed.weight"] = self.w("dec_embed.weight")[:, :dd]
        self._norm(out, "enc_norm", de)
        self._norm(out, "dec_norm", dd)
        mixed = self.mos.mix(arch) if self.mos is not None else None
        for i, layer in enumerate(arch.encoder.layers):
            self._self_attn_block(out, f"enc_layers.{i}.", layer, de, mixed)
        for i, layer in enumerate(arch.decoder.layers):
            p = f"dec_layers.{i}."
            for n in ("norm1", "norm2", "norm3"):
                self._norm(out, p + n, dd)
            self._attn(out, p + "self_attn", dd, dd)
            self._attn(out, p + "cross_attn", dd, de)
            self._ffn(out, p + "ffn", layer, dd, mixed)
        return out

    def _self_attn_block(self, out: dict, p: str, layer: LayerArch, d: int, mixed) -> None:
        """One ``EncoderLayer`` (norm1, attn, norm2, ffn) at prefix ``p`` and width ``d``: an
        encoder layer, and a decoder-only language model's layer."""
        for n in ("norm1", "norm2"):
            self._norm(out, p + n, d)
        self._attn(out, p + "attn", d, d)
        self._ffn(out, p + "ffn", layer, d, mixed)

    def _norm(self, out: dict, name: str, d: int) -> None:
        out[f"{name}.weight"] = self.w(f"{name}.weight")[:d]
        out[f"{name}.bias"] = self.w(f"{name}.bias")[:d]

    def _attn(self, out: dict, name: str, dq: int, dkv: int) -> None:
        for proj, d in (("q_proj", dq), ("k_proj", dkv), ("v_proj", dkv)):
            out[f"{name}.{proj}.weight"] = self.w(f"{name}.{proj}.weight")[:, :d]
            out[f"{name}.{proj}.bias"] = self.w(f"{name}.{proj}.bias")
        out[f"{name}.out_proj.weight"] = self.w(f"{name}.out_proj.weight")[:dq, :]
        out[f"{name}.out_proj.bias"] = self.w(f"{name}.out_proj.bias")[:dq]

    def _ffn(self, out: dict, name: str, layer: LayerArch, d: int, mixed) -> None:
        dense = len(layer.experts) == 1
        if not dense:
            out[f"{name}.router.weight"] = self.w(f"{name}.router.weight")[: len(layer.experts), :d]
        for j, h in enumerate(layer.experts):
            src = f"{name}.experts.{j}"
            dst = name if dense else src
            if mixed is not None:
                w1, b1, w2, b2 = self.mos.expert(mixed, src, h, d)
            else:
                w1 = self.w(f"{src}.fc1.weight")[:h, :d]
                b1 = self.w(f"{src}.fc1.bias")[:h]
                w2 = self.w(f"{src}.fc2.weight")[:d, :h]
                b2 = self.w(f"{src}.fc2.bias")[:d]
            out[f"{dst}.fc1.weight"], out[f"{dst}.fc1.bias"] = w1, b1
            out[f"{dst}.fc2.weight"], out[f"{dst}.fc2.bias"] = w2, b2

    # ---- running ------------------------------------------------------------------------------
    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, arch: Arch | None = None, hidden: bool = False):
        return self._run((src, tgt_in), arch, hidden)

    def _run(self, inputs: tuple[torch.Tensor, ...], arch: Arch | LMArch | None, hidden: bool):
        """The standalone model of ``arch`` (default: the set arch) on ``inputs`` with the sliced
        (or mixed) weights; records its aux loss and routing counts."""
        arch = arch or self.arch
        if arch is None:
            raise UserError("no arch: call set_arch(arch) or pass it to forward after the inputs")
        model = self._template(arch)
        model.train(self.training)
        out = functional_call(model, self.params_for(arch), inputs, {"hidden": hidden}, strict=True)
        self.aux_loss = model.aux_loss().to(inputs[0].device)
        self._last[:] = [model]
        return out

    def expert_counts(self) -> dict[str, list[int]]:
        """Token-slots per expert in the last forward, keyed 'encoder.i' / 'decoder.i' (as
        :meth:`SubTransformer.expert_counts`)."""
        return self._last[0].expert_counts() if self._last else {}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LMSuperNet(SuperNet):
    """Weight-sharing supernet over an :class:`LMSearchSpace`: ``forward(ids, arch=None,
    hidden=False)`` -> logits (B, L, V) of ``arch`` as :meth:`CausalLM.forward` (with ``hidden``:
    final states (B, L, D) and the output weight (V, D)). Slices as :class:`SuperNet`'s encoder:
    ``embed.weight[:, :D]``, ``norm[:D]``, layer i's ``layers.i.{norm1, attn, norm2, ffn}``."""

    family: ClassVar[ModelFamily] = DECODER_ONLY
    model_cls: ClassVar[type[nn.Module]] = CausalLM

    def _store_arch(self) -> LMArch:
        return replace(self.max_arch, decoder=_store_stack(self.max_arch.decoder, self.space.decoder))

    def ffn_stacks(self) -> list[tuple[str, StackSpace, StackArch]]:
        return [("layers", self.space.decoder, self.max_arch.decoder)]

    def params_for(self, arch: LMArch) -> dict[str, torch.Tensor]:
        """The CausalLM's parameters (CausalLM names) as slices of the supernet's."""
        d = arch.decoder.embed_dim
        out = {"embed.weight": self.w("embed.weight")[:, :d]}
        self._norm(out, "norm", d)
        mixed = self.mos.mix(arch) if self.mos is not None else None
        for i, layer in enumerate(arch.decoder.layers):
            self._self_attn_block(out, f"layers.{i}.", layer, d, mixed)
        return out

    def forward(self, ids: torch.Tensor, arch: LMArch | None = None, hidden: bool = False):
        return self._run((ids,), arch, hidden)


# Each family's supernet class (the class declares its family and the standalone model it runs).
SUPERNETS: FamilyRegistry[type[SuperNet]] = FamilyRegistry("supernet class", (SuperNet, LMSuperNet))


def supernet_from_config(config: SupernetConfig) -> SuperNet:
    """The supernet of ``config``: the class of the space's family (a :class:`SuperNet` for an
    encoder-decoder space, an :class:`LMSuperNet` for a decoder-only one)."""
    return SUPERNETS.for_family(config.family)(config)


def model_class(family: ModelFamily) -> type[nn.Module]:
    """The standalone model class of ``family``'s archs (a SubTransformer, a CausalLM): the one
    its supernet runs and :func:`extract` fills."""
    return SUPERNETS.for_family(family).model_cls


def build_supernet(space: AnySpace, kind: str = "slice", **kw: Any) -> SuperNet:
    return supernet_from_config(SupernetConfig.for_space(space, kind=kind, **kw))


@torch.no_grad()
def extract(supernet: SuperNet, arch: Arch | LMArch, dropout: float = 0.0) -> nn.Module:
    """A standalone model (a SubTransformer, or a CausalLM for an LMSuperNet) holding ``arch``'s
    inherited weights (eval mode, on the supernet's device). Its outputs equal the supernet's
    for ``arch`` in eval mode."""
    supernet.space.validate(arch)
    params = supernet.params_for(arch)
    device = next(supernet.parameters()).device
    with torch.device("meta"):
        model = supernet.model_cls(arch, dropout=dropout)
    model = model.to_empty(device=device)
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in params.items()}, strict=True)
    return model.eval()


def inherited_state_dict(supernet: SuperNet, arch: Arch | LMArch) -> dict[str, torch.Tensor]:
    """``arch``'s inherited weights as the standalone model's state_dict (detached copies)."""
    return extract(supernet, arch).state_dict()


__all__ = [
    "KINDS",
    "SupernetConfig",
    "SuperNet",
    "LMSuperNet",
    "build_supernet",
    "supernet_from_config",
    "SUPERNETS",
    "model_class",
    "extract",
    "inherited_state_dict",
]
