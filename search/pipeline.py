"""The end-to-end job behind `moenas demo`: profile -> fit -> train -> search -> re-measure -> compare.

Every stage writes into one folder and is skipped when its output is already there (so a
re-run continues where an interrupted one stopped); every stage is also a subcommand of its
own (`moenas profile`, `fit`, `evaluate`, `train`, `search`), printed in the report so a user
can rerun one stage with other settings.

The comparison at the end answers AutoMoE's question on this machine: how fast is the searched
MoE arch against a dense arch (one expert per layer) of about the same validation loss?
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moenas.arch import SearchSpace, UserError

from .evolution import Candidate, EvolutionConfig
from .report import Verification

SCALES = {
    # tiny: minutes on a 2-core CPU. wmt: paper scale, hours to days; needs a real corpus.
    "tiny": dict(space="tiny", corpus="default", profile_n=60, train_steps=300, train_max_tokens=1024, population=40, parents=10,
                 mutations=15, crossovers=15, iterations=8, valid_sentences=200, dense_candidates=48),
    "wmt": dict(space="automoe-wmt", corpus=None, profile_n=2000, train_steps=40000, train_max_tokens=4096, population=125, parents=25,
                mutations=50, crossovers=50, iterations=30, valid_sentences=1000, dense_candidates=200),
}


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    scale: str = "tiny"
    space: str = "tiny"
    corpus: str | None = "default"
    profile_n: int = 60
    reuse_profiles: bool = False      # fit on the shipped dataset instead of profiling this CPU
    train_steps: int = 300
    train_max_tokens: int = 1024
    supernet: str = "slice"
    sampling: str = "sandwich"
    max_latency_ms: float | None = None  # None: the median measured latency of the profiled archs
    confidence: float = 0.9
    population: int = 40
    parents: int = 10
    mutations: int = 15
    crossovers: int = 15
    iterations: int = 8
    valid_sentences: int = 200
    dense_candidates: int = 48
    predictor_model: str = "auto"
    seed: int = 0
    threads: int = 1

    @classmethod
    def for_scale(cls, scale: str, **overrides: Any) -> "DemoConfig":
        if scale not in SCALES:
            raise UserError(f"unknown scale {scale!r} (choose from {', '.join(SCALES)})")
        cfg = cls(scale=scale, **SCALES[scale])
        cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if cfg.corpus is None:
            raise UserError("--scale wmt needs --corpus DIR (train/valid/test .en/.de files): the embedded corpus is tiny-scale only")
        return cfg


@dataclass
class Demo:
    cfg: DemoConfig
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.load(self.cfg.space)

    def path(self, name: str) -> Path:
        return self.cfg.out / name

    def _stage(self, name: str, fn: Callable[[], Any]) -> Any:
        self.log(f"\n== {name} ==")
        t = time.perf_counter()
        out = fn()
        self.timings[name] = round(time.perf_counter() - t, 1)
        return out

    # ---- 1. profile --------------------------------------------------------------------------
    def profile(self) -> Path:
        if self.cfg.reuse_profiles:
            from moenas.data.profiles import shipped

            p = shipped(f"{self.cfg.space}-cpu-ort")
            self.log(f"reusing the shipped dataset {p} (measured on this kind of machine)")
            self.facts["profile_command"] = "(shipped dataset)"
            return p
        from moenas.profiler.runner import ProfileConfig, Profiler

        out = self.path("profiles.parquet")
        archs = self.space.sample_n(self.cfg.profile_n, seed=self.cfg.seed)
        self.facts["profile_command"] = (f"moenas profile --space {self.cfg.space} --n {self.cfg.profile_n} --seed {self.cfg.seed} "
                                         f"--threads {self.cfg.threads} --repeat-check {max(4, self.cfg.profile_n // 10)} --out {out}")
        summary = Profiler(ProfileConfig(archs=archs, out=out, space=self.space, threads_intra=self.cfg.threads,
                                         repeat_check=max(4, self.cfg.profile_n // 10), resume=out.exists())).run()
        self.facts["profile"] = {k: summary.get(k) for k in ("archs_valid", "median_ms_min", "median_ms_max",
                                                              "noise_floor_mape_percent", "rows_flagged", "overhead_fraction")}
        self.log(f"profiled {summary.get('archs_valid')} archs: {summary.get('median_ms_min'):.3g}-{summary.get('median_ms_max'):.3g} ms, "
                 f"noise floor {summary.get('noise_floor_mape_percent')}% MAPE")
        return out

    # ---- 2. fit and evaluate the predictor -------------------------------------------------------
    def fit(self, data: Path):
        from moenas.predictor import Predictor
        from moenas.predictor import metrics as M
        from moenas.predictor.api import fit_predictor
        from moenas.predictor.dataset import load_dataset

        pdir = self.path("predictor")
        ds = load_dataset([data], "total")
        rng = np.random.default_rng(self.cfg.seed)
        perm = rng.permutation(len(ds))
        n_hold = max(8, len(ds) // 5)
        hold, train = ds.subset(perm[:n_hold]), ds.subset(perm[n_hold:])
        if any(pdir.glob("*.json")):  # fitted by an earlier, interrupted demo
            pred = Predictor.load(pdir)
        else:
            pred, _ = fit_predictor(train, self.cfg.predictor_model, folds=5, seed=self.cfg.seed, with_learning_curve=False)
            pred.save(pdir)
        p = pred.predict(hold.archs, confidence=self.cfg.confidence)
        holdout = M.report(hold.y, p.mean, p.lower, p.upper, self.cfg.confidence, ds.noise_floor)
        self.facts["predictor"] = {"model": pred.metadata.get("chosen"), "n_train": len(train), "n_holdout": len(hold),
                                   "holdout": holdout}
        self.facts["fit_command"] = f"moenas fit --data {data} --target total --model {self.cfg.predictor_model} --out {pdir}"
        self.log(f"predictor {pred.metadata.get('chosen')}: holdout MAPE {holdout.get('mape'):.2f}%, "
                 f"Kendall tau {holdout.get('kendall_tau'):.3f} on {len(hold)} unseen archs")
        return pred, float(np.median(ds.y))

    # ---- 3. supernet --------------------------------------------------------------------------
    def train(self) -> Path:
        from .train_config import TrainConfig

        ckpt = self.path("supernet.pt")
        tcfg = TrainConfig(space=self.cfg.space, corpus=self.cfg.corpus, steps=self.cfg.train_steps, supernet=self.cfg.supernet,
                           sampling=self.cfg.sampling, seed=self.cfg.seed, valid_sentences=self.cfg.valid_sentences,
                           max_tokens=self.cfg.train_max_tokens, bleu_sentences=0)
        self.facts["train_command"] = (f"moenas train --space {self.cfg.space} --corpus {self.cfg.corpus} --steps {self.cfg.train_steps} "
                                       f"--supernet {self.cfg.supernet} --sampling {self.cfg.sampling} --max-tokens {self.cfg.train_max_tokens} --out {ckpt}")
        import os

        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)  # training is not timed: use every core
        try:
            return self._train(tcfg, ckpt)
        finally:
            torch.set_num_threads(threads)

    def _train(self, tcfg, ckpt: Path) -> Path:
        from .checkpoint import read_checkpoint
        from .trainer import train

        if ckpt.exists():
            ck = read_checkpoint(ckpt)
            if ck.get("step", 0) >= self.cfg.train_steps:
                self.log(f"reusing {ckpt} (trained {ck.get('step')} steps)")
                self.facts["train"] = ck.get("meta", {}).get("history", [])[-1:] or {}
                return ckpt
            meta = train(tcfg, ckpt, resume=True, log=self.log)
        else:
            meta = train(tcfg, ckpt, log=self.log)
        self.facts["train"] = {k: meta.get(k) for k in ("steps", "tokens_per_second", "valid") if k in meta}
        return ckpt

    # ---- 4. search + 5. re-measure ------------------------------------------------------------------
    def search(self, ckpt: Path, budget_ms: float):
        from .search_job import SearchJob

        cfg = self.cfg
        econf = EvolutionConfig(population=cfg.population, parents=cfg.parents, mutations=cfg.mutations,
                                crossovers=cfg.crossovers, iterations=cfg.iterations, seed=cfg.seed)
        out = self.path("search")
        job = SearchJob(space=self.space, supernet=str(ckpt), predictor_path=str(self.path("predictor")), out=out,
                        config=econf, max_latency_ms=budget_ms, confidence=cfg.confidence,
                        valid_sentences=cfg.valid_sentences, verify_top=1, threads=cfg.threads,
                        resume=(out / "search_state.json").exists(), overwrite=True, random_baseline=True)
        self.facts["search_command"] = (f"moenas search --space {cfg.space} --supernet {ckpt} --predictor {self.path('predictor')} "
                                        f"--max-latency-ms {budget_ms:.4g} --confidence {cfg.confidence} --population {cfg.population} "
                                        f"--parents {cfg.parents} --mutations {cfg.mutations} --crossovers {cfg.crossovers} "
                                        f"--iterations {cfg.iterations} --seed {cfg.seed} --random-baseline --out {out}")
        report, paths = job.run()
        return job, report, paths

    def default_budget(self, pred, median_ms: float) -> float:
        """The median measured latency, raised when needed so that the smallest arch's
        predicted upper bound fits (a budget nothing can meet would only demo an error)."""
        floor = float(pred.predict([self.space.smallest()], confidence=self.cfg.confidence).upper[0])
        budget = round(max(median_ms, 1.1 * floor), 2)
        if 1.1 * floor > median_ms:
            self.log(f"budget raised from the median measured latency {median_ms:.3g} ms to {budget:.3g} ms: "
                     f"the smallest arch's {self.cfg.confidence:.0%} upper bound is {floor:.3g} ms")
        return budget

    # ---- 6. dense comparison --------------------------------------------------------------------
    def dense_baseline(self, job, best: Candidate) -> Verification:
        """The dense arch (one expert per layer) whose inherited-weight loss is closest to the
        searched arch's, the faster one on ties; then re-measured like the winner."""
        from .fitness import SupernetFitness
        from .verify import verify

        sp = self.space
        dense = replace(sp, name=sp.name, encoder=replace(sp.encoder, experts=(1,)), decoder=replace(sp.decoder, experts=(1,)))
        archs = dense.sample_n(self.cfg.dense_candidates, seed=self.cfg.seed + 7) + [dense.largest()]
        losses = SupernetFitness(str(job.supernet), self.cfg.valid_sentences)(archs)
        lat = job.predictor.predict(archs).mean
        gap = np.abs(np.asarray(losses) - best.loss)
        i = int(np.lexsort((lat, np.round(gap, 3)))[0])
        cand = Candidate(archs[i], float(losses[i]), float(lat[i]), [])
        self.facts["dense_candidates"] = len(archs)
        self.facts["dense_loss_gap"] = float(gap[i])
        return verify([("dense-baseline", cand)], job.predictor, self.cfg.confidence, None, measure=True,
                      threads=self.cfg.threads)[0]

    # ---- driver ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        data = self._stage("1/5 profile archs on this CPU", self.profile)
        pred, median_ms = self._stage("2/5 fit and evaluate a latency predictor", lambda: self.fit(data))
        ckpt = self._stage("3/5 train the supernet", self.train)
        budget = cfg.max_latency_ms or self.default_budget(pred, median_ms)
        self.facts["budget_ms"] = budget
        job, report, paths = self._stage(f"4/5 search under {budget:.3g} ms and re-measure the winner",
                                         lambda: self.search(ckpt, budget))
        dense = self._stage("5/5 dense arch of similar loss, re-measured", lambda: self.dense_baseline(job, report.result.best))
        report.verifications.append(dense)
        report.write(self.path("search"))
        self.timings["total"] = round(time.perf_counter() - t0, 1)
        summary = self._summary(report, dense)
        self.path("demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        self.path("README.md").write_text(self.markdown(summary))
        return summary

    def _summary(self, report, dense: Verification) -> dict[str, Any]:
        best = next(v for v in report.verifications if v.role == "best")
        ratio = dense.measured_ms / best.measured_ms if best.measured_ms and dense.measured_ms else None
        return {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()},
                "facts": self.facts, "timings_s": self.timings,
                "searched": best.to_dict(), "dense": dense.to_dict(), "dense_over_searched_latency": ratio,
                "searched_arch": json.loads(report.result.best.arch.to_json()),
                "dense_arch_id": dense.arch_id}

    @staticmethod
    def _profile_line(f: dict[str, Any]) -> str:
        p = f.get("profile")
        if not p:
            return "Latencies: the shipped dataset for this space (measured on this kind of machine)."
        return (f"Profiled {p['archs_valid']} archs on this CPU: {p['median_ms_min']:.3g}-{p['median_ms_max']:.3g} ms; "
                f"noise floor (repeat MAPE) {p['noise_floor_mape_percent'] or float('nan'):.2f}%; "
                f"{p['rows_flagged']} rows flagged by the drift check and re-measured.")

    def markdown(self, s: dict[str, Any]) -> str:
        b, d, f = s["searched"], s["dense"], s["facts"]
        ph = f.get("predictor", {}).get("holdout", {})
        ratio = s["dense_over_searched_latency"]
        lines = [
            "# moenas demo report", "",
            f"Space `{self.cfg.space}`, latency measured with onnxruntime on this CPU ({self.cfg.threads} thread), "
            f"protocol: batch 1, 30 source tokens, 30 decoder steps with KV cache, beam 5. Budget: {f['budget_ms']:.3g} ms "
            f"(predictor's {self.cfg.confidence:.0%} upper bound must meet it).", "",
            "## What happened", "",
            "1. " + self._profile_line(f),
            f"2. Latency predictor `{f.get('predictor', {}).get('model')}` fitted on {f.get('predictor', {}).get('n_train')} archs; on "
            f"{f.get('predictor', {}).get('n_holdout')} archs it never saw: MAPE {ph.get('mape', float('nan')):.2f}%, "
            f"Kendall tau {ph.get('kendall_tau', float('nan')):.3f}, within ±10%: {ph.get('within_10', float('nan')):.0f}%.",
            f"3. Supernet trained for {self.cfg.train_steps} steps on the embedded corpus ({self.cfg.supernet}, {self.cfg.sampling} sampling).",
            "4. Evolutionary search; the winner was exported and re-measured.",
            f"5. A dense arch (1 expert per layer) with the closest validation loss, among {f.get('dense_candidates')} sampled, re-measured too.", "",
            "## Searched MoE arch against a dense arch of similar loss", "",
            "| | arch | validation loss | predicted ms | measured ms | GFLOPs | params (M) | meets budget |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in (("searched (MoE)", b), ("dense", d)):
            lines.append(f"| {name} | `{v['arch_id']}` | {v['loss']:.4f} | {v['predicted_ms']:.3g} | {v['measured_ms']:.3g} | "
                         f"{v['gflops']:.3g} | {v['params_m']:.2f} | {('yes' if v['meets_budget'] else '**no**') if name != 'dense' else '-'} |")
        lines += ["", (f"The dense arch takes **{ratio:.2f}x** the searched arch's measured latency." if ratio else ""), "",
                  "## Rerun one stage", "", "```",
                  f.get("profile_command", ""), f.get("fit_command", ""), f.get("train_command", ""), f.get("search_command", ""),
                  "```", "", f"Stage times (s): {s['timings_s']}", "",
                  "Details: `search/report.md`, `search/pareto.png`, `predictor/`, `supernet.pt.json`.", ""]
        return "\n".join(lines)
