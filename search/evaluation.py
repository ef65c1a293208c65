"""What a trained model is worth: validation loss, translations and BLEU.

Every function takes a SuperNet (any arch of its space, inherited weights) or a
SubTransformer (``arch`` = its own), runs in eval mode without gradients and restores the
model's mode afterwards. Loss is token-level cross-entropy in nats without label smoothing
(for a language model - an LMSuperNet or a CausalLM, on blocks of a token stream - the mean
next-token NLL, whose exp is the perplexity: :func:`lm_validation`);
BLEU is sacrebleu's corpus BLEU (13a tokenisation) of detokenised outputs against the raw
references, chrF sacrebleu's character n-gram F-score; both name the decoding (beam) they scored.
A language model's readable sample is a greedy continuation of the start of a held-out document
(:func:`continuation_samples`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from moenas.arch import Arch, UserError
from moenas.arch.arch import AnyArch
from moenas.arch.lm_model import greedy_generate
from moenas.arch.model import EOS, MAX_LENGTH, PAD, SubTransformer, max_new_tokens
from moenas.data.batching import Batch, LMBatch, encode_pairs, fixed_block_batches
from moenas.data.tokenizer import SubwordTokenizer

from .fitness_noise import SentenceStats, bleu_stats
from .loss import run_inputs, token_nll
from .supernet import SuperNet, extract


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on the CPU (fp32: these CPUs have no fast bf16)."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def validation_loss(model: nn.Module, archs: Sequence[AnyArch], batches: Sequence[Batch | LMBatch]) -> list[float]:
    """Cross-entropy (nats/token) of each arch on ``batches``: a list, one value per arch."""
    return [value for value, _ in validation_scores(model, archs, batches)]


@torch.no_grad()
def validation_scores(
    model: nn.Module, archs: Sequence[AnyArch], batches: Sequence[Batch | LMBatch]
) -> list[tuple[float, SentenceStats]]:
    """Per arch: (cross-entropy in nats/token on ``batches``, its per-sentence statistics in
    batch order, from which :mod:`fitness_noise` bootstraps the value's error). A language
    model's batches hold blocks: its "sentences" are the blocks."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for arch in archs:
            if isinstance(model, SuperNet):
                model.space.validate(arch)
            total, count, stats = 0.0, 0, []
            for b in batches:
                b = b.to(device)
                with autocast(device):
                    states, weight = run_inputs(model, b.inputs, arch, hidden=True)
                nll, batch_sum = token_nll(states.float(), weight.float(), b.target)
                total += float(batch_sum)
                count += int(b.target.ne(PAD).sum())
                stats.append(sentence_sums(nll, b.target))
            out.append(
                (total / max(count, 1), SentenceStats("loss", np.concatenate(stats) if stats else np.zeros((0, 2))))
            )
    finally:
        model.train(was_training)
    return out


# Blocks per validation batch of :func:`lm_validation`: 16 x 128 tokens, the training default.
LM_EVAL_TOKENS = 2048


@torch.no_grad()
def lm_validation(
    model: nn.Module, blocks: torch.Tensor, arch: AnyArch | None = None, max_tokens: int = LM_EVAL_TOKENS
) -> tuple[float, int]:
    """A language model's mean next-token NLL (nats/token) over ``blocks`` (n, L + 1) token ids
    (each block's first L are inputs, its last L their targets: ``data.batching.cut_blocks``), and
    the number of tokens it averages over. The model: a CausalLM, or an LMSuperNet with ``arch``
    (default: the one :meth:`SuperNet.set_arch` set). Perplexity is ``exp`` of the mean."""
    arch = arch if arch is not None else model.arch
    if arch is None:
        raise UserError("lm_validation of a supernet needs an arch (pass arch= or call set_arch)")
    ((value, stats),) = validation_scores(
        model, [arch], fixed_block_batches(blocks, max(max_tokens, blocks.shape[1] - 1))
    )
    return value, int(stats.stats[:, 1].sum())


def perplexity(loss: float) -> float:
    """A language model's perplexity from its mean next-token NLL (nats/token)."""
    return math.exp(loss)


def sentence_sums(nll: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(B, 2) per sentence: nats summed over its non-PAD tokens, token count; ``nll`` (N,)
    holds the non-PAD tokens of ``target`` (B, T) in row-major order."""
    keep = target.ne(PAD)
    rows = torch.arange(target.shape[0], device=target.device).unsqueeze(1).expand_as(target)[keep]
    sums = torch.zeros(target.shape[0], dtype=torch.float64, device=target.device).index_add_(0, rows, nll.double())
    return np.stack([sums.cpu().numpy(), keep.sum(1).cpu().numpy().astype(np.float64)], axis=1)


def _standalone(model: nn.Module, arch: Arch | None) -> SubTransformer:
    if isinstance(model, SuperNet):
        return extract(model, arch)
    return model


@torch.no_grad()
def translate(
    model: nn.Module,
    arch: Arch | None,
    tokenizer: SubwordTokenizer,
    sources: Sequence[str],
    beam: int = 1,
    max_len: int = 64,
    batch_size: int = 32,
) -> list[str]:
    """Detokenised translations of ``sources`` (in order), greedy (beam 1) or beam search,
    with ``arch``'s weights (inherited from a SuperNet, or the SubTransformer's own)."""
    if not sources:
        return []
    sub = _standalone(model, arch)
    was_training = sub.training
    sub.eval()
    try:
        return decode_sentences(
            sub.generate, tokenizer, sources, beam, max_len, batch_size, next(sub.parameters()).device
        )
    finally:
        sub.train(was_training)


def decode_sentences(
    generate,
    tokenizer: SubwordTokenizer,
    sources: Sequence[str],
    beam: int = 1,
    max_len: int = MAX_LENGTH,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> list[str]:
    """Translate with any ``generate(src (B, S) ids, beam=, max_len=) -> B id lists`` (the torch
    model's, or the ONNX translator's): sentences are encoded (+ EOS, each truncated to
    ``max_len - 1`` subwords), batched by length, decoded and put back in input order. Outputs
    stop at EOS or after min(max_len, 1.2 S + 10) subwords, S the batch's source length
    (fairseq's max_len_a/max_len_b as recommended for WMT)."""
    examples = encode_pairs(tokenizer, [(s, "") for s in sources], max_len)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    hyps: dict[int, str] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        src = torch.full((len(idx), max(len(examples[i][0]) for i in idx) + 1), PAD, dtype=torch.long)
        for r, i in enumerate(idx):
            ids = examples[i][0] + [tokenizer.eos_id]
            src[r, : len(ids)] = torch.tensor(ids)
        out_len = max_new_tokens(src.shape[1], max_len)
        for i, o in zip(idx, generate(src.to(device), beam=beam, max_len=out_len)):
            hyps[i] = tokenizer.decode(o)
    return [hyps[i] for i in range(len(sources))]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    if not hypotheses:
        return float("nan")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def bleu_score(
    model: nn.Module,
    arch: Arch | None,
    tokenizer: SubwordTokenizer,
    pairs: Sequence[tuple[str, str]],
    beam: int = 1,
    max_len: int = 64,
    batch_size: int = 32,
) -> float:
    """Corpus BLEU of ``arch`` translating ``pairs`` (source, reference)."""
    hyps = translate(model, arch, tokenizer, [s for s, _ in pairs], beam, max_len, batch_size)
    return corpus_bleu(hyps, [t for _, t in pairs])


def bleu_with_stats(
    model: nn.Module,
    arch: Arch | None,
    tokenizer: SubwordTokenizer,
    pairs: Sequence[tuple[str, str]],
    beam: int = 1,
    max_len: int = MAX_LENGTH,
) -> tuple[float, SentenceStats]:
    """Corpus BLEU of ``arch`` on ``pairs`` and its per-sentence statistics (fitness "bleu":
    value -BLEU, so that its bootstrap error is BLEU's)."""
    hyps = translate(model, arch, tokenizer, [s for s, _ in pairs], beam, max_len)
    refs = [t for _, t in pairs]
    return corpus_bleu(hyps, refs), SentenceStats("bleu", bleu_stats(hyps, refs))


def translation_report(
    model: nn.Module,
    arch: Arch | None,
    tokenizer: SubwordTokenizer,
    pairs: Sequence[tuple[str, str]],
    n_samples: int = 3,
    beam: int = 1,
    max_len: int = MAX_LENGTH,
) -> dict:
    """{"bleu", "chrf", "beam", "sentences", "samples": [{"source", "reference", "output"}] x
    n_samples}: BLEU and chrF over ``pairs`` decoded with ``beam`` (1 = greedy), and the first
    ``n_samples`` of them as readable triples."""
    hyps = translate(model, arch, tokenizer, [s for s, _ in pairs], beam, max_len)
    refs = [t for _, t in pairs]
    samples = [{"source": s, "reference": t, "output": h} for (s, t), h in list(zip(pairs, hyps))[:n_samples]]
    return {
        "bleu": corpus_bleu(hyps, refs),
        "chrf": corpus_chrf(hyps, refs),
        "beam": beam,
        "sentences": len(pairs),
        "samples": samples,
    }


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's chrF: character n-gram F-score, which separates archs whose BLEU ties on the
    demo corpus's short sentences (BLEU needs 4-gram matches a 2-word message rarely has)."""
    import sacrebleu

    if not hypotheses:
        return float("nan")
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


# A sample continuation: the first SAMPLE_PROMPT_TOKENS subwords of a document, then
# SAMPLE_NEW_TOKENS chosen greedily (each at most half the context).
SAMPLE_PROMPT_TOKENS, SAMPLE_NEW_TOKENS = 12, 16


@torch.no_grad()
def continuation_samples(
    model: nn.Module, arch: AnyArch | None, tokenizer: SubwordTokenizer, documents: Sequence[str], n: int, context: int
) -> list[dict[str, str]]:
    """[{"prompt", "reference", "output"}] for the first ``n`` ``documents`` long enough to hold
    a prompt and its reference: the prompt is the document's first subwords (after EOS, the
    separator every training document follows), the reference what the document says next and
    the output ``arch``'s greedy continuation (:func:`moenas.arch.lm_model.greedy_generate`,
    stopping at EOS) with weights inherited from an LMSuperNet, or a CausalLM's own.
    ``context``: the length the model was trained on (its block length, in tokens)."""
    prompt_len, new = sample_lengths(context)
    if n <= 0 or new <= 0:
        return []
    sub = _standalone(model, arch)
    was_training = sub.training
    sub.eval()
    out: list[dict[str, str]] = []
    try:
        for prompt, reference in document_prompts(tokenizer, documents, n, prompt_len, new):
            output = greedy_generate(sub, [EOS, *prompt], new, context)
            out.append(
                {
                    "prompt": tokenizer.decode(prompt),
                    "reference": tokenizer.decode(reference),
                    "output": tokenizer.decode(output),
                }
            )
    finally:
        sub.train(was_training)
    return out


def sample_lengths(context: int) -> tuple[int, int]:
    """(prompt subwords, new subwords) of a sample continuation for a model trained on
    ``context`` tokens: SAMPLE_PROMPT_TOKENS and SAMPLE_NEW_TOKENS, each at most half of it."""
    return min(SAMPLE_PROMPT_TOKENS, context // 2), min(SAMPLE_NEW_TOKENS, context // 2 - 1)


def document_prompts(
    tokenizer: SubwordTokenizer, documents: Sequence[str], n: int, prompt_len: int, new: int
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reference ids) of the first ``n`` ``documents`` of at least ``prompt_len +
    new`` subwords: the document's first ``prompt_len`` subwords and the ``new`` that follow."""
    out: list[tuple[list[int], list[int]]] = []
    for doc in documents:
        if len(out) == n:
            break
        ids = tokenizer.encode(doc)
        if len(ids) >= prompt_len + new:
            out.append((ids[:prompt_len], ids[prompt_len : prompt_len + new]))
    return out
