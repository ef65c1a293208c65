"""`moenas space`: sample, validate and describe archs of a search space."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from moenas.arch import SearchSpace, load_arch, load_archs, shipped_spaces
from moenas.arch.cost import protocol_cost
from moenas.arch.errors import UserError
from moenas.arch.family import DEFAULT_FAMILY, TOTAL
from moenas.arch.protocol import PROTOCOLS, LMProtocol, Protocol

from ._common import check_at_least, print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "space",
        help="sample, validate and describe archs of a search space",
        description="Sample, validate and describe archs of a search space.",
    )
    ssub = p.add_subparsers(dest="space_command", metavar="ACTION", parser_class=type(p))
    s = ssub.add_parser("sample", help="print N sampled archs as JSON lines")
    s.add_argument(
        "--space",
        default="tiny",
        help="shipped space name (tiny, hat-wmt, automoe-wmt, lm-tiny, lm-small) or a YAML file [tiny]",
    )
    s.add_argument("--n", type=int, default=10, help="how many archs [10]")
    s.add_argument("--seed", type=int, default=0, help="random seed [0]")
    s.set_defaults(func=_sample)
    v = ssub.add_parser("validate", help="check archs (JSON or JSON lines) against a space")
    v.add_argument("file", help="ARCH.json or ARCHS.jsonl")
    v.add_argument(
        "--space", default=None, help="space name or YAML file [none: report which shipped spaces hold each arch]"
    )
    v.set_defaults(func=_validate)
    st = ssub.add_parser("stats", help="params, active params, FLOPs and bytes per component")
    st.add_argument("file", help="ARCH.json")
    st.add_argument("--space", default=None, help="also validate against this space")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    for f, default in (("batch", 1), ("src-len", 30), ("decoder-steps", 30), ("beam", 5)):
        st.add_argument(f"--{f}", type=int, default=None, help=f"latency protocol {f} [{default}]")
    for f, default in (("prompt-len", LMProtocol.prompt_len), ("decode-steps", LMProtocol.decode_steps)):
        st.add_argument(f"--{f}", type=int, default=None, help=f"latency protocol {f}, decoder-only archs [{default}]")
    st.set_defaults(func=_stats)
    i = ssub.add_parser("info", help="describe a space: genes, allowed values, size")
    i.add_argument("--space", default="tiny")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _sample(args: argparse.Namespace) -> int:
    check_at_least("--n", args.n, 1)
    check_at_least("--seed", args.seed, 0)
    space = SearchSpace.load(args.space)
    for a in space.iter_samples(args.n, seed=args.seed):  # streamed: the first lines come at once
        sys.stdout.write(a.to_json() + "\n")
    return 0


def _validate(args: argparse.Namespace) -> int:
    archs = load_archs(args.file)
    if args.space is None:
        return _which_spaces(args.file, archs)
    space = SearchSpace.load(args.space)
    bad = 0
    for n, a in enumerate(archs, 1):
        for v in space.violations(a):
            bad += 1
            sys.stderr.write(f"{args.file}: arch {n} ({a.arch_id}): {v}\n")
    if bad:
        return 2
    print(f"{len(archs)} arch(s) valid in space {space.name!r}")
    return 0


def _which_spaces(path: str, archs) -> int:
    """For each arch, the shipped spaces that hold it; for one that none holds, the violations
    of the closest space (fewest). Exit 2 when any arch fits no shipped space."""
    spaces = [SearchSpace.load(n) for n in shipped_spaces()]
    lost = 0
    for n, a in enumerate(archs, 1):
        found = {sp.name: sp.violations(a) for sp in spaces if sp.family is a.family}
        inside = [name for name, v in found.items() if not v]
        if inside:
            print(f"{path}: arch {n} ({a.arch_id}): in {', '.join(inside)}")
            continue
        lost += 1
        name, viol = min(found.items(), key=lambda kv: len(kv[1]))
        sys.stderr.write(
            f"{path}: arch {n} ({a.arch_id}): in no shipped space; closest {name!r} ({len(viol)} violations): "
            f"{'; '.join(map(str, viol[:3]))}{' ...' if len(viol) > 3 else ''}\n"
        )
    return 2 if lost else 0


def _stats(args: argparse.Namespace) -> int:
    arch = load_arch(args.file)
    if args.space:
        SearchSpace.load(args.space).validate(arch)
    protocol = _protocol(args, arch.family.name)
    cost = protocol_cost(arch, protocol)
    s = cost.summary()
    if args.json:
        print_json({"arch_id": arch.arch_id, "protocol": protocol.to_dict(), **s})
        return 0
    n_moe = sum(layer.is_moe for _, _, layer in arch.layers)
    stacks = [f"{name} {len(st.layers)} x {st.embed_dim}" for name, st in _stacks(arch)]
    family = "" if arch.family is DEFAULT_FAMILY else f"{arch.family.name}, "
    print(f"arch {arch.arch_id}: {family}{', '.join(stacks)}, {n_moe} MoE layer(s), top-{arch.top_k}")
    print(
        f"params: {s['params_total'] / 1e6:.2f} M total, {s['params_active'] / 1e6:.2f} M active per token "
        f"({s['params_embedding'] / 1e6:.2f} M embeddings)"
    )
    rows = []
    for comp in protocol.family.components:
        rows.append(
            [
                comp,
                s[f"flops_{comp}"] / 1e9,
                s[f"bytes_{comp}"] / 1e6,
                s[f"flops_{comp}_experts"] / 1e9 + s[f"flops_{comp}_ffn"] / 1e9,
                s[f"flops_{comp}_attention"] / 1e9,
            ]
        )
    rows.append([TOTAL, s["flops_total"] / 1e9, s["bytes_total"] / 1e6, "", ""])
    print(f"protocol: {protocol.describe()}, uniform routing")
    print(table(rows, ["component", "GFLOPs", "MB moved", "FFN GFLOPs", "attn GFLOPs"]))
    return 0


# the protocol fields `space stats` takes as flags (--src-len sets src_len); each protocol
# takes those of its own fields
_PROTOCOL_FLAGS = ("batch", "src_len", "decoder_steps", "beam", "prompt_len", "decode_steps")


def _protocol(args: argparse.Namespace, family: str) -> Protocol:
    """The protocol of the arch's family from the flags given (the rest: its defaults); a flag
    of another family's protocol is refused rather than ignored."""
    cls = PROTOCOLS.for_family(family)
    given = {f: getattr(args, f) for f in _PROTOCOL_FLAGS if getattr(args, f) is not None}
    foreign = [f for f in given if f not in {x.name for x in fields(cls)}]
    if foreign:
        flags = ", ".join(f"--{f.replace('_', '-')}" for f in foreign)
        raise UserError(f"{flags}: not a setting of the {family} latency protocol (this arch is {family})")
    return cls(**given)


