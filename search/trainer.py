"""Supernet (and standalone sub-Transformer) training: the loop, as a small class, and DDP.

One step: the arch sampler draws the step's archs (``uniform``: one random arch, HAT;
``sandwich``: the largest, the smallest and n random ones, gradients summed), every arch runs
the same batch, the loss is label-smoothed cross-entropy (fused with the output projection,
:mod:`.loss`) plus ``aux_coef`` x the MoE load-balancing loss, then gradient clipping and an
AdamW step with linear warm-up followed by inverse-square-root or cosine decay. Checkpoints
(:mod:`.checkpoint`) hold everything needed to resume *exactly*; evaluations (:mod:`.evaluation`)
log validation loss and BLEU of the evaluation archs.

Distributed: under ``torchrun --nproc-per-node N`` (WORLD_SIZE > 1) the same code trains with
DistributedDataParallel (gloo on CPU, NCCL on GPU). All ranks seed the arch sampler alike, so
they run the same archs each step on different batches; the sandwich archs run inside *one*
DDP forward (their losses summed), so DDP all-reduces once per step. Parameters an arch does
not touch (deeper layers, extra experts) get no gradient; ``find_unused_parameters=True``
handles them, and sliced parameters count as used (their gradient is zero outside the slice).

Both model families train here (the space's family decides, :mod:`.train_data`): a translation
supernet on batches of sentence pairs, and a decoder-only language-model supernet
(:class:`LMSuperNet`) on batches of blocks of a text corpus's token stream, with the same
sampling, loss (next-token cross-entropy, label smoothing off for a language model unless set),
optimizer, schedule, checkpoints and DDP. A language model's evaluations report validation loss
and perplexity (exp of the mean token NLL) instead of BLEU.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.arch import AnyArch
from moenas.arch.family import DECODER_ONLY, ENCODER_DECODER, FamilyRegistry
from moenas.arch.files import output_lock
from moenas.arch.model import check_fits_memory, seeded
from moenas.arch.provenance import now_iso
from moenas.arch.space import AnySpace

from .checkpoint import (
    CKPT_FORMAT,
    CKPT_VERSION,
    check_meta_replaceable,
    load_model,
    load_state,
    load_supernet,
    meta_path,
    read_checkpoint,
    versions,
    write_checkpoint,
    write_meta,
)
from .evaluation import autocast, bleu_score, perplexity, validation_loss
from .loss import LossModule
from .supernet import SupernetConfig, extract, model_class, supernet_from_config
from .train_config import SAMPLING, TrainConfig, lr_at  # noqa: F401  (TrainConfig: train()'s argument)
from .train_data import batches_for, corpus_and_tokenizer

__all__ = ["ArchSampler", "Trainer", "train"]


class ArchSampler:
    """The archs of each step. Seeded identically on every rank, so all ranks agree."""

    def __init__(
        self,
        space: AnySpace,
        rule: str = "uniform",
        n_random: int = 2,
        seed: int = 0,
        fixed: AnyArch | None = None,
        largest_every: int = 0,
    ):
        if rule not in SAMPLING:
            raise UserError(f"unknown sampling rule {rule!r} (choose from {', '.join(SAMPLING)})")
        self.space, self.rule, self.n_random, self.fixed = space, rule, n_random, fixed
        self.largest_every = largest_every
        self.rng = random.Random(seed)
        self._largest, self._smallest = space.largest(), space.smallest()

    def next(self, step: int) -> list[AnyArch]:
        """The archs of optimizer step ``step`` (0-based). With ``largest_every`` N, uniform
        steps N-1, 2N-1, ... train the largest arch and draw nothing, so the other steps see
        the same sequence of random archs as without it, and a resumed run stays exact."""
        if self.fixed is not None:
            return [self.fixed]
        if self.rule == "uniform" and self.largest_every and step % self.largest_every == self.largest_every - 1:
            return [self._largest]
        if self.rule == "uniform":
            return [self.space.sample(self.rng)]
        return [self._largest, self._smallest] + [self.space.sample(self.rng) for _ in range(self.n_random)]

    def state_dict(self) -> Any:
        return self.rng.getstate()

    def load_state_dict(self, state: Any) -> None:
        version, internal, gauss = state
        self.rng.setstate((version, tuple(internal), gauss))


# ---- distributed helpers ---------------------------------------------------------------------
def _dist_setup(device_pref: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether this call started the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        started = True
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local), started
    return rank, world, torch.device("cpu"), started


def _gather(world: int, value: Any) -> list[Any]:
    if world == 1:
        return [value]
    out = [None] * world
    dist.all_gather_object(out, value)
    return out


def _params_digest(model: nn.Module) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))


def _resolve_archs(names: Sequence[str], space: AnySpace, fixed: AnyArch | None) -> list[tuple[str, AnyArch]]:
    if fixed is not None:
        return [("arch", fixed)]
    named = {"largest": space.largest, "smallest": space.smallest}
    out = []
    for n in names:
        if n in named:
            out.append((n, named[n]()))
        else:
            a = space.validate(Arch.from_json(n))
            out.append((a.arch_id, a))
    return out


def check_init_from(cfg: TrainConfig) -> None:
    """UserError unless ``--init-from`` holds weights for this run, before any data is read: a
    standalone model of the very arch, or a supernet of the very space. Spaces are compared
    gene by gene, not by name: a YAML file may reuse a shipped name for other genes."""
    if not (cfg.init_from and cfg.standalone):
        return
    ck = read_checkpoint(cfg.init_from)
    fixed = Arch.from_json(cfg.arch)
    if ck["kind"] == "standalone":
        if Arch.from_json(ck["arch"]) != fixed:
            raise UserError(
                f"--init-from {cfg.init_from}: holds arch {Arch.from_json(ck['arch']).arch_id}, not {fixed.arch_id}"
            )
        return
    theirs = SearchSpace.from_dict(ck["supernet_config"]["space"], source=str(cfg.init_from))
    ours = SearchSpace.load(cfg.space)
    if theirs.to_dict() != ours.to_dict():
        same_name = " (same name, other genes)" if theirs.name == ours.name else ""
        raise UserError(
            f"--init-from {cfg.init_from}: a supernet of space {theirs.name!r}, not of --space {cfg.space!r}{same_name}"
        )


def build_standalone(arch: AnyArch, seed: int, dropout: float) -> nn.Module:
    """A freshly initialised standalone model of ``arch``, of its family's model class (a
    SubTransformer or a CausalLM), as ``build_model`` / ``build_lm_model`` build it: seeded, and
    one UserError line when its fp32 weights do not fit this machine."""
    check_fits_memory(arch)
    return seeded(seed, lambda: model_class(arch.family)(arch, dropout=dropout))


def _with_dropout(model: nn.Module, p: float) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


# ---- what an evaluation reports besides the loss, per family ---------------------------------
# (the run, the arch, its validation loss, whether BLEU is asked for) -> the row's other scores
EvalScores = Callable[["Trainer", AnyArch, float, bool], dict[str, float]]


def _translation_scores(run: Trainer, arch: AnyArch, loss: float, with_bleu: bool) -> dict[str, float]:
    """A translation model's BLEU on the first ``bleu_sentences`` validation pairs (rank 0, when
    ``with_bleu`` asks for it)."""
    cfg = run.cfg
    if with_bleu and cfg.bleu_sentences > 0 and run.rank == 0:
        pairs = run.corpus.valid[: cfg.bleu_sentences]
        return {"bleu": round(bleu_score(run.model, arch, run.tok, pairs, cfg.beam, cfg.max_len), 3)}
    return {}


def _lm_scores(run: Trainer, arch: AnyArch, loss: float, with_bleu: bool) -> dict[str, float]:
    """A language model's perplexity: exp of the mean token NLL ``loss`` (on every rank)."""
    return {"val_ppl": round(perplexity(loss), 4)}


