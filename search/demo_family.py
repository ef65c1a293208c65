"""What `moenas demo` does differently per model family: one :class:`DemoFamily` per family,
looked up in :data:`DEMO_FAMILIES` (never branched on).

A family's demo budgets one latency quantity (translation: the whole inference's latency; a
language model: its decode ms per generated token), so its latency predictor is fitted to that
quantity's component; it reports the supernet's quality in its own figures (BLEU, or
perplexity), explains its measurements in its own words, and tries the exported model in its
own way (one test sentence translated, or a few test-split prompts continued with the timings
of the prefill and of each decode step). Everything else (stages, reuse, search, final
selection by measurement, the report's frame) is :mod:`.pipeline`'s and :mod:`.demo_report`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry, ModelFamily
from moenas.arch.protocol import Protocol

from .budgets import DECODE_PER_TOKEN, LATENCY, LatencyQuantity, tokens_per_s
from .report import REPORT_LAYOUTS, md_cell

# Prompts the exported language model continues in the demo's last stage.
DEPLOY_PROMPTS = 3


def budget_text(q: LatencyQuantity, value: float) -> str:
    """'a latency budget of 9.5 ms' / 'a decode per token budget of 0.41 ms/token'."""
    return f"a {q.label} budget of {value:.3g} {q.unit}"


class DemoFamily:
    """The demo of one model family (see the module docstring)."""

    family: ClassVar[ModelFamily]
    quantity: ClassVar[LatencyQuantity]  # what the budget limits; the predictor is fitted to its component
    sample_unit: ClassVar[str]  # what the fitness's error bar counts over: "sentences", "blocks"
    quality_keys: ClassVar[tuple[str, ...]]  # the supernet's figures kept from SupernetFitness.quality
    deploy_verb: ClassVar[str]  # the last stage's title: what onnxruntime does with the export

    @property
    def target(self) -> str:
        """The latency predictor's target (``moenas fit --target``): the budget's component."""
        return self.quantity.component

    def figures(self, row: dict[str, Any]) -> str:
        """The supernet's quality figures of one arch beside its validation loss."""
        raise NotImplementedError

    def quality_note(self, cfg: Any, s: dict[str, Any], protocol: Protocol) -> str:
        """The sentence on how the picks' quality was judged (``s``: the demo summary)."""
        raise NotImplementedError

    def try_export(self, demo: Any, ckpt: Path, model_dir: Path, protocol: Protocol) -> dict[str, Any]:
        """Run the exported model on the checkpoint corpus's test split: what it did, and the
        command that does it again (``demo``: the running :class:`~.pipeline.Demo`)."""
        raise NotImplementedError

    def deploy_text(self, dep: dict[str, Any]) -> str:
        """What onnxruntime did with the export, in one clause (the report and stdout)."""
        raise NotImplementedError

    def deploy_section(self, dep: dict[str, Any]) -> list[str]:
        """A Markdown section of the export's outputs (none by default)."""
        return []


class TranslationDemo(DemoFamily):
    """Encoder-decoder translation: a total-latency budget, BLEU, one test sentence translated."""

    family = ENCODER_DECODER
    quantity = LATENCY
    sample_unit = "sentences"
    quality_keys = ("bleu",)
    deploy_verb = "translate with onnxruntime"

    def figures(self, row: dict[str, Any]) -> str:
        return f"test BLEU {row['bleu']:.1f} (greedy)"

    def quality_note(self, cfg: Any, s: dict[str, Any], protocol: Protocol) -> str:
        beam = next((v.get("beam") for v in s["picks"].values() if v.get("beam")), "-")
        return (
            f"BLEU / chrF: sacrebleu, {cfg.bleu_sentences} sentences of the corpus's test split decoded with "
            f"beam {beam}, the beam the latency was timed with (the supernet's largest / smallest archs below: greedy)."
        )

    def try_export(self, demo: Any, ckpt: Path, model_dir: Path, protocol: Protocol) -> dict[str, Any]:
        from .checkpoint import checkpoint_corpus, read_checkpoint
        from .deploy import OnnxTranslator

        src, ref = checkpoint_corpus(read_checkpoint(ckpt)["meta"]).test[0]
        out = OnnxTranslator(model_dir, threads=demo.cfg.threads).translate([src])[0]
        demo.log(f"onnxruntime, {model_dir}: {src!r} -> {out!r} (reference {ref!r})")
        return {
            "source": src,
            "reference": ref,
            "output": out,
            "command": f"echo {json.dumps(src)} | moenas translate --model {model_dir}",
        }

    def deploy_text(self, dep: dict[str, Any]) -> str:
        return f'onnxruntime translated "{dep["source"]}" as "{dep["output"]}" (reference: "{dep["reference"]}")'


