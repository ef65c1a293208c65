"""Fitness for search: validation loss (or BLEU) with weights inherited from a trained supernet,
and the translation quality of chosen archs for reports.

The supernet and the fixed validation subset are loaded once, lazily, in the process that
evaluates (so a ProcessPoolRunner worker loads its own copy once). Each value comes with its
standard error over the sentences (:mod:`fitness_noise`). Lower is better:
``metric="loss"`` returns nats/token (HAT and AutoMoE search on it); ``metric="bleu"`` returns
-BLEU (greedy decoding of the validation subset, ~10x slower than the loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from moenas.arch import Arch, SearchSpace, UserError

METRICS = ("loss", "bleu")

if TYPE_CHECKING:
    from .fitness_noise import SentenceStats


@dataclass
class SupernetFitness:
    ckpt: str
    valid_sentences: int | None = None  # size of the fixed validation subset (None: the checkpoint's)
    device: str = "cpu"
    metric: str = "loss"
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.metric not in METRICS:
            raise UserError(f"unknown fitness {self.metric!r} (choose from {', '.join(METRICS)})")

    def _load(self) -> dict[str, Any]:
        if not self._state:
            import torch

            from .checkpoint import checkpoint_corpus, load_supernet, load_tokenizer, validation_data

            torch.set_num_threads(1)  # one evaluator per core; see docs/ARCHITECTURE.md on thread noise
            net, meta = load_supernet(self.ckpt, self.device)
            corpus = checkpoint_corpus(meta)  # read once: quality() takes its test pairs from it too
            batches, pairs = validation_data(meta, n_sentences=self.valid_sentences, corpus=corpus)
            self._state.update(
                net=net,
                meta=meta,
                batches=batches,
                pairs=pairs,
                n_pairs=len(pairs),
                tok=load_tokenizer(meta),
                corpus=corpus,
            )
        return self._state

    @property
    def space(self) -> SearchSpace:
        return self._load()["net"].space

    def check_space(self, space: SearchSpace) -> None:
        if self.space.name != space.name:
            raise UserError(f"supernet {self.ckpt} was trained on space {self.space.name!r}, not {space.name!r}")

    def __call__(self, archs: Sequence[Arch]) -> list[tuple[float, float]]:
        """(fitness, its bootstrap standard error over the sentences) per arch, lower is better."""
        return [(value, stats.se()) for value, stats in self.scores(archs)]

    def scores(self, archs: Sequence[Arch]) -> list[tuple[float, "SentenceStats"]]:
        """(fitness, per-sentence statistics) per arch: what :func:`fitness_noise.paired_se`
        compares two archs with."""
        from .evaluation import bleu_with_stats, validation_scores

        st = self._load()
        if self.metric == "bleu":
            return [(-b, stats) for b, stats in (bleu_with_stats(st["net"], a, st["tok"], st["pairs"]) for a in archs)]
        return validation_scores(st["net"], list(archs), st["batches"])

    def quality(
        self, arch: Arch, sentences: int = 200, samples: int = 3, split: str = "test", beam: int = 1
    ) -> dict[str, Any]:
        """Validation loss, BLEU and chrF on the first ``sentences`` pairs of ``split`` decoded with
        ``beam`` (1 = greedy; reports beside a latency pass the beam that latency was timed with)
        and ``samples`` source / reference / output triples, all with inherited weights."""
        from .evaluation import translation_report, validation_loss

        st = self._load()
        pairs = getattr(st["corpus"], split)[:sentences]
        rep = translation_report(st["net"], arch, st["tok"], pairs, n_samples=samples, beam=beam)
        return {
            "val_loss": validation_loss(st["net"], [arch], st["batches"])[0],
            "bleu": rep["bleu"],
            "chrf": rep["chrf"],
            "beam": beam,
            "bleu_split": split,
            "bleu_sentences": rep["sentences"],
            "samples": rep["samples"],
        }

    def __getstate__(self) -> dict[str, Any]:  # workers reload instead of pickling the model
        return {
            "ckpt": self.ckpt,
            "valid_sentences": self.valid_sentences,
            "device": self.device,
            "metric": self.metric,
            "_state": {},
        }