EVAL_SCORES: FamilyRegistry[EvalScores] = FamilyRegistry(
    "evaluation scores", {ENCODER_DECODER: _translation_scores, DECODER_ONLY: _lm_scores}
)


# ---- the run ---------------------------------------------------------------------------------
class Trainer:
    """One training run: ``Trainer(...)`` sets up data, model and optimizer, ``restore(ck)``
    puts a checkpoint back, ``step()`` makes one optimizer step, ``evaluate()`` and ``save()``
    write history and checkpoints, ``run()`` loops to ``cfg.steps``."""

    def __init__(
        self,
        cfg: TrainConfig,
        out: Path,
        ck: dict | None,
        rank: int,
        world: int,
        device: torch.device,
        log: Callable[[str], None],
    ):
        self.cfg, self.out, self.rank, self.world, self.device, self.log = cfg, out, rank, world, device, log
        self.step_no, self.history, self.saves = 0, [], 0
        self.stats: dict[str, Any] = {"train_loss": None, "tokens_per_s": None}
        self.meta: dict[str, Any] = {}
        check_init_from(cfg)
        self._setup_data(ck)
        cfg = self.cfg  # with the family's label smoothing
        self._setup_model()
        # fused: one kernel over all parameters; on the 2-core CPU 3x faster than foreach (measured),
        # which matters because every step updates the whole supernet.
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay, fused=True
        )
        self.sampler = ArchSampler(
            self.space,
            cfg.sampling,
            cfg.sandwich_random,
            seed=cfg.seed,
            fixed=self.fixed,
            largest_every=cfg.largest_every,
        )
        torch.manual_seed(cfg.seed * 1009 + 17 + rank)  # dropout stream, one per rank
        if ck is not None:
            self.restore(ck)
        self.runner = self._wrap(LossModule(self.model, cfg.label_smoothing, cfg.aux_coef))
        self.eval_every = cfg.eval_every or max(cfg.steps // 5, 1)
        self.save_every = cfg.save_every or self.eval_every
        self.eval_archs = _resolve_archs(cfg.eval_archs, self.space, self.fixed)

    # ---- set-up ---------------------------------------------------------------------------
    def _setup_data(self, ck: dict | None) -> None:
        cfg = self.cfg
        if ck is not None and ck["kind"] == "supernet":
            self.space = SearchSpace.from_dict(ck["supernet_config"]["space"], source=str(self.out))
        else:
            self.space = SearchSpace.load(cfg.space)
        self.family = self.space.family
        self.cfg = cfg = replace(cfg, label_smoothing=cfg.smoothing_for(self.family))  # what the checkpoint records
        self.fixed = self.space.validate(Arch.from_json(cfg.arch)) if cfg.standalone else None
        self.corpus, self.tok = corpus_and_tokenizer(cfg, self.space, self.rank, self.world)
        if ck is not None and ck["meta"]["corpus_fingerprint"] != self.corpus.fingerprint:
            raise UserError(
                f"{self.out}: trained on corpus {ck['meta']['corpus_fingerprint']}, but {cfg.corpus!r} "
                f"now has fingerprint {self.corpus.fingerprint}; resume with the same corpus"
            )
        self.data = batches_for(cfg, self.space, self.corpus, self.tok, self.rank, self.world)
        self.valid_batches, self.stream = self.data.valid_batches, self.data.stream

    def _setup_model(self) -> None:
        cfg, fixed = self.cfg, self.fixed
        self.snet_cfg = None
        if fixed is None:
            self.snet_cfg = SupernetConfig(
                space=self.space.to_dict(),
                kind=cfg.supernet,
                dropout=cfg.dropout,
                seed=cfg.seed,
                mos_experts=cfg.mos_experts,
                mos_mode=cfg.mos_mode,
                mos_hidden=cfg.mos_hidden,
                mos_init=cfg.mos_init,
            )
            model: nn.Module = supernet_from_config(self.snet_cfg)
        elif cfg.init_from and read_checkpoint(cfg.init_from)["kind"] == "standalone":
            model, _ = load_model(cfg.init_from, family=None)  # fine-tune further (check_init_from: same arch)
            model = _with_dropout(model, cfg.dropout)
        elif cfg.init_from:
            net, _ = load_supernet(cfg.init_from, family=None)  # of this very space (check_init_from)
            model = extract(net, fixed, dropout=cfg.dropout)
        else:
            model = build_standalone(fixed, seed=cfg.seed, dropout=cfg.dropout)
        self.kind = "standalone" if fixed is not None else "supernet"
        self.model = model.to(self.device).train()

    def _wrap(self, loss_mod: LossModule) -> nn.Module:
        if self.world == 1:
            return loss_mod
        # Uniform sampling leaves parameters unused (deeper layers, extra experts); the sandwich
        # always includes the largest arch, which touches every parameter (as does one fixed arch).
        find_unused = not self.cfg.standalone and self.cfg.sampling == "uniform"
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(loss_mod, device_ids=ids, find_unused_parameters=find_unused)

    def restore(self, ck: dict) -> None:
        load_state(self.model, ck["model"], self.out)
        self.opt.load_state_dict(ck["optimizer"])
        self.sampler.load_state_dict(ck["sampler"])
        self.stream.load_state_dict(ck["data"])
        rng = ck["rng"]
        if len(rng["torch"]) != self.world:
            self.log(
                f"note: checkpoint saved by {len(rng['torch'])} process(es), resuming with {self.world}; "
                "the run continues but not bit-exactly"
            )
        torch.set_rng_state(rng["torch"][self.rank % len(rng["torch"])])
        if self.device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state(rng["cuda"][self.rank % len(rng["cuda"])])
        self.step_no = int(ck["step"])
        self.history = list(ck["meta"].get("history", []))
        self.log(f"resuming {self.out} at step {self.step_no}")

    # ---- one step, evaluation, checkpoint ---------------------------------------------------
    def step(self) -> tuple[float, int]:
        """One optimizer step; returns (mean CE of the step's archs, tokens in the batch)."""
        archs = self.sampler.next(self.step_no)
        batch = next(self.stream).to(self.device)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.cfg, self.step_no)
        with autocast(self.device):
            loss, parts = self.runner(*batch.inputs, batch.target, archs)
        loss.backward()
        if self.cfg.clip_norm > 0:
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.cfg.clip_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_no += 1
        return float(parts.mean()), batch.n_tokens

    def evaluate(self, with_bleu: bool = True) -> list[dict[str, Any]]:
        """Validation loss of every evaluation arch, and BLEU on rank 0 (translation) or
        perplexity (language model: exp of the mean token NLL); appended to history."""
        losses = validation_loss(self.model, [a for _, a in self.eval_archs], self.valid_batches)
        rows = []
        for (name, arch), loss in zip(self.eval_archs, losses):
            row = {
                "step": self.step_no,
                "arch": name,
                "arch_id": arch.arch_id,
                "val_loss": round(loss, 5),
                **self._scores(arch, loss, with_bleu),
            }
            rows.append(row)
            if self.rank == 0:
                self.log(
                    f"step {self.step_no}: {name} ({arch.arch_id}) val_loss {loss:.4f}"
                    + (f" BLEU {row['bleu']:.2f}" if "bleu" in row else "")
                    + (f" perplexity {row['val_ppl']:.2f}" if "val_ppl" in row else "")
                )
        self.history += rows
        return rows

    def _scores(self, arch: AnyArch, loss: float, with_bleu: bool) -> dict[str, float]:
        """What an evaluation reports besides the loss, as the family says (:data:`EVAL_SCORES`):
        a language model's perplexity, a translation model's BLEU (rank 0, when asked)."""
        return EVAL_SCORES.for_family(self.family)(self, arch, loss, with_bleu)

    def state(self, torch_states: list, cuda_states: list) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "format": CKPT_FORMAT,
            "version": CKPT_VERSION,
            "kind": self.kind,
            "family": self.family.name,
            "train_config": cfg.to_dict(),
            "supernet_config": self.snet_cfg.to_dict() if self.snet_cfg else None,
            "arch": cfg.arch,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step_no,
            "sampler": self.sampler.state_dict(),
            "data": self.stream.state_dict(),
            "rng": {"torch": torch_states, "cuda": cuda_states},
            "meta": json.loads(json.dumps(self._meta())),  # plain containers: weights_only loading
        }

    def _meta(self) -> dict[str, Any]:
        cfg, sup = self.cfg, self.kind == "supernet"
        self.meta.update(
            {
                "format": CKPT_FORMAT,
                "kind": self.kind,
                "family": self.family.name,
                "space": self.space.name,
                "supernet": cfg.supernet if sup else None,
                "sampling": cfg.sampling if sup else None,
                "arch": cfg.arch,
                "steps": self.step_no,
                "target_steps": cfg.steps,
                "corpus": self.corpus.summary(),
                "corpus_info": self.corpus.info,
                "corpus_fingerprint": self.corpus.fingerprint,
                "tokenizer": str(self.tok.path),
                "tokenizer_vocab": self.tok.vocab_size,
                "world_size": self.world,
                "device": str(self.device),
                "params": sum(p.numel() for p in self.model.parameters()),
                "history": self.history,
                "versions": versions(),
                "train_config": cfg.to_dict(),
                "saved_at": now_iso(),
                **self.stats,
            }
        )
        return self.meta

    def save(self) -> None:
        """Checkpoint + sidecar (rank 0 writes; every rank contributes its RNG state)."""
        self.saves += 1
        torch_states = _gather(self.world, torch.get_rng_state())
        cuda_states = _gather(self.world, torch.cuda.get_rng_state()) if self.device.type == "cuda" else []
        in_sync = len(set(_gather(self.world, _params_digest(self.model)))) == 1 if self.world > 1 else None
        if self.rank != 0:
            return
        self.meta["ddp_params_in_sync"] = in_sync
        write_checkpoint(self.state(torch_states, cuda_states), self.meta, self.out)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, t_start = self.cfg, time.time()
        if self.rank == 0:
            n_par = sum(p.numel() for p in self.model.parameters())
            what = cfg.supernet if self.kind == "supernet" else self.fixed.arch_id
            self.log(
                f"training {self.kind} ({what}, {n_par / 1e6:.2f}M params) on {self.corpus.source} "
                f"[{self.corpus.fingerprint}]: {self.data.describe}, vocab {self.tok.vocab_size}, "
                f"{self.world} process(es) on {self.device}"
            )
        if self.step_no == 0 and not self.history:
            self.evaluate(with_bleu=False)
        bar = None
        if cfg.progress and self.rank == 0 and self.step_no < cfg.steps:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step_no, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr
            )
        ema, tok_count, t0 = None, 0, time.time()
        while self.step_no < cfg.steps:
            value, n_tok = self.step()
            tok_count += n_tok * self.world
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            tps = tok_count / max(time.time() - t0, 1e-9)
            self.stats.update({"train_loss": round(ema, 5), "tokens_per_s": round(tps, 1)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tps:.0f}", lr=f"{lr_at(cfg, self.step_no - 1):.2e}")
            last = self.step_no == cfg.steps
            if self.step_no % self.eval_every == 0 or last:
                self.evaluate()
            if self.step_no % self.save_every == 0 or last:
                self.save()
        if bar is not None:
            bar.close()
        if not self.saves:  # nothing trained (already at --steps): still write/refresh the files
            self.save()
        self.stats["wall_s"] = round(time.time() - t_start, 2)
        self.meta.update(self.stats)
        if self.rank == 0 and self.meta:
            write_meta(self.meta, self.out)
        return self.meta


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    check_meta_replaceable(out)  # rewritten by --resume and --overwrite alike: only when moenas wrote it
    if resume:
        return
    if (out.exists() or meta_path(out).exists()) and not overwrite:
        which = out if out.exists() else meta_path(out)
        raise UserError(f"{which} exists; pass --resume to continue it or --overwrite to replace it")
    if out.is_dir():
        raise UserError(f"{out} is a directory; --out names a checkpoint file")


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) and write the checkpoint ``out`` plus ``<out>.json``; returns the
    metadata. See the module docstring. Rank 0 (the one writer) holds the checkpoint's lock
    for the whole run, so a second training into the same --out is refused, not interleaved."""
    from contextlib import nullcontext

    lock = output_lock(out, "training checkpoint") if int(os.environ.get("RANK", "0")) == 0 else nullcontext()
    with lock:
        return _train(cfg, Path(out), resume, overwrite, log)


def _train(
    cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, log: Callable[[str], None] | None
) -> dict[str, Any]:
    log = log or (lambda msg: print(msg, file=sys.stderr))
    _check_out(out, resume, overwrite)
    ck = None
    if resume:
        ck = read_checkpoint(out)
        saved = TrainConfig.from_dict(ck["train_config"])
        # Everything but the run-length and run-time knobs comes from the checkpoint.
        for k in ("steps", "progress", "device", "eval_every", "save_every", "cache_dir"):
            setattr(saved, k, getattr(cfg, k))
        cfg = saved
    rank, world, device, started = _dist_setup(cfg.device)
    try:
        return Trainer(cfg, out, ck, rank, world, device, log).run()
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
