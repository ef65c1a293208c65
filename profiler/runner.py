"""A profiling run: archs -> export -> timed measurements -> rows in a profile dataset.

Order of work (see profiler/README.md for the why):
  1. reference model timed (baseline, or the baseline stored in the dataset on --resume);
  2. the archs not yet in the dataset, in groups of ``ref_every``: each group exported (in
     memory), sessions built, then timed round-robin (``visit_runs`` per visit), the reference
     model as one more member, until each one's median 95% CI is within ±target or a cap; one
     row per component of the protocol's family and one for the total (encoder, decoder, total;
     prefill, decode, total) per arch appended and the dataset rewritten atomically after
     every group;
  3. the reference's median in the group is the group's check (``ref_in_group`` False: the
     reference is timed alone after the group); if it is more than ``drift_threshold`` slower
     than the baseline, the group's rows are flagged, the profiler waits for the reference to
     come back (bounded retries, timed alone), and the flagged archs are measured again from
     their kept exports (new rows with ``remeasured`` = True);
  4. noise floor: ``repeat_check`` archs (evenly spaced over the list) are measured a second
     time at the end (``repeat_index`` = 1);
  5. what the last checks flagged is measured again (bounded).

Existing data is never degraded: one run at a time writes a dataset (a lock for the whole run);
on --resume the earlier runs' rows keep the verdict of their own reference checks (only this
run's rows are judged by this run's checks), and only archs this run was asked for are measured;
on --overwrite the old file stays until the first measured group replaces it atomically.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.arch import AnyArch
from moenas.arch.family import DECODER_ONLY, DEFAULT_FAMILY, ENCODER_DECODER, TOTAL, FamilyRegistry, ModelFamily
from moenas.arch.files import output_lock
from moenas.arch.protocol import LatencyProtocol, Protocol
from moenas.data.profiles import check_sidecar, now_iso, read_profiles, to_frame, write_profiles

from .backends import Backend, get_backend
from .fingerprint import fingerprint
from .rows import RunColumns, measurement_rows
from .stats import Measurement, StopRule, measure, measure_interleaved
from .workload import WorkloadBase, make_workload

REFERENCE_SEED = "moenas-reference"
# the space a family's reference model is drawn from when the run names none
REFERENCE_SPACES: FamilyRegistry[str] = FamilyRegistry(
    "reference space", {ENCODER_DECODER: "tiny", DECODER_ONLY: "lm-tiny"}
)


def reference_arch(space: SearchSpace | None, family: ModelFamily = DEFAULT_FAMILY) -> AnyArch:
    """The fixed reference model: a deterministic sample of the profiled space (with none, of
    ``family``'s small space: tiny, or lm-tiny for decoder-only)."""
    sp = space or SearchSpace.load(REFERENCE_SPACES.for_family(family))
    return sp.sample(random.Random(REFERENCE_SEED))


def check_families(archs: Sequence[AnyArch], protocol: Protocol, space: SearchSpace | None = None) -> None:
    """UserError unless every arch (and the space) is of the protocol's model family: a
    protocol times one family's components."""
    want = protocol.family
    if space is not None and space.family is not want:
        raise UserError(f"space {space.name!r} is {space.family.name} but the protocol times {want.name} models")
    for a in archs:
        if a.family is not want:
            raise UserError(f"arch {a.arch_id} is {a.family.name} but the protocol times {want.name} models")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' (0-based I < N) -> (I, N)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def shard_archs(archs: list[Arch], shard: tuple[int, int] | None) -> list[Arch]:
    """Round-robin split: shard (i, n) gets archs i, i+n, i+2n, ... (deterministic)."""
    return archs if shard is None else archs[shard[0] :: shard[1]]


def repeat_subset(archs: list[Arch], k: int) -> list[Arch]:
    """``k`` archs evenly spaced over the list (deterministic)."""
    if k <= 0 or not archs:
        return []
    k = min(k, len(archs))
    return [archs[(j * len(archs)) // k] for j in range(k)]


# How a reference check times the reference model (also `moenas calibrate`'s rule for old data).
REFERENCE_RULE = StopRule(warmup=3, min_runs=10, max_runs=60, max_seconds=10.0)


@dataclass
class ProfileConfig:
    archs: list[Arch]
    out: Path
    space: SearchSpace | None = None
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads_intra: int = 1
    threads_inter: int = 1
    protocol: Protocol = field(default_factory=LatencyProtocol)
    rule: StopRule = field(default_factory=StopRule)
    ref_rule: StopRule = REFERENCE_RULE
    resume: bool = False
    overwrite: bool = False
    allow_mixed: bool = False
    shard: tuple[int, int] | None = None
    repeat_check: int = 0
    op_profile: bool = False
    ref_every: int = 10
    visit_runs: int = (
        5  # archs between two reference checks are timed round-robin, this many runs per visit; 0 = one at a time
    )
    visit_warmup: int = 1
    ref_in_group: bool = (
        True  # the reference is one more member of each round-robin group; False: a separate check after it
    )
    ref_follow: bool = (
        True  # in the group, the reference follows it (min_runs, then one run per visit) instead of the stop rule
    )
    drift_threshold: float = 0.05
    ref_retries: int = 3
    ref_wait_s: float = 10.0
    max_remeasure: int = 2
    export_method: str = "torchscript"
    command: list[str] | None = None
    progress: bool = True
    on_measured: Callable[[int, dict[str, Any]], None] | None = None  # test hook: (count, row)


class Profiler:
    def __init__(self, cfg: ProfileConfig):
        check_families(cfg.archs, cfg.protocol, cfg.space)
        self.cfg = cfg
        self.backend: Backend = get_backend(cfg.backend, cfg.device, cfg.threads_intra, cfg.threads_inter)
        self.fp = fingerprint(cfg.device)
        import torch

        torch.set_num_threads(cfg.threads_intra)  # the untimed torch work (export, expert counts) too
        self.session_options = self.backend.session_options()
        self.run_id = uuid.uuid4().hex[:12]
        self.run_columns = RunColumns(
            space=cfg.space.name if cfg.space else None,
            backend=cfg.backend,
            device=cfg.device,
            threads_intra=cfg.threads_intra,
            threads_inter=cfg.threads_inter,
            target_rel=cfg.rule.target_rel,
            protocol=cfg.protocol,
            session_options=self.session_options,
            fingerprint=self.fp,
            export_method=cfg.export_method if self.backend.needs_onnx else None,
            run_id=self.run_id,
        )
        self.records: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}
        self.interval: list[str] = []  # measurement ids since the last reference check
        self.queue: list[tuple[Arch, int]] = []  # (arch, repeat_index) to measure again
        self.attempts: dict[tuple[str, int], int] = {}
        self.seconds = {
            "timed": 0.0,
            "warmup": 0.0,
            "export": 0.0,
            "build": 0.0,
            "session": 0.0,
            "reference_run": 0.0,
            "op_profile": 0.0,
            "reference_model": 0.0,
            "write": 0.0,
        }
        self.new_measurements = 0
        self._last_ref: float | None = None
        self.wanted: set[str] | None = None  # arch ids this run was asked for (None: all)
        self._replacing = False  # an existing dataset stays as it is until this run has news for it
        self._old_flags_changed = False  # an earlier run's row got flagged (its interval never closed)
        self._ref_prepared = None  # the reference model's prepared workload, made at its first timing
        self._group_ref_ms: float | None = None  # the reference's median timed inside the last group
        self._works: dict[str, WorkloadBase] = {}  # workloads (exports) kept for archs that may be measured again

    # ---- dataset I/O ------------------------------------------------------------------------
    def _open(self) -> None:
        cfg = self.cfg
        p = cfg.protocol
        out = cfg.out
        if out.exists() and not cfg.resume and not cfg.overwrite:
            raise UserError(f"{out} exists; pass --resume to continue it or --overwrite to replace it")
        check_sidecar(out)
        self._replacing = out.exists()
        if out.exists() and cfg.resume:
            df, meta = read_profiles(out)  # UserError on corrupt/foreign/damaged rows; nothing written
            if df.empty:
                raise UserError(f"{out}: holds no rows to resume; remove it or pass --overwrite")
            if not cfg.allow_mixed:
                if meta.get("protocol_id") != p.protocol_id:
                    raise UserError(
                        f"{out}: measured under protocol {meta.get('protocol_id')} "
                        f"({json.dumps(meta.get('protocol'))}), this run uses {p.protocol_id}; "
                        "use the same protocol flags or pass --allow-mixed"
                    )
                if meta.get("fingerprint_id") != self.fp["fingerprint_id"]:
                    raise UserError(
                        f"{out}: measured on another machine/software (fingerprint "
                        f"{meta.get('fingerprint_id')} vs {self.fp['fingerprint_id']}); pass --allow-mixed to continue anyway"
                    )
            self.records = df.to_dict("records")
            self.meta = meta
        else:
            self.meta = {"created": now_iso()}
        ref = reference_arch(cfg.space, p.family)
        self.meta.update(
            {
                "space": cfg.space.name if cfg.space else self.meta.get("space"),
                "protocol": p.to_dict(),
                "protocol_id": p.protocol_id,
                "fingerprint": self.fp,
                "fingerprint_id": self.fp["fingerprint_id"],
                "command": cfg.command,
                "measurement": {
                    "stop_rule": asdict(cfg.rule),
                    "ci": "distribution-free (binomial order statistics) CI of the median",
                    "reference_stop_rule": asdict(cfg.ref_rule),
                    "interleave": {
                        "group": cfg.ref_every,
                        "visit_runs": cfg.visit_runs,
                        "visit_warmup": cfg.visit_warmup,
                        "reference": self._ref_timing(),
                        "doc": "the archs of one reference interval are timed round-robin, visit_runs timed runs "
                        "per visit after visit_warmup untimed ones; visit_runs 0 = one arch at a time; "
                        "reference group: the reference model is one more member of each group and "
                        "its median there is the check that judges the group's rows; "
                        "reference follow: the same, but the reference gets visit_runs runs per "
                        "visit until min_runs and one per visit after that, until the group ends "
                        "(profiler.stats.measure_interleaved's follower)",
                    },
                },
                "op_profile_doc": "op_profile column: JSON {op_type: ms per run} from onnxruntime's profiler; "
                f"total = {' + '.join(p.family.components)}",
            }
        )
        refmeta = self.meta.setdefault("reference", {})
        if refmeta.get("arch_id") not in (None, ref.arch_id) or refmeta.get("fingerprint_id") not in (
            None,
            self.fp["fingerprint_id"],
        ):
            # another reference model or machine: its checks do not apply here, but they are
            # the record of how the earlier rows were judged, so they are kept
            self.meta.setdefault("reference_earlier", []).append(dict(refmeta))
            refmeta.clear()
        refmeta.update(
            {
                "arch_id": ref.arch_id,
                "arch_json": ref.to_json(),
                "threshold": cfg.drift_threshold,
                "fingerprint_id": self.fp["fingerprint_id"],
                "rule": "baseline = 10th percentile of the reference checks so far; a row is flagged when the reference "
                "check before or after it is > threshold slower than the baseline",
            }
        )
        refmeta.setdefault("checks", [])
        self.ref = ref
        self.meta.setdefault("runs", []).append(
            {
                "run_id": self.run_id,
                "started": now_iso(),
                "command": cfg.command,
                "backend": cfg.backend,
                "device": cfg.device,
                "threads_intra": cfg.threads_intra,
                "threads_inter": cfg.threads_inter,
                "shard": list(cfg.shard) if cfg.shard else None,
                "n_archs": len(cfg.archs),
                "drift_threshold": cfg.drift_threshold,
                "reference_arch_id": ref.arch_id,
            }
        )

    def _flush(self, final: bool = False) -> None:
        """Rewrite the dataset (atomically). An existing one (--resume, --overwrite) is left as
        it is until this run has something for it: a kill before the first measured group
        leaves the old rows, and a resume that measured nothing leaves the file untouched."""
        if self._replacing and not (self.new_measurements or self._old_flags_changed):
            if not (final and self.cfg.overwrite):
                return
        t = time.perf_counter()
        self.meta["runs"][-1]["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        self.meta = write_profiles(self.cfg.out, to_frame(self.records), self.meta)
        self.seconds["write"] += time.perf_counter() - t

    # ---- measuring ----------------------------------------------------------------------------
    def _workload(self, arch: AnyArch) -> WorkloadBase:
        """The arch's workload; an arch measured again reuses the one (and the export) of its
        last measurement while it is queued (see :meth:`_keep_queued_works`)."""
        w = self._works.get(arch.arch_id)
        if w is None:
            w = self._works[arch.arch_id] = make_workload(arch, self.cfg.protocol, self.cfg.export_method)
        return w

    def _keep_queued_works(self) -> None:
        """Drop the workloads of archs no longer queued for re-measurement (after each check)."""
        queued = {a.arch_id for a, _ in self.queue}
        self._works = {k: w for k, w in self._works.items() if k in queued}

    def _ref_in_group(self) -> bool:
        return self.cfg.ref_in_group and self.cfg.visit_runs > 0

    def _ref_timing(self) -> str:
        """'follow', 'group' or 'alone' (what the sidecar records)."""
        return ("follow" if self.cfg.ref_follow else "group") if self._ref_in_group() else "alone"

    def _measure_group(self, items: list[tuple[Arch, int, bool]]) -> list[list[dict[str, Any]]]:
        """Time (arch, repeat_index, remeasured) items: round-robin as one group when
        ``visit_runs`` > 0 (see :func:`measure_interleaved`), else one after the other; all rows
        of the group are appended before returning (one list of rows per item)."""
        if self.cfg.visit_runs <= 0:
            return [rows for it in items for rows in self._measure_batch([it])]
        return self._measure_batch(items)

    def _measure_batch(self, items: list[tuple[Arch, int, bool]]) -> list[list[dict[str, Any]]]:
        cfg = self.cfg
        works, prepared = [], []
        try:
            for arch, _, _ in items:
                w = self._workload(arch)
                t = time.perf_counter()
                prepared.append(self.backend.prepare(w))
                works.append(w)
                self.seconds["session"] += time.perf_counter() - t - w.seconds["export"] - w.seconds["build"]
                self.seconds["export"] += w.seconds["export"]
                self.seconds["build"] += w.seconds["build"]
                w.seconds["export"] = w.seconds["build"] = 0.0  # a kept workload is not counted twice
            steps = [p.step for p in prepared]
            if self._ref_in_group():  # the reference shares the group's window: its median is the check
                steps.insert(0, self._ref_prepared_workload().step)
            follower = 0 if self._ref_timing() == "follow" else None
            ms = measure_interleaved(steps, cfg.rule, max(1, cfg.visit_runs), cfg.visit_warmup, follower=follower)
        finally:
            for p in prepared:
                p.close()
        if self._ref_in_group():
            ref_m, ms = ms[0], ms[1:]
            self.seconds["reference_model"] += ref_m.timed_s + ref_m.warmup_s
            self._group_ref_ms = self._reference_ms(ref_m)
            self._last_ref = self._group_ref_ms  # the group's rows: their interval is the group's own window
        out = []
        for (arch, rep, again), w, m in zip(items, works, ms):
            self.seconds["timed"] += m.timed_s
            self.seconds["warmup"] += m.warmup_s
            ops = None
            if cfg.op_profile:
                t = time.perf_counter()
                ops = self.backend.op_profile(w)
                self.seconds["op_profile"] += time.perf_counter() - t
            out.append(self._rows(arch, m, w, ops, rep, again))
        return out

    def _rows(
        self, arch: AnyArch, m: Measurement, w: WorkloadBase, ops: dict | None, repeat_index: int, remeasured: bool
    ) -> list[dict[str, Any]]:
        """Append the rows of a finished measurement (it opens the current interval's list)."""
        t = time.perf_counter()
        counts = w.reference()["expert_counts"]
        self.seconds["reference_run"] += time.perf_counter() - t
        mid = uuid.uuid4().hex[:16]
        rows = measurement_rows(
            self.run_columns,
            arch,
            m,
            counts,
            ops,
            measurement_id=mid,
            timestamp=now_iso(),
            repeat_index=repeat_index,
            remeasured=remeasured,
            ref_before_ms=self._last_ref,
        )
        self.records.extend(rows)
        self.interval.append(mid)
        self.new_measurements += 1
        return rows

    def _reference_ms(self, group: Measurement | None = None) -> float:
        """The reference's median (ms): from its measurement inside a round-robin group, or
        timed alone now under ``ref_rule``. Every check's value comes through here (tests script it)."""
        if group is not None:
            return group.summaries[TOTAL].median_ms
        t = time.perf_counter()
        m = measure(self._ref_prepared_workload().step, self.cfg.ref_rule)
        self.seconds["reference_model"] += time.perf_counter() - t
        return m.summaries[TOTAL].median_ms

    def _ref_prepared_workload(self):
        """Exported and prepared once per run; every check re-times the same live sessions."""
        if self._ref_prepared is None:
            self._ref_prepared = self.backend.prepare(
                make_workload(self.ref, self.cfg.protocol, self.cfg.export_method)
            )
        return self._ref_prepared

    # ---- drift ----------------------------------------------------------------------------------
    def _checks(self) -> list[dict[str, Any]]:
        return self.meta["reference"]["checks"]

    def _baseline(self) -> float:
        """The quiet-machine speed of the reference: the 10th percentile of its checks so far.

        Contention only slows a 1-thread run down, so the fast end is the undisturbed speed; but
        the very fastest check is itself a lucky outlier (here 7.3 ms against a steady 8.0 ms),
        and a baseline set by it flags every later row and re-measures forever. Once checks
        timed inside groups exist, only those count: timed alone, the reference keeps its cache
        to itself, and a baseline mixing both would judge group checks by another measure."""
        import numpy as np

        checks = self._checks()
        grouped = [c for c in checks if c.get("timing") == "group"]
        return float(np.percentile([c["median_ms"] for c in (grouped or checks)], 10))

    def _in_range(self, med: float) -> bool:
        return med <= self._baseline() * (1.0 + self.cfg.drift_threshold)

    def _check(self) -> bool:
        """Close the current interval with the reference's median timed inside the group just
        measured (or, with none, time it alone now), re-derive every row's drift flag.
        Returns True when the machine is in range now."""
        med, timing = (
            (self._group_ref_ms, "group") if self._group_ref_ms is not None else (self._reference_ms(), "alone")
        )
        self._group_ref_ms = None
        self._checks().append(
            {
                "at": now_iso(),
                "run_id": self.run_id,
                "median_ms": round(med, 4),
                "interval": len(self.interval),
                "timing": timing,
            }
        )
        ids = set(self.interval)
        for r in self.records:
            if r["measurement_id"] in ids:
                r["ref_after_ms"] = med
        self.interval = []
        self._last_ref = med
        self._reflag()
        ok = self._in_range(med)
        self._checks()[-1]["in_range"] = ok
        self.meta["reference"]["baseline_ms"] = self._baseline()
        self._keep_queued_works()
        return ok

    def _reflag(self) -> None:
        """drift_flag of this run's rows = the reference check before or after a row's interval
        was more than ``drift_threshold`` slower than the baseline. Archs of this run's list
        left without a valid measurement are queued for re-measurement (at most
        ``max_remeasure`` times each).

        Rows of earlier runs (--resume) keep the verdict of their own run's checks and
        threshold: judged again by this run's, good data would be flagged and measured over
        (another threshold, another machine under --allow-mixed, a baseline moved by new
        checks). Only a row whose interval no check closed (that run was killed) is flagged."""
        base = self._baseline()
        for r in self.records:
            before, after = r.get("ref_before_ms"), r.get("ref_after_ms")
            if r.get("run_id") != self.run_id:
                if (_isna(after) or _isna(before)) and not _flag(r["drift_flag"]):
                    r["drift_flag"] = True  # unverified, so treated as drifted (and measured again)
                    self._old_flags_changed = True
                continue
            if _isna(after) or _isna(before):
                continue  # this run's open interval: the next check decides
            ratio = max(before, after) / base
            r["reference_ratio"] = ratio
            r["drift_flag"] = bool(ratio > 1.0 + self.cfg.drift_threshold)
        self._queue_invalid()

    def _queue_invalid(self) -> None:
        valid = {(r["arch_id"], int(r["repeat_index"])) for r in self.records if not _flag(r["drift_flag"])}
        queued = {(a.arch_id, rep) for a, rep in self.queue}
        for r in self.records:
            key = (r["arch_id"], int(r["repeat_index"]))
            if r["component"] != TOTAL or key in valid or key in queued or not _flag(r["drift_flag"]):
                continue
            if self.wanted is not None and key[0] not in self.wanted:
                continue  # not asked for by this run: an earlier run's business
            if self.attempts.get(key, 0) < self.cfg.max_remeasure:
                self.queue.append((Arch.from_json(r["arch_json"]), key[1]))
                queued.add(key)

    def _wait_until_in_range(self, ok: bool) -> bool:
        tries = 0
        while not ok and tries < self.cfg.ref_retries:
            time.sleep(self.cfg.ref_wait_s)
            ok = self._check()
            tries += 1
        return ok

    def _check_and_recover(self) -> None:
        """Check the reference; while it is in range, re-measure queued archs in batches of
        ``ref_every``, each batch closed by its own reference check (so one burst of load
        only spoils one short interval)."""
        ok = self._wait_until_in_range(self._check())
        while ok and self.queue:
            batch, self.queue = self.queue[: self.cfg.ref_every], self.queue[self.cfg.ref_every :]
            for arch, rep in batch:
                key = (arch.arch_id, rep)
                self.attempts[key] = self.attempts.get(key, 0) + 1
            self._measure_group([(arch, rep, True) for arch, rep in batch])
            self._flush()
            ok = self._wait_until_in_range(self._check())
        self._flush()

    # ---- the run --------------------------------------------------------------------------------
    def _done(self, repeat_index: int) -> set[str]:
        return {r["arch_id"] for r in self.records if int(r["repeat_index"]) == repeat_index}

    def _valid(self, repeat_index: int) -> set[str]:
        return {
            r["arch_id"] for r in self.records if int(r["repeat_index"]) == repeat_index and not _flag(r["drift_flag"])
        }

    def run(self) -> dict[str, Any]:
        """The whole run holds the dataset's lock: a second writer would be refused, not race
        this one and silently lose its rows (``output_lock``)."""
        with output_lock(self.cfg.out, "profile dataset"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        self._open()
        t_start = time.perf_counter()
        archs = shard_archs(cfg.archs, cfg.shard)
        self.wanted = {a.arch_id for a in archs}
        done0 = self._done(0)  # resumed: flagged-only archs are queued again by the first check
        todo = [a for a in archs if a.arch_id not in done0]
        repeats = [a for a in repeat_subset(archs, cfg.repeat_check)]
        total = len(todo) + len(repeats)
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            file=sys.stderr,
            disable=not cfg.progress,
            unit="arch",
            desc=f"profile {self.meta.get('space') or ''}".strip(),
            dynamic_ncols=True,
        )
        try:
            self._check_and_recover()  # baseline (or drift since the stored baseline)
            for phase in (0, 1):
                if phase == 0:
                    items = [(a, 0, False) for a in todo]
                else:  # noise floor: archs with a valid first measurement and no second one yet
                    valid0, done1 = self._valid(0), self._done(1)
                    items = [(a, 1, False) for a in repeats if a.arch_id in valid0 and a.arch_id not in done1]
                    bar.update(len(repeats) - len(items))
                for g in range(0, len(items), cfg.ref_every):
                    # one group = one reference interval: timed together, closed by a check
                    group = self._measure_group(items[g : g + cfg.ref_every])
                    self._flush()
                    for j, rows in enumerate(group, start=self.new_measurements - len(group) + 1):
                        bar.update(1)
                        bar.set_postfix_str(f"{rows[-1]['median_ms']:.2f} ms")
                        if cfg.on_measured:
                            cfg.on_measured(j, rows[-1])
                    self._check_and_recover()
            for _ in range(3):  # re-measure what the last checks flagged (bounded)
                if not (self.interval or self.queue):
                    break
                self._check_and_recover()
        finally:
            bar.close()
            if self._ref_prepared is not None:
                self._ref_prepared.close()
                self._ref_prepared = None
            self._works = {}
        self.meta["runs"][-1]["finished"] = now_iso()
        self.meta["runs"][-1]["wall_s"] = round(time.perf_counter() - t_start, 2)
        self._flush(final=True)
        return self.summary(time.perf_counter() - t_start)

    def summary(self, wall_s: float) -> dict[str, Any]:
        from moenas.data.profiles import latency_table, noise_floor

        df = to_frame(self.records)
        lt = latency_table(df) if len(df) else None
        timed = self.seconds["timed"]
        return {
            "out": str(self.cfg.out),
            "run_id": self.run_id,
            "new_measurements": self.new_measurements,
            "archs_valid": 0 if lt is None else len(lt),
            "median_ms_min": None if lt is None or not len(lt) else float(lt["median_ms"].min()),
            "median_ms_max": None if lt is None or not len(lt) else float(lt["median_ms"].max()),
            "noise_floor_mape_percent": noise_floor(df) if len(df) else None,
            "noise_pairs": self.meta.get("noise_floor", {}).get("pairs"),
            "rows": len(df),
            "rows_flagged": int(df["drift_flag"].fillna(False).astype(bool).sum()) if len(df) else 0,
            "precision_reached_share": float(
                df[df["component"] == TOTAL]["precision_reached"].fillna(False).astype(bool).mean()
            )
            if len(df)
            else None,
            "wall_s": round(wall_s, 2),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "overhead_fraction": round(1.0 - timed / wall_s, 4) if wall_s > 0 else None,
            "reference_checks": len(self.meta["reference"]["checks"]),
        }


def _isna(v: Any) -> bool:
    import pandas as pd

    return v is None or bool(pd.isna(v))


def _flag(v: Any) -> bool:
    return False if _isna(v) else bool(v)


def measure_archs(
    archs: Sequence[AnyArch],
    backend: str = "onnxruntime",
    device: str = "cpu",
    threads_intra: int = 1,
    threads_inter: int = 1,
    protocol: Protocol = LatencyProtocol(),
    rule: StopRule = StopRule(),
) -> list[dict[str, Any]]:
    """Time archs side by side (no dataset), round-robin (:func:`measure_interleaved`), so that
    their medians span the same stretch of the machine's wandering speed and their ratio is
    fair: one {component: Summary dict, expert counts, versions} per arch. For re-measuring
    search winners and the archs they are compared with."""
    check_families(archs, protocol)
    be = get_backend(backend, device, threads_intra, threads_inter)
    works = [make_workload(a, protocol) for a in archs]
    prepared = []
    try:
        for w in works:
            prepared.append(be.prepare(w))
        ms = measure_interleaved([p.step for p in prepared], rule)
    finally:
        for p in prepared:
            p.close()
    options, fp = be.session_options(), fingerprint(device)  # once for all archs
    return [
        {
            "arch_id": w.arch.arch_id,
            **{c: m.summaries[c].to_dict() for c in protocol.family.row_components},
            "expert_counts": w.reference()["expert_counts"],
            "protocol": protocol.to_dict(),
            "session_options": dict(options),
            "fingerprint": dict(fp),
        }
        for w, m in zip(works, ms)
    ]


def measure_one(arch: AnyArch, **kw: Any) -> dict[str, Any]:
    """Time one arch (no dataset); see :func:`measure_archs`."""
    return measure_archs([arch], **kw)[0]