class LanguageModelDemo(DemoFamily):
    """Decoder-only language model: a decode ms/token budget, perplexity, a few test-split
    prompts continued greedily by the export with the prefill and decode timings."""

    family = DECODER_ONLY
    quantity = DECODE_PER_TOKEN
    sample_unit = "blocks"
    quality_keys = ("perplexity",)
    deploy_verb = "generate continuations with onnxruntime"

    def figures(self, row: dict[str, Any]) -> str:
        return f"perplexity {row['perplexity']:.1f}"

    def quality_note(self, cfg: Any, s: dict[str, Any], protocol: Protocol) -> str:
        return REPORT_LAYOUTS.for_family(self.family).quality_note({"protocol": protocol.to_dict()})

    def try_export(self, demo: Any, ckpt: Path, model_dir: Path, protocol: Protocol) -> dict[str, Any]:
        """The first test documents' opening subwords (the prompts of the picks' sample
        continuations) continued for the protocol's decode steps."""
        from .checkpoint import checkpoint_corpus, read_checkpoint
        from .evaluation import document_prompts, sample_lengths
        from .lm_deploy import OnnxGenerator

        gen = OnnxGenerator(model_dir, threads=demo.cfg.threads)
        tok, steps = gen.tokenizer, protocol.decode_steps
        docs = checkpoint_corpus(read_checkpoint(ckpt)["meta"]).test
        samples = []
        for prompt, reference in document_prompts(tok, docs, DEPLOY_PROMPTS, *sample_lengths(gen.context_length)):
            g = gen.generate(tok.decode(prompt), max_new_tokens=steps).to_dict()
            samples.append({"reference": tok.decode(reference), "output": g.pop("continuation"), **g})
            demo.log(f"onnxruntime, {model_dir}: {samples[-1]['prompt']!r} -> {samples[-1]['output']!r}")
        ms_per_token = _mean([x["decode_ms_per_token"] for x in samples])
        shown = samples[0]["prompt"] if samples else "The"
        return {
            "samples": [{k: x[k] for k in SAMPLE_KEYS} for x in samples],
            "prompt_tokens": _mean([x["n_prompt"] for x in samples]),
            "prefill_ms": _mean([x["prefill_ms"] for x in samples]),
            "decode_ms_per_token": ms_per_token,
            "tokens_per_s": tokens_per_s(ms_per_token),
            "max_new_tokens": steps,
            "command": f"moenas generate --model {model_dir} --max-new-tokens {steps} --prompt {json.dumps(shown)}",
        }

    def deploy_text(self, dep: dict[str, Any]) -> str:
        n = len(dep["samples"])
        if not n:
            return "no test document was long enough to prompt the export"
        return (
            f"onnxruntime continued {n} test-split prompts greedily (up to {dep['max_new_tokens']} tokens each): "
            f"prefill {dep['prefill_ms']:.3g} ms ({dep['prompt_tokens']:.0f}-token prompts), decode {_cell(dep['decode_ms_per_token'])} ms/token, "
            f"{_cell(dep['tokens_per_s'], '.0f')} tokens/s (means over the prompts)"
        )

    def deploy_section(self, dep: dict[str, Any]) -> list[str]:
        if not dep["samples"]:
            return []
        lines = [
            f"## Continuations by the exported model (onnxruntime, greedy, `{dep['model_dir']}`)",
            "",
            "| prompt | output | reference | prompt tokens | prefill ms | decode ms/token | tokens/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in dep["samples"]:
            lines.append(
                f"| {md_cell(x['prompt'])} | {md_cell(x['output'])} | {md_cell(x['reference'])} | {x['n_prompt']} | "
                f"{x['prefill_ms']:.3g} | {_cell(x['decode_ms_per_token'])} | {_cell(x['tg_tokens_per_s'], '.0f')} |"
            )
        return [*lines, ""]


# What the report keeps of each onnxruntime generation (lm_deploy.Generation.to_dict's names).
SAMPLE_KEYS = (
    "prompt",
    "output",
    "reference",
    "n_prompt",
    "n_gen",
    "stop",
    "prefill_ms",
    "decode_ms_per_token",
    "tg_tokens_per_s",
)


def _mean(xs: list[float | None]) -> float | None:
    """The mean of the values given (None: none given)."""
    given = [x for x in xs if x is not None]
    return sum(given) / len(given) if given else None


def _cell(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


DEMO_FAMILIES: FamilyRegistry[DemoFamily] = FamilyRegistry("demo", (TranslationDemo(), LanguageModelDemo()))
