"""`moenas train`: train a weight-sharing supernet (slice or MoS), or one sub-Transformer.

  moenas train --space tiny --corpus default --steps 2000 --out runs/supernet.pt
  moenas train --space tiny --supernet mos --sampling sandwich --steps 2000 --out runs/mos.pt
  moenas train --space tiny --steps 4000 --out runs/supernet.pt --resume     # continue to 4000
  moenas train --space tiny --arch best.json --init-from runs/supernet.pt --steps 1000 --out runs/best.pt
  torchrun --nproc-per-node 2 -m moenas.cli train ...                         # data parallel

The default corpus is a small English->German demo corpus built from this machine's gettext
catalogs; pass --corpus DIR (train.en/train.de, optional valid.*/test.*) for a real one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from moenas.arch import UserError, load_arch

from ._common import check_writable, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a supernet (slice/MoS) or one sub-Transformer",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="tiny", help="search space name or YAML file (default: tiny)")
    p.add_argument("--corpus", default="default",
                   help="'default' (gettext demo corpus) or a directory with train.en/train.de (default: default)")
    p.add_argument("--steps", type=int, required=True, help="total optimizer steps (also the target when resuming)")
    p.add_argument("--out", required=True, help="checkpoint file to write (metadata goes to OUT.json)")
    p.add_argument("--supernet", choices=["slice", "mos"], default="slice",
                   help="slice: HAT/AutoMoE weight sharing; mos: Mixture-of-Supernets (default: slice)")
    p.add_argument("--sampling", choices=["uniform", "sandwich"], default="uniform",
                   help="uniform: one random arch per step; sandwich: largest + smallest + N random (default: uniform)")
    p.add_argument("--sandwich-random", type=int, default=2, metavar="N", help="random archs per sandwich step (default: 2)")
    p.add_argument("--arch", help="train this one arch (JSON file) as a standalone model instead of a supernet")
    p.add_argument("--init-from", metavar="CKPT", help="with --arch: start from the arch's weights inherited from this supernet checkpoint "
                        "(or continue a standalone checkpoint of the same arch)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out (exactly)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--cache", metavar="DIR", help="tokenizer cache (default: $MOENAS_CACHE or ~/.cache/moenas)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--max-tokens", type=int, default=2048, help="tokens per batch per process (default: 2048)")
    g.add_argument("--max-len", type=int, default=64, help="truncate sentences to this many subwords (default: 64)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    g.add_argument("--warmup", type=int, default=200, help="linear warm-up steps (default: 200)")
    g.add_argument("--schedule", choices=["inverse_sqrt", "cosine"], default="inverse_sqrt")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--clip-norm", type=float, default=1.0, help="gradient clipping norm, 0 = off (default: 1.0)")
    g.add_argument("--aux-coef", type=float, default=0.01, help="MoE load-balancing loss coefficient (default: 0.01)")
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--mos-experts", type=int, default=2, help="MoS: weight banks per FFN (default: 2)")
    g.add_argument("--mos-mode", choices=["layer", "neuron"], default="layer", help="MoS mixing granularity (default: layer)")
    g.add_argument("--mos-init", choices=["copy", "independent"], default="copy",
                   help="MoS banks start as copies (step 0 = slice supernet) or independently drawn (default: copy)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA (bf16 autocast) when present, else CPU fp32")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-every", type=int, default=0, help="steps between validations (default: steps/5)")
    e.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (default: at each validation)")
    e.add_argument("--eval-arch", action="append", metavar="NAME|FILE",
                   help="arch to validate: largest, smallest or a JSON file; repeatable (default: largest, smallest)")
    e.add_argument("--valid-sentences", type=int, default=200, help="fixed validation subset size (default: 200)")
    e.add_argument("--bleu-sentences", type=int, default=100, help="sentences for the final BLEU, 0 = none (default: 100)")
    e.add_argument("--beam", type=int, default=1, help="beam for BLEU decoding, 1 = greedy (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final metadata as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moenas.search.train_config import TrainConfig
    from moenas.search.trainer import train

    if args.init_from and not args.arch:
        raise UserError("--init-from needs --arch (it initialises one sub-Transformer from a supernet)")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite contradict each other")
    check_writable(args.out)  # before the corpus, the tokenizer and the first step, not at the first save
    if args.cache:
        check_writable(args.cache, "--cache", kind="dir")
    arch_json = load_arch(args.arch).to_json() if args.arch else None
    eval_archs = []
    for name in args.eval_arch or ["largest", "smallest"]:
        eval_archs.append(name if name in ("largest", "smallest") else load_arch(name).to_json())
    if args.corpus != "default" and not Path(args.corpus).is_dir():
        raise UserError(f"--corpus {args.corpus}: not 'default' and not a directory")
    cfg = TrainConfig(
        space=args.space, corpus=args.corpus, steps=args.steps, supernet=args.supernet, sampling=args.sampling,
        sandwich_random=args.sandwich_random, arch=arch_json, init_from=args.init_from, cache_dir=args.cache,
        max_tokens=args.max_tokens, max_len=args.max_len, lr=args.lr, warmup=args.warmup, schedule=args.schedule,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, clip_norm=args.clip_norm,
        aux_coef=args.aux_coef, dropout=args.dropout, seed=args.seed, eval_every=args.eval_every,
        save_every=args.save_every, eval_archs=eval_archs, valid_sentences=args.valid_sentences,
        bleu_sentences=args.bleu_sentences, beam=args.beam, mos_experts=args.mos_experts, mos_mode=args.mos_mode,
        mos_init=args.mos_init, device=args.device, progress=not args.no_progress,
    )
    meta = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if args.json and meta:
        print_json(meta)
    return 0
