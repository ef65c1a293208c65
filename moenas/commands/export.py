"""`moenas export ARCH.json --out DIR`: the arch's encoder and decoder step as ONNX graphs."""
from __future__ import annotations

import argparse

from moenas.arch import SearchSpace, UserError

from ._common import print_json, read_archs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export an arch to ONNX (encoder + incremental decoder step)",
        description="Write encoder.onnx, decoder.onnx and manifest.json for one arch (the first of a JSON-lines file).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("arch", help="arch JSON file (or JSON lines: the first arch)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--space", help="validate the arch against this space first")
    p.add_argument("--seed", type=int, default=0, help="weight seed (build_model)")
    p.add_argument("--method", default="torchscript", choices=["torchscript", "dynamo"], help="exporter")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from moenas.profiler.onnx_export import export_to_dir

    space = SearchSpace.load(args.space) if args.space else None
    archs = read_archs(args.arch, space)
    if not archs:
        raise UserError(f"{args.arch}: no arch in the file")
    out = export_to_dir(archs[0], args.out, seed=args.seed, method=args.method, opset=args.opset, overwrite=args.overwrite)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    if args.json:
        print_json(manifest)
    else:
        print(f"exported {manifest['arch_id']} to {out}/ (encoder.onnx, decoder.onnx, manifest.json; "
              f"{manifest['method']}, opset {manifest['opset']})")
    return 0
