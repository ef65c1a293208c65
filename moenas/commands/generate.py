"""`moenas generate --model DIR`: continue prompts with an exported language model (onnxruntime,
greedy, one prompt at a time).

  moenas generate --model model/ --prompt "The function returns"
  printf 'Return the\\nA list of\\n' | moenas generate --model model/ --max-new-tokens 16
  moenas generate --model model/ --prompt "Open the file" --json

DIR is written by `moenas export LM_ARCH.json --supernet CKPT --out DIR` (or `--checkpoint CKPT`)
for a decoder-only language model: prefill and decode graphs with trained weights plus the
tokenizer. The prompt runs through the prefill graph in one pass, then one decode step per new
token, each step's present keys/values fed back as the next step's past; generation stops at
the end-of-text token, after --max-new-tokens tokens, or at the model's context length (its
training block length; a longer prompt keeps its last tokens). Prompts come from --prompt
(repeatable) or from standard input, one per line (blank lines skipped), and are all checked
before the first is generated. Each prompt is echoed and its continuation streamed as it is
generated, one line per prompt; a summary with the speeds goes to stderr. --json prints instead
one JSON object per prompt and line: prompt, continuation, prompt and new token ids, why it
stopped, and the timing as llama-bench reports it (pp = prompt processing, the prefill; tg =
text generation, the decode steps; tokens/s of each).
"""

from __future__ import annotations

import argparse
import json
import sys

from moenas.arch import UserError
from moenas.arch.protocol import LMProtocol

from ._common import check_at_least, read_lines

DEFAULT_MAX_NEW_TOKENS = LMProtocol.decode_steps  # the decode steps the latency protocol times (tg32)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="continue prompts with an exported language model (onnxruntime, greedy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="export directory of a language model with trained weights (moenas export --supernet/--checkpoint)",
    )
    p.add_argument(
        "--prompt", action="append", metavar="TEXT", help="a prompt; repeatable (default: one per line of stdin)"
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help=f"at most N new tokens per prompt (default: {DEFAULT_MAX_NEW_TOKENS})",
    )
    p.add_argument(
        "--threads", type=int, default=0, metavar="N", help="onnxruntime intra-op threads, 0 = its default (default: 0)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per prompt: text, ids and timing")
    p.set_defaults(func=run)


def _prompts(given: list[str] | None) -> list[str]:
    """--prompt's values, or the non-blank lines of standard input; UserError when none."""
    if given is not None:
        return given
    prompts = [line for line in read_lines(None) if line.strip()]
    if not prompts:
        raise UserError("standard input holds no prompt (one per line, or pass --prompt TEXT)")
    return prompts


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run(args) -> int:
    from moenas.search.lm_deploy import OnnxGenerator

    check_at_least("--max-new-tokens", args.max_new_tokens, 1)
    check_at_least("--threads", args.threads, 0)
    generator = OnnxGenerator(args.model, threads=args.threads)
    prompts = _prompts(args.prompt)
    for text in prompts:  # every prompt checked before the first is generated: bad input prints nothing
        generator.encode(text)
    results = []
    for text in prompts:
        if args.json:
            res = generator.generate(text, args.max_new_tokens)
            _write(json.dumps({"arch_id": generator.arch.arch_id, **res.to_dict()}, sort_keys=True) + "\n")
        else:
            _write(text)
            res = generator.generate(text, args.max_new_tokens, on_text=_write)
            _write("\n")
        results.append(res)
    if not args.json:
        new = sum(len(r.ids) for r in results)
        steps = sum(r.decode_steps for r in results)
        pp = sum(len(r.prompt_ids) for r in results) / sum(r.prefill_s for r in results)
        tg = f"{steps / sum(r.decode_s for r in results):.1f}" if steps else "-"
        print(
            f"generated {new} tokens for {len(results)} prompt(s) (arch {generator.arch.arch_id}): "
            f"pp {pp:.1f} tokens/s, tg {tg} tokens/s",
            file=sys.stderr,
        )
    return 0
