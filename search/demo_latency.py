"""The demo's latency stage: a predictor that holds on *this* machine.

The predictor's target is the component of the latency quantity the demo budgets
(``demo.cfg.kind.target``: the total latency of a translation model, the decode time of a language
model). Three paths, each returning (predictor saved in ``<out>/predictor``, the median measured
latency of that component, in ms):
* :func:`transfer_to_this_machine` (default): fit on the shipped dataset of the space, measure
  ``transfer_n + transfer_holdout`` fresh archs here, adapt the predictor from ``transfer_n`` of
  them (TransferModel: scale + ridge correction, intervals recalibrated from its leave-one-out
  residuals) and report it, the shipped predictor uncorrected and one fitted from scratch on
  the same few archs, all on the held-out ones.
* :func:`fit_from_scratch`: profile ``profile_n`` archs here and fit on them alone.
* :func:`reuse_shipped`: the shipped dataset as is (no measurement here; its figures hold
  only on the machine that recorded it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moenas.arch import UserError


def _profile(demo, n: int, seed: int, name: str) -> Path:
    from moenas.arch.protocol import protocol_for
    from moenas.profiler.runner import ProfileConfig, Profiler

    c = demo.cfg
    rules = dict(rule=c.quick_rule(), ref_rule=c.quick_rule(max_runs=60)) if c.profile_seconds else {}
    out = demo.path(name)
    archs = demo.space.sample_n(n, seed=seed)
    repeat = max(4, n // 10)
    demo.facts["profile_command"] = (
        f"moenas profile --space {c.space} --n {n} --seed {seed} --threads {c.threads} "
        f"--repeat-check {repeat} --drift-threshold {c.drift_threshold:g} "
        + (f"--warmup 2 --min-runs 5 --max-seconds {c.profile_seconds:g} " if c.profile_seconds else "")
        + f"--out {out}"
    )
    summary = Profiler(
        ProfileConfig(
            archs=archs,
            out=out,
            space=demo.space,
            protocol=protocol_for(demo.space.family),  # the family's default: the shipped datasets'
            threads_intra=c.threads,
            repeat_check=repeat,
            resume=out.exists(),
            drift_threshold=c.drift_threshold,
            **rules,
        )
    ).run()
    demo.facts["profile"] = {
        k: summary.get(k)
        for k in (
            "archs_valid",
            "median_ms_min",
            "median_ms_max",
            "noise_floor_mape_percent",
            "rows_flagged",
            "overhead_fraction",
        )
    }
    demo.facts["profile"]["archs_wanted"] = n
    if not summary.get("archs_valid"):
        raise UserError(
            f"{out}: no arch was measured validly ({summary.get('rows_flagged')} rows flagged by the drift check: "
            "the machine's speed wandered; rerun on a quiet machine or raise --drift-threshold)"
        )
    noise = summary.get("noise_floor_mape_percent")
    demo.log(
        f"profiled {n} archs, {summary.get('archs_valid')} measured validly: {summary.get('median_ms_min'):.3g}-"
        f"{summary.get('median_ms_max'):.3g} ms, noise floor {'n/a' if noise is None else f'{noise:.1f}%'} MAPE"
    )
    return out


def _holdout(demo, pred, hold, noise_floor) -> dict[str, Any]:
    from moenas.predictor import metrics as M

    p = pred.predict(hold.archs, confidence=demo.cfg.confidence)
    return M.report(hold.y, p.mean, p.lower, p.upper, demo.cfg.confidence, noise_floor)


def _fit_or_load(demo, ds, name: str):
    from moenas.predictor import Predictor
    from moenas.predictor.api import fit_predictor

    pdir = demo.path(name)
    if any(pdir.glob("*.json")):  # fitted by an earlier, interrupted demo
        return Predictor.load(pdir)
    pred, _ = fit_predictor(ds, demo.cfg.predictor_model, folds=5, seed=demo.cfg.seed, with_learning_curve=False)
    pred.save(pdir, overwrite=True)
    return pred


def fit_from_scratch(demo):
    from moenas.predictor.dataset import load_dataset

    c = demo.cfg
    data = _profile(demo, c.profile_n, c.seed, "profiles.parquet")
    ds = load_dataset([data], demo.cfg.kind.target)
    perm = np.random.default_rng(c.seed).permutation(len(ds))
    n_hold = max(8, len(ds) // 5)
    hold, train = ds.subset(perm[:n_hold]), ds.subset(perm[n_hold:])
    pred = _fit_or_load(demo, train, "predictor")
    holdout = _holdout(demo, pred, hold, ds.noise_floor)
    demo.facts["predictor"] = {
        "path": "from scratch",
        "model": pred.metadata.get("chosen"),
        "n_train": len(train),
        "n_holdout": len(hold),
        "holdout": holdout,
    }
    demo.facts["fit_command"] = (
        f"moenas fit --data {data} --target {demo.cfg.kind.target} --model {c.predictor_model} --out {demo.path('predictor')}"
    )
    demo.log(
        f"predictor {pred.metadata.get('chosen')}: holdout MAPE {holdout.get('mape'):.2f}%, "
        f"Kendall tau {holdout.get('kendall_tau'):.3f} on {len(hold)} unseen archs"
    )
    return pred, float(np.median(ds.y))


def transfer_to_this_machine(demo):
    from moenas.data.profiles import shipped
    from moenas.predictor import Predictor
    from moenas.predictor.api import transfer_predictor
    from moenas.predictor.dataset import load_dataset

    c = demo.cfg
    base_data = shipped(f"{c.space}-cpu-ort")
    target = demo.cfg.kind.target
    base = _fit_or_load(demo, load_dataset([base_data], target), "base_predictor")
    # A seed apart from the shipped dataset's (seed 0) so that no arch here was in the base's training set.
    data = _profile(demo, c.transfer_n + c.transfer_holdout, c.seed + 1000, "profiles.parquet")
    ds = load_dataset([data], target)
    pdir = demo.path("predictor")
    n, want = len(ds), c.transfer_n + c.transfer_holdout
    # Archs that stayed drift-flagged are missing: keep the requested share held out.
    n_hold = c.transfer_holdout if n >= want else int(round(n * c.transfer_holdout / want))
    few, hold = ds.subset(list(range(n - n_hold))), ds.subset(list(range(n - n_hold, n)))
    if len(few) < 3:  # a transfer needs 3; say why they are missing, not which flag would allow fewer
        raise UserError(
            f"{data}: only {n} of {want} archs were measured validly: the rest stayed drift-flagged "
            f"({_reference_spread(data)}; drift threshold {c.drift_threshold:.0%}); rerun on a quieter "
            "machine, raise --drift-threshold, or fit on the shipped data as is with --reuse-profiles"
        )
    if n < want:
        demo.log(
            f"{want - n} of {want} archs stayed drift-flagged (a noisy machine): adapting from {len(few)}, checking on {len(hold)}"
        )
    if any(pdir.glob("*.json")):
        pred = Predictor.load(pdir)
    else:
        pred, _ = transfer_predictor(base, few, n_samples=len(few), seed=c.seed, confidence=c.confidence)
        pred.save(pdir, overwrite=True)
    facts: dict[str, Any] = {
        "path": f"transfer from {base_data.name}",
        "model": pred.metadata.get("chosen"),
        "n_train": len(few),
        "n_holdout": len(hold),
        "base_model": base.metadata.get("chosen"),
    }
    if len(hold):
        facts["holdout"] = _holdout(demo, pred, hold, ds.noise_floor)
        facts["holdout_base_uncorrected"] = _holdout(demo, base, hold, ds.noise_floor)
        demo.log(
            f"on {len(hold)} archs measured here: transferred predictor MAPE {facts['holdout']['mape']:.2f}% "
            f"(tau {facts['holdout']['kendall_tau']:.3f}, {c.confidence:.0%} interval coverage "
            f"{facts['holdout']['coverage']:.0f}%), shipped predictor uncorrected {facts['holdout_base_uncorrected']['mape']:.2f}%"
        )
    demo.facts["predictor"] = facts
    demo.facts["fit_command"] = (
        f"moenas fit --data {base_data} --target {target} --out {demo.path('base_predictor')} && "
        f"moenas fit --data {data} --target {target} --base {demo.path('base_predictor')} --transfer-n {c.transfer_n} "
        f"--out {pdir}"
    )
    return pred, float(np.median(ds.y))


def _reference_spread(path: Path) -> str:
    """'the reference model timed A-B ms over K checks' from a dataset's metadata."""
    from moenas.data.profiles import read_profiles

    checks = (read_profiles(path)[1].get("reference") or {}).get("checks") or []
    ms = [c["median_ms"] for c in checks if isinstance(c, dict) and isinstance(c.get("median_ms"), (int, float))]
    return (
        f"the reference model timed {min(ms):.3g}-{max(ms):.3g} ms over {len(ms)} checks"
        if ms
        else "no reference check"
    )


def reuse_shipped(demo):
    from moenas.data.profiles import shipped
    from moenas.predictor.dataset import load_dataset

    c = demo.cfg
    data = shipped(f"{c.space}-cpu-ort")
    demo.log(
        f"reusing the shipped dataset {data} as is: its latencies hold on the machine that measured it, not necessarily here"
    )
    demo.facts["profile_command"] = "(shipped dataset)"
    ds = load_dataset([data], demo.cfg.kind.target)
    pred = _fit_or_load(demo, ds, "predictor")
    demo.facts["predictor"] = {
        "path": f"shipped {data.name}, not checked on this machine",
        "model": pred.metadata.get("chosen"),
        "n_train": len(ds),
        "n_holdout": 0,
    }
    demo.facts["fit_command"] = (
        f"moenas fit --data {data} --target {demo.cfg.kind.target} --out {demo.path('predictor')}"
    )
    return pred, float(np.median(ds.y))
