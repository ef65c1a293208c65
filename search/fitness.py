"""Fitness for search: validation loss (or BLEU) with weights inherited from a trained supernet,
and the quality of chosen archs for reports.

The supernet and the fixed validation subset are loaded once, lazily, in the process that
evaluates (so a ProcessPoolRunner worker loads its own copy once). Each value comes with its
standard error over the sentences (:mod:`fitness_noise`). Lower is better:
``metric="loss"`` returns nats/token (HAT and AutoMoE search on it); ``metric="bleu"`` returns
-BLEU (greedy decoding of the validation subset, ~10x slower than the loss).

Either model family's supernet: what differs - the validation data, the metrics offered, what
a chosen arch's quality report holds - is one strategy object per family
(:data:`FITNESS_FAMILIES`). A translation model is scored on validation sentence pairs and
reported with BLEU, chrF and sample translations; a decoder-only language model on validation
blocks of its token stream (each block one "sentence" of the error bar) and reported with its
perplexity and sample continuations. BLEU is no fitness of a language model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily

METRICS = ("loss", "bleu")

if TYPE_CHECKING:
    from .fitness_noise import SentenceStats

Scores = list[tuple[float, "SentenceStats"]]


class FamilyFitness:
    """What fitness does for one model family; ``st`` is :class:`SupernetFitness`'s loaded state
    (net, meta, tok, corpus, batches, held: the family's validation subset)."""

    family: ClassVar[ModelFamily]
    metrics: ClassVar[tuple[str, ...]]

    def check_metric(self, metric: str, where: str) -> None:
        """One UserError line when ``metric`` is no fitness of this family (``where`` holds it)."""
        if metric not in self.metrics:
            raise UserError(
                f"fitness {metric!r} does not apply to {where}, a {self.family.name} model "
                f"(choose from {', '.join(self.metrics)})"
            )

    def validation(self, meta: dict[str, Any], n: int | None, corpus: Any) -> tuple[list[Any], Any]:
        """(fixed validation batches, the subset they hold) of a checkpoint's corpus."""
        raise NotImplementedError

    def scores(self, st: dict[str, Any], archs: Sequence[Any], metric: str) -> Scores:
        from .evaluation import validation_scores

        return validation_scores(st["net"], list(archs), st["batches"])

    def quality(self, st: dict[str, Any], arch: Any, sentences: int, samples: int, split: str, beam: int) -> dict:
        raise NotImplementedError

    def beam(self, protocol: Any) -> int:
        """The beam a chosen arch's quality is decoded with: the latency protocol's."""
        return 1


class TranslationFitness(FamilyFitness):
    """Encoder-decoder translation: loss or -BLEU on validation pairs; BLEU, chrF and
    translations of the test split as quality."""

    family = ENCODER_DECODER
    metrics = METRICS

    def validation(self, meta: dict[str, Any], n: int | None, corpus: Any) -> tuple[list[Any], Any]:
        from .checkpoint import validation_data

        return validation_data(meta, n_sentences=n, corpus=corpus)

    def scores(self, st: dict[str, Any], archs: Sequence[Any], metric: str) -> Scores:
        from .evaluation import bleu_with_stats

        if metric == "bleu":
            return [(-b, stats) for b, stats in (bleu_with_stats(st["net"], a, st["tok"], st["held"]) for a in archs)]
        return super().scores(st, archs, metric)

    def quality(self, st: dict[str, Any], arch: Any, sentences: int, samples: int, split: str, beam: int) -> dict:
        """Validation loss, BLEU and chrF on the first ``sentences`` pairs of ``split`` decoded
        with ``beam`` and ``samples`` source / reference / output triples."""
        from .evaluation import translation_report, validation_loss

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

    def beam(self, protocol: Any) -> int:
        return protocol.beam


class LanguageModelFitness(FamilyFitness):
    """Decoder-only language model: loss (nats/token) on the fixed validation blocks; perplexity
    and greedy continuations of the start of ``split`` documents as quality."""

    family = DECODER_ONLY
    metrics = ("loss",)

    def validation(self, meta: dict[str, Any], n: int | None, corpus: Any) -> tuple[list[Any], Any]:
        from moenas.data.batching import fixed_block_batches

        from .checkpoint import lm_validation_data
        from .train_config import TrainConfig

        blocks = lm_validation_data(meta, n, corpus)  # (n, block_len + 1)
        return fixed_block_batches(blocks, TrainConfig.from_dict(meta["train_config"]).max_tokens), blocks

    def quality(self, st: dict[str, Any], arch: Any, sentences: int, samples: int, split: str, beam: int) -> dict:
        """Validation loss, its perplexity and ``samples`` prompt / reference / output
        continuations (greedy: ``beam`` and ``sentences`` do not apply)."""
        from .evaluation import continuation_samples, perplexity, validation_loss
        from .train_config import TrainConfig

        loss = validation_loss(st["net"], [arch], st["batches"])[0]
        context = TrainConfig.from_dict(st["meta"]["train_config"]).block_len
        docs = getattr(st["corpus"], split)
        return {
            "val_loss": loss,
            "perplexity": perplexity(loss),
            "beam": 1,
            "samples": continuation_samples(st["net"], arch, st["tok"], docs, samples, context),
        }


FITNESS_FAMILIES: FamilyRegistry[FamilyFitness] = FamilyRegistry(
    "search fitness", (TranslationFitness(), LanguageModelFitness())
)


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

            from .checkpoint import checkpoint_corpus, load_supernet, load_tokenizer

            torch.set_num_threads(1)  # one evaluator per core; see docs/ARCHITECTURE.md on thread noise
            net, meta = load_supernet(self.ckpt, self.device, family=None)
            kind = FITNESS_FAMILIES.for_family(net.space.family)
            kind.check_metric(self.metric, self.ckpt)
            corpus = checkpoint_corpus(meta)  # read once: quality() takes its test split from it too
            batches, held = kind.validation(meta, self.valid_sentences, corpus)
            self._state.update(
                net=net, meta=meta, batches=batches, held=held, tok=load_tokenizer(meta), corpus=corpus, kind=kind
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

    def scores(self, archs: Sequence[Arch]) -> Scores:
        """(fitness, per-sentence statistics) per arch: what :func:`fitness_noise.paired_se`
        compares two archs with."""
        st = self._load()
        return st["kind"].scores(st, archs, self.metric)

    def quality(
        self, arch: Arch, sentences: int = 200, samples: int = 3, split: str = "test", beam: int = 1
    ) -> dict[str, Any]:
        """The chosen arch's quality with inherited weights, for reports: validation loss, and
        per family BLEU / chrF on the first ``sentences`` pairs of ``split`` decoded with
        ``beam`` (1 = greedy; reports beside a latency pass the beam that latency was timed
        with) and ``samples`` translations, or a language model's perplexity and ``samples``
        greedy continuations of ``split`` documents."""
        st = self._load()
        return st["kind"].quality(st, arch, sentences, samples, split, beam)

    def __getstate__(self) -> dict[str, Any]:  # workers reload instead of pickling the model
        return {
            "ckpt": self.ckpt,
            "valid_sentences": self.valid_sentences,
            "device": self.device,
            "metric": self.metric,
            "_state": {},
        }
