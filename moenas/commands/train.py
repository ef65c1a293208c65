"""`moenas train`: train a weight-sharing supernet (slice or MoS), or one sub-Transformer.

  moenas train --space tiny --corpus default --steps 2000 --out runs/supernet.pt
  moenas train --space lm-tiny --corpus default --steps 2000 --out runs/lm.pt   # a language-model supernet
  moenas train --space tiny --supernet mos --sampling sandwich --steps 2000 --out runs/mos.pt
  moenas train --space tiny --steps 4000 --out runs/supernet.pt --resume     # continue to 4000
  moenas train --space tiny --arch best.json --init-from runs/supernet.pt --steps 1000 --out runs/best.pt
  torchrun --nproc-per-node 2 -m moenas.cli train ...                         # data parallel

The default corpus is a small English->German demo corpus built from this machine's gettext
catalogs; pass --corpus DIR (train.en/train.de, optional valid.*/test.*) for a real one.
A decoder-only space (lm-tiny, lm-small) trains a causal language model on the shipped English
text corpus (or --corpus DIR of *.txt files) cut into --block-len token blocks, and reports
validation loss and perplexity.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from moenas.arch import UserError, load_arch, load_space

from ._common import check_writable, print_json

# Settings whose flag is not simply --NAME VALUE: its flag name, or how the CLI reads it.
_FLAGS = {"cache_dir": "--cache", "eval_archs": "--eval-arch"}


def _add_setting(group: argparse._ActionsContainer, f: dataclasses.Field) -> None:
    """The flag of one TrainConfig field: its help, choices and metavar from the field's
    metadata, its default from the field (shown in --help), its dest the field's name."""
    flag = _FLAGS.get(f.name, f"--{f.name.replace('_', '-')}")
    meta = f.metadata
    if f.name == "progress":
        group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
        return
    if f.name == "eval_archs":  # repeatable; None = the field's default
        help_ = f"{meta['help']} (default: {', '.join(f.default_factory())})"
        group.add_argument(flag, dest=f.name, action="append", help=help_, **meta["cli"])
        return
    if f.name == "steps":  # no default: a run says how long it trains
        group.add_argument(flag, type=int, required=True, help=meta["help"])
        return
    shown = "" if f.default is None else f" (default: {f.default})"
    kind = {"int": int, "float": float}.get(f.type.removesuffix(" | None"), str)
    group.add_argument(flag, dest=f.name, type=kind, default=f.default, help=meta["help"] + shown, **meta["cli"])


def register(sub: argparse._SubParsersAction) -> None:
    from moenas.search.train_config import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a supernet (slice/MoS) or one sub-Transformer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = {
        None: p,
        "optimisation": p.add_argument_group("optimisation"),
        "evaluation": p.add_argument_group("evaluation"),
    }
    p.add_argument("--out", required=True, help="checkpoint file to write (metadata goes to OUT.json)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out (exactly)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    for f in dataclasses.fields(TrainConfig):
        _add_setting(groups[f.metadata["group"]], f)
    p.add_argument("--json", action="store_true", help="print the final metadata as JSON")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig's fields from `moenas train`'s flags (each flag's dest is its field's name):
    the arch files read as canonical JSON, an unset --eval-arch left to the field's default."""
    from moenas.search.train_config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if values["arch"]:
        values["arch"] = load_arch(values["arch"]).to_json()
    if values["eval_archs"] is None:
        del values["eval_archs"]
    else:
        values["eval_archs"] = [
            a if a in ("largest", "smallest") else load_arch(a).to_json() for a in values["eval_archs"]
        ]
    return values


def run(args: argparse.Namespace) -> int:
    from moenas.search.train_config import TrainConfig
    from moenas.search.train_data import check_corpus_for
    from moenas.search.trainer import train

    if args.init_from and not args.arch:
        raise UserError("--init-from needs --arch (it initialises one sub-Transformer from a supernet)")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other")
    check_writable(args.out)  # before the corpus, the tokenizer and the first step, not at the first save
    if args.cache_dir:
        check_writable(args.cache_dir, "--cache", kind="dir")
    settings = settings_from_args(args)
    check_corpus_for(load_space(args.space).family, args.corpus)
    cfg = TrainConfig(**settings)  # range-checks every number, before any data is read
    meta = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if args.json and meta:
        print_json(meta)
    return 0
