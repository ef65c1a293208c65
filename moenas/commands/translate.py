"""`moenas translate --model DIR`: translate sentences with an exported model (onnxruntime).

  echo "Cannot open file" | moenas translate --model runs/demo/model
  moenas translate --model model/ --input sentences.txt --beam 5 > out.txt

DIR is written by `moenas export ... --supernet CKPT` or `--checkpoint CKPT` (graphs with
trained weights plus the tokenizer). One sentence per input line, one translation per output
line, in order; empty lines stay empty.
"""

from __future__ import annotations

import argparse
import sys
import time

from ._common import check_at_least, print_json, read_lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "translate",
        help="translate text with an exported model (onnxruntime)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="export directory with trained weights (moenas export --supernet/--checkpoint)"
    )
    p.add_argument("--input", help="file of sentences, one per line (default: standard input)")
    p.add_argument("--beam", type=int, default=1, help="beam size, 1 = greedy (default: 1)")
    p.add_argument("--max-len", type=int, default=64, help="subwords per sentence, in and out (default: 64)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads, 0 = its default (default: 0)")
    p.add_argument("--json", action="store_true", help="print [{source, translation}] and timing as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from moenas.search.deploy import OnnxTranslator

    check_at_least("--beam", args.beam, 1)
    check_at_least("--max-len", args.max_len, 2)
    check_at_least("--threads", args.threads, 0)
    translator = OnnxTranslator(args.model, threads=args.threads)
    lines = read_lines(args.input)
    todo = [i for i, s in enumerate(lines) if s.strip()]
    t0 = time.perf_counter()
    outs = translator.translate([lines[i] for i in todo], beam=args.beam, max_len=args.max_len)
    elapsed = time.perf_counter() - t0
    result = [""] * len(lines)
    for i, o in zip(todo, outs):
        result[i] = o
    if args.json:
        print_json(
            {
                "model": args.model,
                "arch_id": translator.arch.arch_id,
                "beam": args.beam,
                "seconds": round(elapsed, 3),
                "translations": [{"source": s, "translation": t} for s, t in zip(lines, result)],
            }
        )
    else:
        sys.stdout.write("".join(t + "\n" for t in result))
        print(
            f"translated {len(todo)} sentences in {elapsed:.2f} s (arch {translator.arch.arch_id}, beam {args.beam})",
            file=sys.stderr,
        )
    return 0
