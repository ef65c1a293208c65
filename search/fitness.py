"""Fitness for search: validation loss with weights inherited from a trained supernet.

The supernet and the fixed validation subset are loaded once, lazily, in the process that
evaluates (so a ProcessPoolRunner worker loads its own copy once). Lower is better.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from moenas.arch import Arch, SearchSpace, UserError


@dataclass
class SupernetFitness:
    ckpt: str
    valid_sentences: int | None = None  # size of the fixed validation subset (None: the checkpoint's)
    device: str = "cpu"
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def _load(self) -> dict[str, Any]:
        if not self._state:
            import torch

            from .checkpoint import load_supernet, validation_data

            torch.set_num_threads(1)  # one evaluator per core; see DESIGN.md on thread noise
            net, meta = load_supernet(self.ckpt, self.device)
            batches, pairs = validation_data(meta, n_sentences=self.valid_sentences)
            self._state.update(net=net, meta=meta, batches=batches, n_pairs=len(pairs))
        return self._state

    @property
    def space(self) -> SearchSpace:
        return self._load()["net"].space

    def check_space(self, space: SearchSpace) -> None:
        if self.space.name != space.name:
            raise UserError(f"supernet {self.ckpt} was trained on space {self.space.name!r}, not {space.name!r}")

    def __call__(self, archs: Sequence[Arch]) -> list[float]:
        from .evaluation import validation_loss

        st = self._load()
        return validation_loss(st["net"], list(archs), st["batches"])

    def __getstate__(self) -> dict[str, Any]:  # workers reload instead of pickling the model
        return {"ckpt": self.ckpt, "valid_sentences": self.valid_sentences, "device": self.device, "_state": {}}