def _stacks(x) -> list[tuple[str, object]]:
    """(name, stack) of an arch or a space, encoder first."""
    return [(name, getattr(x, name)) for name in ("encoder", "decoder") if hasattr(x, name)]


def _info(args: argparse.Namespace) -> int:
    space = SearchSpace.load(args.space)
    d = {
        "name": space.name,
        "vocab_size": space.vocab_size,
        "qkv_dim": space.qkv_dim,
        "top_k": list(space.top_k),
        **{name: {k: list(v) for k, v in vars(st).items() if v is not None} for name, st in _stacks(space)},
        "size": space.size(),
        "log10_size": space.log10_size(),
        "encoding_length": len(space.feature_names()),
    }
    if space.family is not DEFAULT_FAMILY:
        d = {"name": space.name, "family": space.family.name, **d}
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    family = "" if space.family is DEFAULT_FAMILY else f" ({space.family.name})"
    print(
        f"space {space.name}{family}: {space.size():.3e} archs, vocabulary {space.vocab_size}, qkv {space.qkv_dim}, top-k {list(space.top_k)}"
    )
    rows = [[stack, gene, ", ".join(map(str, vals))] for stack, _ in _stacks(space) for gene, vals in d[stack].items()]
    print(table(rows, ["stack", "gene", "allowed"]))
    return 0
