"""`moenas export [ARCH.json] --out DIR`: an arch's encoder and decoder step as ONNX graphs
(a decoder-only language model's: its prefill and decode step).

  moenas export arch.json --out exp/                                  # seeded random weights (profiling)
  moenas export best_arch.json --supernet runs/demo/supernet.pt --out model/   # inherited weights
  moenas export --checkpoint runs/best.pt --out model/                 # a standalone trained model
  moenas export lm_arch.json --supernet runs/lm.pt --out lm/          # a language model's

With --supernet or --checkpoint the directory also holds the trained weights (inline in the
graphs), the tokenizer and every convention a client needs (manifest.json,
generation_config.json, genai_config.json); the checkpoint must be of the arch's family
(translation or language model). `moenas translate --model DIR` translates with a translation
model's, `moenas generate --model DIR` continues prompts with a language model's.
"""

from __future__ import annotations

import argparse
import json

from moenas.arch import SearchSpace, UserError

from ._common import check_range, check_writable, print_json, read_archs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export an arch to ONNX (encoder + incremental decoder step, or prefill + decode step), "
        "optionally with trained weights and tokenizer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("arch", nargs="?", help="arch JSON file (or JSON lines: the first arch); optional with --checkpoint")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--space", help="validate the arch against this space first")
    w = p.add_mutually_exclusive_group()
    w.add_argument(
        "--supernet",
        metavar="CKPT",
        help="export the arch with weights inherited from this supernet checkpoint (of the arch's family)",
    )
    w.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="export the standalone model of this checkpoint (moenas train --arch; either family)",
    )
    p.add_argument("--seed", type=int, default=0, help="weight seed without a checkpoint (build_model; default: 0)")
    p.add_argument(
        "--method", default="torchscript", choices=["torchscript", "dynamo"], help="exporter (default: torchscript)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 14-23 (default: 17)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from moenas.profiler.onnx_export import MANIFEST, export_to_dir, manifest_parts
    from moenas.profiler.onnx_export_lm import exporter_for

    check_range("--opset", args.opset, 14, 23)
    check_range("--seed", args.seed, 0)
    check_writable(args.out, kind="dir")
    space = SearchSpace.load(args.space) if args.space else None
    arch = None
    if args.arch:
        archs = read_archs(args.arch, space)
        if not archs:
            raise UserError(f"{args.arch}: no arch in the file")
        arch = archs[0]
    elif not args.checkpoint:
        raise UserError("an ARCH file is needed (only --checkpoint, whose model holds its arch, goes without one)")
    extra: list[str] = []
    if args.supernet or args.checkpoint:
        if args.method != "torchscript":
            raise UserError("--method dynamo exports random weights only; trained weights use torchscript")
        from moenas.search.deploy import export_trained
        from moenas.search.trained_export import CONFIG_FILES, TOKENIZER_FILE

        out = export_trained(
            arch, args.supernet or args.checkpoint, args.out, opset=args.opset, overwrite=args.overwrite
        )
        extra = [TOKENIZER_FILE, *CONFIG_FILES]
    else:
        out = export_to_dir(
            arch,
            args.out,
            seed=args.seed,
            method=args.method,
            opset=args.opset,
            overwrite=args.overwrite,
            exporter=exporter_for(arch),
        )
    manifest = json.loads((out / MANIFEST).read_text())
    if args.json:
        print_json(manifest)
    else:
        weights = manifest.get("weights", {}).get("source", f"random, seed {manifest['seed']}")
        graphs = [manifest[part]["file"] for part in manifest_parts(manifest, str(out / MANIFEST))]
        files = ", ".join([*graphs, MANIFEST, *extra])
        print(
            f"exported {manifest['arch_id']} to {out}/ ({files}; weights: {weights}; "
            f"{manifest['method']}, opset {manifest['opset']})"
        )
    return 0
