"""Mixture-of-Supernets: FFN weights generated per architecture by an architecture router.

In a plain weight-sharing supernet every sub-architecture reads the same weights (slices).
Mixture-of-Supernets (Jawahar et al., "Mixture-of-Supernets: Improving Weight-Sharing
Supernet Training with Architecture-Routed Mixture-of-Experts") keeps m banks of weights per
FFN and lets a small router network that reads the architecture decide how to mix them:

    a   = softmax over banks of  Router(encode(arch) / scale)        (per layer)
    W   = sum_i a_i * W_i          (layer-wise: one weight per bank and layer)
    W   = sum_i a_i[n] * W_i[n,:]  (neuron-wise: one weight per bank, layer and output neuron)

then sliced to the arch's sizes as in HAT/AutoMoE (slicing and mixing commute, so only the
slices are mixed). Different architectures thus get different, learned weights while sharing
the banks. Here the mixed weights are each MoE expert's fc1/fc2 (weights and biases) of every
layer; all expert slots of a layer share the layer's mixing weights. Attention, embeddings,
norms and the MoE router stay plainly shared. The result is an ordinary SubTransformer (or,
for a decoder-only supernet, CausalLM: the layers to mix come from ``supernet.ffn_stacks()``;
extraction just evaluates the mixture), so export and latency timing are unchanged.

By default (``mos_init="copy"``) the banks start as copies of one initialisation, so at step 0
MoS equals the slice supernet; the copies drift apart because each receives its gradient scaled
by its arch-dependent mixing weight, and the router learns once they differ (slowly: at a few
hundred steps MoS still behaves like the slice supernet). ``mos_init="independent"`` draws
every bank separately, so mixing matters from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MoSWeights(nn.Module):
    """The weight banks and the architecture router of one MoS supernet."""

    def __init__(self, supernet, store: nn.Module):
        super().__init__()
        cfg = supernet.config
        sp = supernet.space
        self.m = cfg.mos_experts
        self.mode = cfg.mos_mode
        self.space = sp
        self.banks = nn.ParameterDict()
        gen = torch.Generator().manual_seed(cfg.seed + 2)
        for orig, p in store.named_parameters():
            name = supernet._canonical(orig)
            if supernet._is_expert_weight(name):
                bank = p.detach().clone().unsqueeze(0).repeat(self.m, *[1] * p.dim())
                if cfg.mos_init == "independent":  # banks 1.. drawn like nn.Linear's default init
                    fan_in = store.get_parameter(orig.replace(".bias", ".weight")).shape[1]
                    bound = fan_in**-0.5
                    bank[1:] = torch.empty_like(bank[1:]).uniform_(-bound, bound, generator=gen)
                self.banks[name.replace(".", "/")] = nn.Parameter(bank)
        # One segment of router outputs per layer (encoder layers, then decoder layers; a
        # decoder-only model's layers), as the supernet lists its stacks.
        self.layers: list[str] = []
        self.widths: list[tuple[int, int]] = []  # (H_max, D_max) per layer
        for stack, st, arch_stack in supernet.ffn_stacks():
            for i in range(max(st.layers)):
                self.layers.append(f"{stack}.{i}.ffn")
                self.widths.append((max(st.expert_sizes), arch_stack.embed_dim))
        per_layer = [self.m * (1 if self.mode == "layer" else h + d) for h, d in self.widths]
        self.offsets = [sum(per_layer[:i]) for i in range(len(per_layer) + 1)]
        scale = torch.as_tensor(sp.encode(supernet.max_arch), dtype=torch.float32).clamp(min=1.0)
        self.register_buffer("scale", scale)
        n_in = scale.numel()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.router = nn.Sequential(
                nn.Linear(n_in, cfg.mos_hidden), nn.ReLU(), nn.Linear(cfg.mos_hidden, self.offsets[-1])
            )

    def features(self, arch) -> torch.Tensor:
        x = torch.as_tensor(self.space.encode(arch), dtype=torch.float32, device=self.scale.device)
        return x / self.scale

    def mix(self, arch) -> dict[str, tuple[torch.Tensor, ...]]:
        """Mixing weights of every layer for ``arch``: layer -> (a,) with a (m,) in layer mode,
        or (a1 (m, H_max), a2 (m, D_max)) in neuron mode."""
        out = self.router(self.features(arch))
        mixed = {}
        for i, (name, (h, d)) in enumerate(zip(self.layers, self.widths)):
            seg = out[self.offsets[i] : self.offsets[i + 1]]
            if self.mode == "layer":
                mixed[name] = (F.softmax(seg, dim=0),)
            else:
                a = F.softmax(seg.view(self.m, h + d), dim=0)
                mixed[name] = (a[:, :h], a[:, h:])
        return mixed

    def bank(self, name: str) -> torch.Tensor:
        return self.banks[name.replace(".", "/")]

    def expert(self, mixed: dict, expert_name: str, h: int, d: int) -> tuple[torch.Tensor, ...]:
        """fc1 weight (h, d), fc1 bias (h,), fc2 weight (d, h), fc2 bias (d,) of one expert."""
        layer = expert_name.rsplit(".experts.", 1)[0]
        w1 = self.bank(f"{expert_name}.fc1.weight")[:, :h, :d]
        b1 = self.bank(f"{expert_name}.fc1.bias")[:, :h]
        w2 = self.bank(f"{expert_name}.fc2.weight")[:, :d, :h]
        b2 = self.bank(f"{expert_name}.fc2.bias")[:, :d]
        if self.mode == "layer":
            (a,) = mixed[layer]
            return (torch.einsum("m,mhd->hd", a, w1), a @ b1, torch.einsum("m,mdh->dh", a, w2), a @ b2)
        a1, a2 = mixed[layer]
        a1, a2 = a1[:, :h], a2[:, :d]
        return ((a1.unsqueeze(-1) * w1).sum(0), (a1 * b1).sum(0), (a2.unsqueeze(-1) * w2).sum(0), (a2 * b2).sum(0))
