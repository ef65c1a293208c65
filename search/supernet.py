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
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from moenas.arch import Arch, LayerArch, SearchSpace, UserError
from moenas.arch.model import SubTransformer

from .names import KINDS, MOS_INITS, MOS_MODES


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """A SearchSpace as the plain dict :meth:`SearchSpace.from_dict` reads back."""

    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items() if x is not None}
        return v

    return plain(asdict(space))


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
    def for_space(cls, space: SearchSpace, **kw: Any) -> "SupernetConfig":
        return cls(space=space_to_dict(space), **kw)


def _key(name: str) -> str:  # parameter names may not contain "."
    return name.replace(".", "/")


class SuperNet(nn.Module):
    """Weight-sharing supernet over a search space; see the module docstring.

    ``forward(src, tgt_in, arch=None, hidden=False)`` -> logits (B, T, V) of ``arch`` (or of
    the arch set by :meth:`set_arch`), or with ``hidden`` (states, output weight) as
    :meth:`SubTransformer.forward`; afterwards :attr:`aux_loss` holds that arch's load-balancing loss and
    :meth:`expert_counts` its routing counts."""

    def __init__(self, config: SupernetConfig):
        super().__init__()
        self.config = config
        self.space = SearchSpace.from_dict(config.space, source="supernet space")
        sp = self.space
        self.max_experts = max(max(sp.encoder.experts), max(sp.decoder.experts))
        largest = sp.largest()
        self.max_arch = largest
        # The storage model: the largest arch, every layer at max experts x max expert size.
        store_arch = Arch(
            encoder=type(largest.encoder)(largest.encoder.embed_dim, tuple(
                LayerArch(lay.heads, (max(sp.encoder.expert_sizes),) * max(sp.encoder.experts))
                for lay in largest.encoder.layers)),
            decoder=type(largest.decoder)(largest.decoder.embed_dim, tuple(
                LayerArch(lay.heads, (max(sp.decoder.expert_sizes),) * max(sp.decoder.experts), lay.cross_heads, lay.cross_span)
                for lay in largest.decoder.layers)),
            top_k=largest.top_k, qkv_dim=largest.qkv_dim, vocab_size=largest.vocab_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            store = SubTransformer(store_arch)
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
    def set_arch(self, arch: Arch) -> "SuperNet":
        self.arch = self.space.validate(arch)
        return self

    def _template(self, arch: Arch) -> SubTransformer:
        t = self._templates.get(arch.arch_id)
        if t is None:
            with torch.device("meta"):
                t = SubTransformer(arch, dropout=self.config.dropout)
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
        for stack, layers, dim in (("enc_layers", arch.encoder.layers, de), ("dec_layers", arch.decoder.layers, dd)):
            for i, layer in enumerate(layers):
                p = f"{stack}.{i}."
                norms = ("norm1", "norm2") if stack == "enc_layers" else ("norm1", "norm2", "norm3")
                for n in norms:
                    self._norm(out, p + n, dim)
                if stack == "enc_layers":
                    self._attn(out, p + "attn", dim, dim)
                else:
                    self._attn(out, p + "self_attn", dim, dim)
                    self._attn(out, p + "cross_attn", dim, de)
                self._ffn(out, p + "ffn", layer, dim, mixed)
        return out

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
        arch = arch or self.arch
        if arch is None:
            raise UserError("no arch: call set_arch(arch) or pass forward(src, tgt_in, arch)")
        model = self._template(arch)
        model.train(self.training)
        out = functional_call(model, self.params_for(arch), (src, tgt_in), {"hidden": hidden}, strict=True)
        self.aux_loss = model.aux_loss().to(src.device)
        self._last[:] = [model]
        return out

    def expert_counts(self) -> dict[str, list[int]]:
        """Token-slots per expert in the last forward, keyed 'encoder.i' / 'decoder.i' (as
        :meth:`SubTransformer.expert_counts`)."""
        return self._last[0].expert_counts() if self._last else {}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_supernet(space: SearchSpace, kind: str = "slice", **kw: Any) -> SuperNet:
    return SuperNet(SupernetConfig.for_space(space, kind=kind, **kw))


@torch.no_grad()
def extract(supernet: SuperNet, arch: Arch, dropout: float = 0.0) -> SubTransformer:
    """A standalone SubTransformer holding ``arch``'s inherited weights (eval mode, on the
    supernet's device). Its outputs equal ``supernet(src, tgt_in, arch)`` in eval mode."""
    supernet.space.validate(arch)
    params = supernet.params_for(arch)
    device = next(supernet.parameters()).device
    with torch.device("meta"):
        model = SubTransformer(arch, dropout=dropout)
    model = model.to_empty(device=device)
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in params.items()}, strict=True)
    return model.eval()


def inherited_state_dict(supernet: SuperNet, arch: Arch) -> dict[str, torch.Tensor]:
    """``arch``'s inherited weights as a SubTransformer state_dict (detached copies)."""
    return extract(supernet, arch).state_dict()


__all__ = ["KINDS", "SupernetConfig", "SuperNet", "build_supernet", "extract", "inherited_state_dict", "space_to_dict"]
