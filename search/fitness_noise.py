"""How far a fitness value can be trusted: its standard error over the evaluation sentences,
and the standard error of the difference between two archs scored on the same sentences.

A fitness is a corpus-level score computed from per-sentence statistics: validation loss is
(sum of token nats) / (token count), BLEU is sacrebleu's n-gram counts summed over sentences.
Both errors come from one bootstrap over sentences (Koehn 2004, as sacrebleu's paired
bootstrap does), seeded, so the same statistics always give the same error. Why a bootstrap
and not a formula: one method covers both metrics, and BLEU has no closed-form error.

The paired error is the one that decides "better": two archs that share supernet weights err
on the same hard sentences, so their difference is far less noisy than either value alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BOOTSTRAP = 1000  # resamples; the error's own relative error is ~1/sqrt(2 B) = 2%
Z_TIE = 2.0  # |difference| <= Z_TIE x its paired standard error: a tie (about 95%)


@dataclass(frozen=True)
class SentenceStats:
    """Per-sentence statistics of one arch's fitness.

    ``metric``: "loss" (stats (m, 2): nats summed over the sentence's tokens, token count;
    value = nats/token, lower is better) or "bleu" (stats (m, 10): sacrebleu's BLEU counts;
    value = -BLEU, so lower is better for both)."""

    metric: str
    stats: np.ndarray

    def __post_init__(self) -> None:
        if self.metric not in ("loss", "bleu"):
            raise ValueError(f"unknown metric {self.metric!r}")

    @property
    def sentences(self) -> int:
        return int(self.stats.shape[0])

    def value(self) -> float:
        """The corpus-level fitness (lower is better)."""
        return float(score_of_sums(self.metric, self.stats.sum(axis=0, keepdims=True))[0])

    def se(self) -> float:
        """Bootstrap standard error of :meth:`value` (nan with fewer than 2 sentences)."""
        if self.sentences < 2:
            return float("nan")
        return float(np.std(_resampled(self, _indices(self.sentences)), ddof=1))


def paired_se(a: SentenceStats, b: SentenceStats) -> float:
    """Bootstrap standard error of ``a.value() - b.value()``, both archs resampled on the same
    sentences (they must have been scored on the same ones, in the same order)."""
    if a.metric != b.metric or a.stats.shape[0] != b.stats.shape[0]:
        raise ValueError("paired errors need two archs scored with one metric on the same sentences")
    if a.sentences < 2:
        return float("nan")
    idx = _indices(a.sentences)
    return float(np.std(_resampled(a, idx) - _resampled(b, idx), ddof=1))


def ties(diff: float, se: float, z: float = Z_TIE) -> bool:
    """Whether a difference is within its noise (a nan error never ties: nothing is known)."""
    return bool(np.isfinite(se)) and abs(diff) <= z * se


@lru_cache(maxsize=8)
def _indices(m: int) -> np.ndarray:
    """(BOOTSTRAP, m) sentence indices, the same for every call with the same m; drawn once per m
    (every fitness evaluation asks for them) and read-only."""
    idx = np.random.default_rng(0).integers(0, m, size=(BOOTSTRAP, m))
    idx.flags.writeable = False
    return idx


def _resampled(s: SentenceStats, idx: np.ndarray) -> np.ndarray:
    """The fitness of each bootstrap resample: (BOOTSTRAP,)."""
    return score_of_sums(s.metric, s.stats[idx].sum(axis=1))


def score_of_sums(metric: str, sums: np.ndarray) -> np.ndarray:
    """Fitness from summed statistics, one per row of ``sums`` (r, k)."""
    if metric == "loss":
        return sums[:, 0] / np.maximum(sums[:, 1], 1)
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    return np.array([-bleu._compute_score_from_stats(list(row)).score for row in sums.astype(int)])


def bleu_stats(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """sacrebleu's per-sentence BLEU counts (m, 10): what :class:`SentenceStats` "bleu" holds
    (sacrebleu's own significance tests bootstrap the same statistics)."""
    from sacrebleu.metrics import BLEU

    return np.asarray(BLEU()._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.int64).reshape(
        -1, 10
    )
