"""`moenas profile`: time archs on this machine into a profile dataset; `profile merge`, `profile split`.

    moenas profile --space tiny --n 400 --seed 0 --backend onnxruntime --device cpu --threads 1 \\
        --out profiles/tiny.parquet [--archs FILE.jsonl] [--shard I/N] [--resume] [--op-profile] \\
        [--repeat-check K] [--json]
    moenas profile --ray HEAD:6379 --devices cpu-xeon,rpi4 --space tiny --n 400 --out campaign/ [--resume]
    moenas profile merge A.parquet B.parquet ... --out C.parquet [--allow-mixed]
    moenas profile split DATA.parquet --holdout 0.25 --seed 0 --train-out T.parquet --holdout-out H.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moenas.arch import SearchSpace, UserError
from moenas.arch.files import output_lock

from ._common import check_range, check_writable, print_json, read_archs, table


def register(subparsers) -> None:
    from moenas.predictor.names import DESIGNS

    p = subparsers.add_parser(
        "profile",
        help="time archs on this machine (encoder, decoder, total; or prefill, decode, total) into a profile dataset",
        description="Sample (or read) archs, export them to ONNX, time them under the latency protocol of their "
        "model family (encoder-decoder: encoder, decoder; decoder-only: prefill, decode) and append "
        "rows to a Parquet profile dataset. `moenas profile merge` joins datasets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--space", help="search space name or YAML (sampled from unless --archs; archs are validated against it)"
    )
    p.add_argument("--n", type=int, default=100, help="archs to sample")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--archs", help="JSON / JSON-lines file of archs to time instead of sampling")
    p.add_argument(
        "--design",
        default="random",
        choices=DESIGNS,
        help="how the --n archs are chosen from --pool sampled candidates: random; space-filling "
        "(spread over the cost model's features); uncertainty (where a forest fitted on the archs "
        "the --resume'd dataset measured disagrees most; space-filling until it holds 5)",
    )
    p.add_argument("--pool", type=int, default=None, help="candidates sampled for --design to choose from [20 x --n]")
    p.add_argument("--backend", default="onnxruntime", help="timing backend (onnxruntime, torch, ...)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (1 = least noise on shared machines)")
    p.add_argument("--inter-threads", type=int, default=1, help="inter-op threads")
    p.add_argument("--out", help="output dataset (.parquet; its sidecar X.parquet.json is written next to it)")
    p.add_argument("--resume", action="store_true", help="continue an existing dataset, skipping measured archs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--allow-mixed", action="store_true", help="resume a dataset from another protocol/machine anyway")
    p.add_argument("--shard", help="I/N: time only archs I, I+N, I+2N, ... (0-based)")
    p.add_argument(
        "--repeat-check", type=int, default=0, metavar="K", help="re-measure K archs at the end (noise floor)"
    )
    p.add_argument("--op-profile", action="store_true", help="also record time per operator type (onnxruntime)")
    # protocol: the space's (or the archs') family decides which shape flags apply
    p.add_argument("--batch", type=int, default=1)
    for flag, default, what in FAMILY_FLAGS_HELP:
        p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=f"{what} (default: {default})")
    p.add_argument("--routing", default="seeded-random", help="routing assumption for MoE layers")
    p.add_argument("--model-seed", type=int, default=0, help="build_model seed (weights, router)")
    # measurement
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--max-runs", type=int, default=200)
    p.add_argument("--max-seconds", type=float, default=30.0, help="cap on timed seconds per arch")
    p.add_argument("--target", type=float, default=0.02, help="target half-width of the median's 95%% CI, relative")
    p.add_argument(
        "--ref-every",
        type=int,
        default=10,
        help="archs per group: timed round-robin together, the reference model among them",
    )
    p.add_argument(
        "--ref-timing",
        choices=["follow", "group", "alone"],
        default="follow",
        help="follow: the reference is one more member of each round-robin group, timed until its minimum "
        "runs and then once per visit while the group runs, and its median there judges the group; "
        "group: the same, but the reference is timed to the stop rule like an arch (before 2026-12-03); "
        "alone: a separate reference check after each group (before 2026-12)",
    )
    p.add_argument(
        "--visit-runs",
        type=int,
        default=5,
        help="timed runs per visit when a group is timed round-robin (0 = time each arch alone to the end)",
    )
    p.add_argument(
        "--visit-warmup", type=int, default=1, help="untimed runs at the start of each later visit (re-warm caches)"
    )
    p.add_argument("--drift-threshold", type=float, default=0.05, help="relative reference change that flags rows")
    p.add_argument("--ref-wait", type=float, default=10.0, help="seconds between reference retries after drift")
    p.add_argument("--ref-retries", type=int, default=3, help="reference retries after a drifted check before going on")
    p.add_argument(
        "--max-remeasure",
        type=int,
        default=2,
        help="times a flagged arch is re-measured before its row stays flagged (0: never re-measure)",
    )
    p.add_argument("--export-method", default="torchscript", choices=["torchscript", "dynamo"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    f = p.add_argument_group(
        "fleet campaign on Ray (profiler/README.md#fleet-profiling)",
        "every device times its share of the archs on the nodes advertising the resource device:NAME; "
        "--out is then a folder with one dataset per device",
    )
    f.add_argument(
        "--ray",
        metavar="ADDR",
        help="Ray cluster address (HOST:6379, ray://HOST:10001, auto), or 'local' to try it on this machine",
    )
    f.add_argument("--devices", metavar="A,B,...", help="device names (each with the timing flags above)")
    f.add_argument(
        "--fleet", metavar="FLEET.yaml", help="devices with their own backend/device/threads/inter_threads/n"
    )
    f.add_argument(
        "--chunk", type=int, default=5, help="archs per task (a node that drops out loses at most one chunk)"
    )
    f.add_argument(
        "--lost-after",
        type=float,
        default=30.0,
        help="seconds a device may have no live node before its waiting chunks are given up",
    )
    p.set_defaults(func=run)

    sub = p.add_subparsers(dest="profile_command", metavar="[merge|split]", parser_class=type(p))
    m = sub.add_parser(
        "merge",
        help="join profile datasets (e.g. shards) into one",
        description="Join profile datasets; refuses different protocols or device fingerprints unless --allow-mixed.",
    )
    m.add_argument("inputs", nargs="+", help="datasets to join")
    m.add_argument("--out", required=True)
    m.add_argument("--allow-mixed", action="store_true")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=run_merge)
    sp = sub.add_parser(
        "split",
        help="split a dataset by arch into a training and a held-out part",
        description="Split by arch (all rows of an arch on one side): a random --holdout share of the "
        "archs to --holdout-out, the rest to --train-out.",
    )
    sp.add_argument("input", help="dataset (.parquet, or CSV / Parquet reshaped with ordinary tools)")
    sp.add_argument("--holdout", type=float, default=0.25, help="share of archs held out (default: 0.25)")
    sp.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    sp.add_argument("--train-out", required=True, help="training part (.parquet)")
    sp.add_argument("--holdout-out", required=True, help="held-out part (.parquet)")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=run_split)


def run_merge(args) -> int:
    from moenas.data.profiles import merge_profiles

    check_writable(args.out)
    with output_lock(args.out, "profile dataset"):
        meta = merge_profiles(
            args.inputs,
            args.out,
            allow_mixed=args.allow_mixed,
            overwrite=args.overwrite,
            command=["moenas", *sys.argv[1:]],
        )
    if args.json:
        print_json({"out": args.out, "counts": meta["counts"], "noise_floor": meta["noise_floor"]})
    else:
        c = meta["counts"]
        print(f"merged {len(args.inputs)} datasets -> {args.out}: {c['archs']} archs, {c['rows']} rows")
    return 0


def run_split(args) -> int:
    from moenas.data.profiles import split_profiles

    for o in (args.train_out, args.holdout_out):
        if Path(o).suffix != ".parquet":
            raise UserError(f"{o}: expected a .parquet path")
    check_writable(args.train_out, "--train-out")
    check_writable(args.holdout_out, "--holdout-out")
    check_range("--seed", args.seed, 0)
    with output_lock(args.train_out, "profile dataset"), output_lock(args.holdout_out, "profile dataset"):
        tr, ho = split_profiles(
            args.input, args.holdout, args.seed, args.train_out, args.holdout_out, overwrite=args.overwrite
        )
    if args.json:
        print_json(
            {
                "train": {"out": args.train_out, "counts": tr["counts"]},
                "holdout": {"out": args.holdout_out, "counts": ho["counts"]},
            }
        )
    else:
        print(
            table(
                [
                    ["train", args.train_out, tr["counts"]["archs"], tr["counts"]["rows"]],
                    ["holdout", args.holdout_out, ho["counts"]["archs"], ho["counts"]["rows"]],
                ],
                ["part", "file", "archs", "rows"],
            )
        )
    return 0


# (flag, default, help) of the protocol shape flags only one family takes
FAMILY_FLAGS_HELP = (
    ("--src-len", 30, "encoder-decoder: source tokens"),
    ("--decoder-steps", 30, "encoder-decoder: incremental decoder steps"),
    ("--beam", 5, "encoder-decoder: beam (decoder batch = batch x beam)"),
    ("--prompt-len", 128, "decoder-only: prompt tokens, processed in one pass (prefill)"),
    ("--decode-steps", 32, "decoder-only: single-token decode steps on the prompt's KV cache"),
)


def protocol_from_flags(args, family):
    """The latency protocol the flags describe for ``family`` (the archs' model family): its
    shape flags where given, its defaults otherwise. UserError when a shape flag of another
    family's protocol is given (it would be silently ignored)."""
    from moenas.arch.protocol import PROTOCOLS

    cls = PROTOCOLS.for_family(family)
    dest = {flag: flag[2:].replace("-", "_") for flag, _, _ in FAMILY_FLAGS_HELP}
    foreign = [flag for flag, d in dest.items() if hasattr(args, d) and d not in cls.shape_fields]
    if foreign:
        own = [flag for flag, d in dest.items() if d in cls.shape_fields]
        raise UserError(
            f"{', '.join(foreign)} does not apply to {family.name} archs (their protocol flags: "
            f"--batch, {', '.join(own)})"
        )
    shape = {d: getattr(args, d) for d in dest.values() if hasattr(args, d)}
    return cls(batch=args.batch, routing=args.routing, model_seed=args.model_seed, **shape)


def archs_family(space, archs: list, where: str | None):
    """The model family a run times: the space's, else the one family of ``archs``."""
    from moenas.arch.family import DEFAULT_FAMILY

    if space is not None:
        return space.family
    families = {a.family.name: a.family for a in archs}
    if len(families) > 1:
        raise UserError(
            f"{where}: archs of several model families ({', '.join(families)}); profile one family per dataset"
        )
    return next(iter(families.values()), DEFAULT_FAMILY)


def check_profile_flags(args) -> None:
    """Every numeric flag of `moenas profile` in range, before any work: a negative
    --drift-threshold used to flag every row (a dataset of 0 valid archs, exit 0)."""
    for flag, low in (
        ("--n", 1),
        ("--pool", args.n),
        ("--seed", 0),
        ("--threads", 1),
        ("--inter-threads", 1),
        ("--repeat-check", 0),
        ("--model-seed", 0),
        ("--warmup", 0),
        ("--min-runs", 1),
        ("--ref-every", 1),
        ("--visit-runs", 0),
        ("--visit-warmup", 0),
        ("--ref-wait", 0),
        ("--ref-retries", 0),
        ("--max-remeasure", 0),
    ):
        check_range(flag, getattr(args, flag[2:].replace("-", "_")), low)
    check_range("--max-runs", args.max_runs, args.min_runs)
    for flag in ("--max-seconds", "--target", "--drift-threshold"):
        check_range(flag, getattr(args, flag[2:].replace("-", "_")), 0, low_open=True)


def run(args) -> int:
    from moenas.profiler.runner import Profiler

    if args.ray or args.devices or args.fleet:
        return run_fleet(args)
    if not args.out:
        raise UserError("--out is required")
    out = Path(args.out)
    if out.suffix != ".parquet":
        raise UserError(f"--out {out}: expected a .parquet path")
    check_profile_flags(args)
    check_writable(out)
    cfg = profile_config(args, out)
    summary = Profiler(cfg).run()
    if args.json:
        print_json(summary)
        return 0
    nf = summary["noise_floor_mape_percent"]
    rng = (
        "-" if summary["median_ms_min"] is None else f"{summary['median_ms_min']:.3g} .. {summary['median_ms_max']:.3g}"
    )
    rows = [
        ["archs measured (valid)", summary["archs_valid"]],
        ["new measurements", summary["new_measurements"]],
        ["median latency, total (ms)", rng],
        ["noise floor (MAPE %)", "-" if nf is None else f"{nf:.2f} ({summary['noise_pairs']} pairs)"],
        ["rows flagged for drift", summary["rows_flagged"]],
        [
            "precision reached",
            "-" if summary["precision_reached_share"] is None else f"{100 * summary['precision_reached_share']:.0f}%",
        ],
        [
            "overhead (not in timed runs)",
            "-" if summary["overhead_fraction"] is None else f"{100 * summary['overhead_fraction']:.0f}%",
        ],
        ["wall time (s)", summary["wall_s"]],
    ]
    print(table(rows, ["", str(out)]))
    return 0


def profile_config(args, out: Path):
    """The ProfileConfig the flags describe (archs sampled or read, protocol, stop rules)."""
    from moenas.profiler.runner import ProfileConfig, parse_shard
    from moenas.profiler.stats import StopRule

    space = SearchSpace.load(args.space) if args.space else None
    if args.design == "random" and args.pool is not None:
        raise UserError("--pool is what --design space-filling|uncertainty chooses from; random samples --n archs")
    if args.archs and args.design != "random":
        raise UserError("--design chooses among sampled archs; with --archs FILE every arch in it is timed")
    if args.archs:
        archs = read_archs(args.archs, space)
        seen, uniq = set(), []
        for a in archs:
            if a.arch_id not in seen:
                seen.add(a.arch_id)
                uniq.append(a)
        archs = uniq
    else:
        if space is None:
            raise UserError("give --space (to sample archs) or --archs FILE")
        archs = []
    try:
        protocol = protocol_from_flags(args, archs_family(space, archs, args.archs))
        rule = StopRule(
            warmup=args.warmup,
            min_runs=args.min_runs,
            max_runs=args.max_runs,
            max_seconds=args.max_seconds,
            target_rel=args.target,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    if not args.archs:
        archs = (
            space.sample_n(args.n, seed=args.seed)
            if args.design == "random"
            else designed_archs(args, space, protocol, out)
        )
    if args.op_profile and args.backend != "onnxruntime":
        raise UserError("--op-profile needs --backend onnxruntime")
    cfg = ProfileConfig(
        archs=archs,
        out=out,
        space=space,
        backend=args.backend,
        device=args.device,
        threads_intra=args.threads,
        threads_inter=args.inter_threads,
        protocol=protocol,
        rule=rule,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_mixed=args.allow_mixed,
        shard=parse_shard(args.shard),
        repeat_check=args.repeat_check,
        op_profile=args.op_profile,
        ref_every=args.ref_every,
        visit_runs=args.visit_runs,
        ref_in_group=args.ref_timing != "alone",
        ref_follow=args.ref_timing == "follow",
        visit_warmup=args.visit_warmup,
        drift_threshold=args.drift_threshold,
        ref_wait_s=args.ref_wait,
        ref_retries=args.ref_retries,
        max_remeasure=args.max_remeasure,
        export_method=args.export_method,
        command=["moenas", *sys.argv[1:]],
        progress=not args.no_progress and not args.json,
    )
    return cfg


def designed_archs(args, space: SearchSpace, protocol, out: Path) -> list:
    """The archs a dataset of ``--n`` holds under ``--design``: those a ``--resume``d dataset
    measured already, then the ones the design picks from ``--pool`` seeded candidates."""
    from moenas.predictor.dataset import load_dataset
    from moenas.predictor.design import choose

    measured, y = [], []
    if args.resume and out.exists():
        ds = load_dataset([out])
        measured, y = ds.archs, ds.y
    pool = space.sample_n(min(args.pool or 20 * args.n, space.size()), seed=args.seed)
    picked = choose(args.design, pool, max(args.n - len(measured), 0), measured, y, seed=args.seed, protocol=protocol)
    return list(measured) + [pool[i] for i in picked]


def fleet_devices(args):
    """The campaign's devices: --devices names with the timing flags, or the --fleet file."""
    from moenas.profiler.fleet import DeviceSpec, load_fleet, parse_devices

    if not args.ray:
        raise UserError("--devices/--fleet need --ray ADDR (a Ray cluster address, or --ray local)")
    if bool(args.devices) == bool(args.fleet):
        raise UserError("--ray needs the devices: give --devices A,B,... or --fleet FLEET.yaml (one of them)")
    defaults = DeviceSpec("default", args.backend, args.device, args.threads, args.inter_threads)
    return parse_devices(args.devices, defaults) if args.devices else load_fleet(args.fleet, defaults)


def run_fleet(args) -> int:
    """`moenas profile --ray ADDR --devices ...`: a fleet campaign (profiler/fleet.py)."""
    from moenas.arch.ray_cluster import import_ray
    from moenas.profiler.fleet import FLEET, FleetConfig
    from moenas.profiler.fleet import run_fleet as run_campaign

    devices = fleet_devices(args)
    for flag, bad in (("--shard", args.shard), ("--repeat-check", args.repeat_check), ("--overwrite", args.overwrite)):
        if bad:
            raise UserError(
                f"{flag} does not apply to a fleet campaign (--ray); resume one with --resume or choose a new --out"
            )
    if not args.out:
        raise UserError("--out is required (a folder: one dataset per device)")
    out = Path(args.out)
    if out.suffix == ".parquet":
        raise UserError(f"--out {out}: a fleet campaign writes a folder (one dataset per device), not a .parquet file")
    check_profile_flags(args)
    check_range("--chunk", args.chunk, 1)
    check_range("--lost-after", args.lost_after, 0)
    check_writable(out, kind="dir")
    import_ray(FLEET)
    cmd = ["moenas", *sys.argv[1:]]
    cfg = FleetConfig(
        profile=profile_config(args, out),
        devices=devices,
        out=out,
        address=args.ray,
        chunk=args.chunk,
        resume=args.resume,
        allow_mixed=args.allow_mixed,
        lost_after_s=args.lost_after,
        progress=not args.no_progress and not args.json,
        command=cmd,
    )
    summary = run_campaign(cfg)
    if args.json:
        print_json(summary)
    else:
        rows = [
            [
                d["device"],
                ",".join(d["nodes"]) or "-",
                d["rows"],
                f"{d['archs']}/{d['wanted']}",
                d["chunks_done"],
                d["chunks_failed"],
                d["dataset"] or (f"not merged: {d['merge_error']}" if d["merge_error"] else "-"),
            ]
            for d in summary["devices"]
        ]
        print(table(rows, ["device", "nodes", "rows", "archs", "chunks done", "failed", "dataset"]))
    return fleet_exit(summary)


def fleet_exit(summary: dict) -> int:
    """0 when every chunk finished and every device merged; else 1 and what to do, on stderr."""
    if summary["complete"]:
        return 0
    for d in summary["devices"]:
        if d["chunks_failed"]:
            sys.stderr.write(
                f"moenas profile: {d['chunks_failed']} chunk(s) of device {d['device']} did not finish "
                f"({'; '.join(d['errors'])})\n"
            )
        if d["merge_error"]:
            sys.stderr.write(f"moenas profile: device {d['device']} not merged: {d['merge_error']}\n")
    if summary["chunks_failed"]:
        sys.stderr.write(
            "moenas profile: finished rows are kept; rerun the same command with --resume to finish the campaign\n"
        )
    return 1
