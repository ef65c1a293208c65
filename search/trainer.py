"""Supernet (and standalone sub-Transformer) training: loop, schedule, checkpoints, DDP.

One step: the arch sampler draws the step's archs (``uniform``: one random arch, HAT;
``sandwich``: the largest, the smallest and n random ones, gradients summed), every arch runs
the same batch, the loss is label-smoothed cross-entropy plus ``aux_coef`` x the MoE
load-balancing loss, then gradient clipping and an AdamW step with linear warm-up followed by
inverse-square-root or cosine decay.

Checkpoints are ``torch.save`` of tensors and primitive containers only (loadable with
``torch.load(weights_only=True)``): model, optimizer, step, the arch sampler's RNG state, the
data position (epoch, batch index) and every rank's torch RNG state, so a resumed run continues
*exactly* where the saved one stopped. A metadata JSON beside the checkpoint
(``<out>.json``) records the space, supernet kind, steps, corpus fingerprint, tokenizer path,
validation history and versions.

Distributed: under ``torchrun --nproc-per-node N`` (WORLD_SIZE > 1) the same code trains with
DistributedDataParallel (gloo on CPU, NCCL on GPU). All ranks seed the arch sampler alike, so
they run the same archs each step on different batches; the sandwich archs run inside *one*
DDP forward (their losses summed), so DDP all-reduces once per step. Parameters an arch does
not touch (deeper layers, extra experts) get no gradient; ``find_unused_parameters=True``
handles them, and sliced parameters count as used (their gradient is zero outside the slice).
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from moenas.arch import Arch, SearchSpace, UserError
from moenas.arch.model import PAD, SubTransformer, build_model
from moenas.data.batching import Batch, BatchStream, encode_pairs, fixed_batches
from moenas.data.corpus import Corpus, load_corpus
from moenas.data.tokenizer import SubwordTokenizer, get_tokenizer

from .supernet import SuperNet, SupernetConfig, extract, space_to_dict

CKPT_FORMAT = "moenas-checkpoint"
CKPT_VERSION = 1
SAMPLING = ("uniform", "sandwich")
SCHEDULES = ("inverse_sqrt", "cosine")


# ---- configuration ---------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Every training setting (primitives only; stored in the checkpoint).

    ``arch`` (canonical JSON) switches to standalone training of that one sub-Transformer,
    from scratch or from ``init_from`` (a supernet checkpoint's inherited weights)."""

    space: str = "tiny"
    corpus: str = "default"
    steps: int = 1000
    supernet: str = "slice"
    sampling: str = "uniform"
    sandwich_random: int = 2
    arch: str | None = None
    init_from: str | None = None
    cache_dir: str | None = None
    max_tokens: int = 2048
    max_len: int = 64
    lr: float = 1e-3
    warmup: int = 200
    schedule: str = "inverse_sqrt"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    beta2: float = 0.98
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    aux_coef: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    eval_every: int = 0            # 0: every steps // 5
    save_every: int = 0            # 0: at every evaluation
    eval_archs: list[str] = field(default_factory=lambda: ["largest", "smallest"])
    valid_sentences: int = 200
    bleu_sentences: int = 100      # 0: no BLEU
    beam: int = 1
    mos_experts: int = 2
    mos_mode: str = "layer"
    mos_hidden: int = 64
    mos_init: str = "copy"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.supernet not in ("slice", "mos"):
            raise UserError(f"unknown supernet kind {self.supernet!r} (choose from slice, mos)")
        if self.sampling not in SAMPLING:
            raise UserError(f"unknown sampling rule {self.sampling!r} (choose from {', '.join(SAMPLING)})")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r} (choose from {', '.join(SCHEDULES)})")
        if self.steps < 0:
            raise UserError("--steps must be >= 0")
        if self.max_tokens < 8:
            raise UserError("--max-tokens must be at least 8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def standalone(self) -> bool:
        return self.arch is not None


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up to ``lr`` over
    ``warmup`` steps, then lr*sqrt(warmup/step) or a cosine to lr*min_lr_ratio at ``steps``."""
    s = step + 1
    w = max(cfg.warmup, 0)
    if w and s <= w:
        return cfg.lr * s / w
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(w, 1) / s)
    span = max(cfg.steps - w, 1)
    frac = min(max(s - w, 0) / span, 1.0)
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * frac))


# ---- arch sampling ---------------------------------------------------------------------------
class ArchSampler:
    """The archs of each step. Seeded identically on every rank, so all ranks agree."""

    def __init__(self, space: SearchSpace, rule: str = "uniform", n_random: int = 2, seed: int = 0,
                 fixed: Arch | None = None):
        if rule not in SAMPLING:
            raise UserError(f"unknown sampling rule {rule!r} (choose from {', '.join(SAMPLING)})")
        self.space, self.rule, self.n_random, self.fixed = space, rule, n_random, fixed
        self.rng = random.Random(seed)
        self._largest, self._smallest = space.largest(), space.smallest()

    def next(self) -> list[Arch]:
        if self.fixed is not None:
            return [self.fixed]
        if self.rule == "uniform":
            return [self.space.sample(self.rng)]
        return [self._largest, self._smallest] + [self.space.sample(self.rng) for _ in range(self.n_random)]

    def state_dict(self) -> Any:
        return self.rng.getstate()

    def load_state_dict(self, state: Any) -> None:
        version, internal, gauss = state
        self.rng.setstate((version, tuple(internal), gauss))


# ---- loss ------------------------------------------------------------------------------------
class LossModule(nn.Module):
    """Wraps the supernet (or one SubTransformer) so that a whole step - every arch of the
    sandwich - is one forward; DDP wraps this."""

    def __init__(self, model: nn.Module, label_smoothing: float, aux_coef: float):
        super().__init__()
        self.model, self.label_smoothing, self.aux_coef = model, label_smoothing, aux_coef

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
                archs: Sequence[Arch]) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros((), device=src.device)
        parts = []
        for arch in archs:
            logits = run_model(self.model, src, tgt_in, arch)
            ce = F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=PAD,
                                 label_smoothing=self.label_smoothing)
            aux = model_aux_loss(self.model)
            total = total + ce + self.aux_coef * aux
            parts.append(ce.detach())
        return total, torch.stack(parts)


def run_model(model: nn.Module, src: torch.Tensor, tgt_in: torch.Tensor, arch: Arch | None) -> torch.Tensor:
    if isinstance(model, SuperNet):
        return model(src, tgt_in, arch)
    return model(src, tgt_in)


def model_aux_loss(model: nn.Module) -> torch.Tensor:
    if isinstance(model, SuperNet):
        return model.aux_loss
    return model.aux_loss()


# ---- evaluation (public API) -------------------------------------------------------------------
@torch.no_grad()
def validation_loss(model: nn.Module, archs: Sequence[Arch], batches: Sequence[Batch]) -> list[float]:
    """Token-level cross-entropy (nats, no label smoothing) of each arch on ``batches``, with
    inherited weights, in eval mode, without gradients. ``model`` is a SuperNet (any archs of
    its space) or a SubTransformer (``archs`` = [its arch])."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for arch in archs:
            if isinstance(model, SuperNet):
                model.space.validate(arch)
            total, count = 0.0, 0
            for b in batches:
                b = b.to(device)
                with _autocast(device):
                    logits = run_model(model, b.src, b.tgt_in, arch)
                total += float(F.cross_entropy(logits.flatten(0, 1).float(), b.tgt_out.flatten(),
                                               ignore_index=PAD, reduction="sum"))
                count += int(b.tgt_out.ne(PAD).sum())
            out.append(total / max(count, 1))
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def bleu_score(model: nn.Module, arch: Arch, tokenizer: SubwordTokenizer, pairs: Sequence[tuple[str, str]],
               beam: int = 1, max_len: int = 64, batch_size: int = 32) -> float:
    """Corpus BLEU (sacrebleu) of ``arch`` translating ``pairs`` with inherited weights."""
    import sacrebleu

    if not pairs:
        return float("nan")
    sub = extract(model, arch) if isinstance(model, SuperNet) else model
    was_training = sub.training
    sub.eval()
    device = next(sub.parameters()).device
    examples = encode_pairs(tokenizer, pairs, max_len)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    hyps: dict[int, str] = {}
    for k in range(0, len(order), batch_size):
        idx = order[k: k + batch_size]
        src = torch.full((len(idx), max(len(examples[i][0]) for i in idx) + 1), PAD, dtype=torch.long)
        for r, i in enumerate(idx):
            ids = examples[i][0] + [tokenizer.eos_id]
            src[r, : len(ids)] = torch.tensor(ids)
        outs = sub.generate(src.to(device), beam=beam, max_len=max_len)
        for i, o in zip(idx, outs):
            hyps[i] = tokenizer.decode(o)
    sub.train(was_training)
    return float(sacrebleu.corpus_bleu([hyps[i] for i in range(len(pairs))], [[t for _, t in pairs]]).score)


def _autocast(device: torch.device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


# ---- checkpoints (public API) ----------------------------------------------------------------
def meta_path(ckpt: str | Path) -> Path:
    p = Path(ckpt)
    return p.with_name(p.name + ".json")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; UserError when missing, unreadable or not a moenas checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such checkpoint")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle/EOF errors of a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{p}: not a readable moenas checkpoint ({msg[:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise UserError(f"{p}: not a moenas checkpoint")
    if ck.get("version") != CKPT_VERSION:
        raise UserError(f"{p}: checkpoint version {ck.get('version')!r} is not supported (this moenas reads {CKPT_VERSION})")
    return ck


def load_supernet(ckpt: str | Path, device: str | torch.device = "cpu") -> tuple[SuperNet, dict[str, Any]]:
    """(supernet in eval mode, metadata) from a supernet checkpoint written by :func:`train`."""
    ck = read_checkpoint(ckpt)
    if ck["kind"] != "supernet":
        raise UserError(f"{ckpt}: holds a standalone sub-Transformer, not a supernet (use load_model)")
    net = SuperNet(SupernetConfig.from_dict(ck["supernet_config"]))
    _load_state(net, ck["model"], ckpt)
    return net.to(device).eval(), dict(ck["meta"])


def load_model(ckpt: str | Path, device: str | torch.device = "cpu") -> tuple[SubTransformer, dict[str, Any]]:
    """(SubTransformer in eval mode, metadata) from a standalone checkpoint (``train --arch``)."""
    ck = read_checkpoint(ckpt)
    if ck["kind"] != "standalone":
        raise UserError(f"{ckpt}: holds a supernet; extract an arch with moenas.search.supernet.extract")
    model = SubTransformer(Arch.from_json(ck["arch"]))
    _load_state(model, ck["model"], ckpt)
    return model.to(device).eval(), dict(ck["meta"])


def _with_dropout(model: SubTransformer, p: float) -> SubTransformer:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


def _load_state(model: nn.Module, state: dict, ckpt: Any) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{ckpt}: weights do not fit the model ({str(e).splitlines()[0][:160]})") from None


def load_tokenizer(meta: dict[str, Any]) -> SubwordTokenizer:
    return SubwordTokenizer.load(meta["tokenizer"])


def validation_data(meta: dict[str, Any], n_sentences: int | None = None, max_tokens: int | None = None,
                    split: str = "valid") -> tuple[list[Batch], list[tuple[str, str]]]:
    """The fixed validation subset a checkpoint was evaluated on: (batches, pairs). Reloads the
    corpus and tokenizer recorded in ``meta`` and checks the corpus fingerprint."""
    tcfg = TrainConfig.from_dict(meta["train_config"])
    corpus = load_corpus(tcfg.corpus)
    if corpus.fingerprint != meta["corpus_fingerprint"]:
        raise UserError(f"corpus {tcfg.corpus!r} changed since training (fingerprint {corpus.fingerprint} != {meta['corpus_fingerprint']})")
    tok = load_tokenizer(meta)
    pairs = getattr(corpus, split)[: n_sentences or tcfg.valid_sentences]
    return fixed_batches(encode_pairs(tok, pairs, tcfg.max_len), max_tokens or tcfg.max_tokens), pairs


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        if isinstance(obj, str):
            Path(tmp).write_text(obj)
        else:
            torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _params_digest(model: nn.Module) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))


# ---- the training run ------------------------------------------------------------------------
def _resolve_archs(names: Sequence[str], space: SearchSpace, fixed: Arch | None) -> list[tuple[str, Arch]]:
    if fixed is not None:
        return [("arch", fixed)]
    out = []
    for n in names:
        if n == "largest":
            out.append(("largest", space.largest()))
        elif n == "smallest":
            out.append(("smallest", space.smallest()))
        else:
            a = space.validate(Arch.from_json(n))
            out.append((a.arch_id, a))
    return out


def _versions() -> dict[str, str]:
    import tokenizers

    try:
        from importlib.metadata import version

        moenas_v = version("moenas")
    except Exception:
        moenas_v = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
            "moenas": moenas_v}


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
          log=None) -> dict[str, Any]:
    """Train (or resume) and write the checkpoint ``out`` plus ``<out>.json``; returns the
    metadata. See the module docstring."""
    out = Path(out)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    ck = None
    if resume:
        ck = read_checkpoint(out)
        saved = TrainConfig.from_dict(ck["train_config"])
        # Everything but the run-length and run-time knobs comes from the checkpoint.
        for k in ("steps", "progress", "device", "eval_every", "save_every", "cache_dir"):
            setattr(saved, k, getattr(cfg, k))
        cfg = saved
    elif (out.exists() or meta_path(out).exists()) and not overwrite:
        which = out if out.exists() else meta_path(out)
        raise UserError(f"{which} exists; pass --resume to continue it or --overwrite to replace it")
    elif out.is_dir():
        raise UserError(f"{out} is a directory; --out names a checkpoint file")

    rank, world, device, started = _dist_setup(cfg.device)
    try:
        return _train(cfg, out, ck, rank, world, device, log)
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, out: Path, ck: dict | None, rank: int, world: int, device: torch.device,
           log) -> dict[str, Any]:
    t_start = time.time()

    # --- space, data, tokenizer (rank 0 first: it trains and caches the tokenizer) ---
    if ck is not None and ck["kind"] == "supernet":
        space = SearchSpace.from_dict(ck["supernet_config"]["space"], source=str(out))
    else:
        space = SearchSpace.load(cfg.space)
    fixed = None
    if cfg.standalone:
        fixed = space.validate(Arch.from_json(cfg.arch))
    corpus: Corpus | None = None
    tok = None
    for r in (0, 1):
        if (rank == 0) == (r == 0):
            corpus = load_corpus(cfg.corpus)
            tok = get_tokenizer(corpus, space.vocab_size, cfg.cache_dir)
        _barrier(world)
    if ck is not None and ck["meta"]["corpus_fingerprint"] != corpus.fingerprint:
        raise UserError(f"{out}: trained on corpus {ck['meta']['corpus_fingerprint']}, but {cfg.corpus!r} "
                        f"now has fingerprint {corpus.fingerprint}; resume with the same corpus")
    train_ex = encode_pairs(tok, corpus.train, cfg.max_len)
    valid_pairs = corpus.valid[: cfg.valid_sentences]
    valid_batches = fixed_batches(encode_pairs(tok, valid_pairs, cfg.max_len), cfg.max_tokens)
    stream = BatchStream(train_ex, cfg.max_tokens, seed=cfg.seed, rank=rank, world=world)

    # --- model ---
    if cfg.standalone:
        if cfg.init_from and read_checkpoint(cfg.init_from)["kind"] == "standalone":
            model, _ = load_model(cfg.init_from)  # fine-tune a standalone model further
            if model.arch != fixed:
                raise UserError(f"{cfg.init_from}: holds arch {model.arch.arch_id}, not {fixed.arch_id}")
            model = _with_dropout(model, cfg.dropout)
        elif cfg.init_from:
            net, _ = load_supernet(cfg.init_from)
            model = extract(net, fixed, dropout=cfg.dropout)
            del net
        else:
            model = build_model(fixed, seed=cfg.seed, dropout=cfg.dropout)
        kind = "standalone"
        snet_cfg = None
    else:
        snet_cfg = SupernetConfig(space=space_to_dict(space), kind=cfg.supernet, dropout=cfg.dropout, seed=cfg.seed,
                                  mos_experts=cfg.mos_experts, mos_mode=cfg.mos_mode, mos_hidden=cfg.mos_hidden,
                                  mos_init=cfg.mos_init)
        model = SuperNet(snet_cfg)
        kind = "supernet"
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    sampler = ArchSampler(space, cfg.sampling, cfg.sandwich_random, seed=cfg.seed, fixed=fixed)
    torch.manual_seed(cfg.seed * 1009 + 17 + rank)  # dropout stream, one per rank

    step = 0
    history: list[dict[str, Any]] = []
    if ck is not None:
        _load_state(model, ck["model"], out)
        opt.load_state_dict(ck["optimizer"])
        sampler.load_state_dict(ck["sampler"])
        stream.load_state_dict(ck["data"])
        rng = ck["rng"]
        if len(rng["torch"]) != world:
            log(f"note: checkpoint saved by {len(rng['torch'])} process(es), resuming with {world}; the run continues but not bit-exactly")
        torch.set_rng_state(rng["torch"][rank % len(rng["torch"])])
        if device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state(rng["cuda"][rank % len(rng["cuda"])])
        step = int(ck["step"])
        history = list(ck["meta"].get("history", []))
        log(f"resuming {out} at step {step}")

    loss_mod = LossModule(model, cfg.label_smoothing, cfg.aux_coef)
    runner: nn.Module = loss_mod
    if world > 1:
        # Uniform sampling leaves parameters unused (deeper layers, extra experts); the sandwich
        # always includes the largest arch, which touches every parameter (as does one fixed arch).
        find_unused = not cfg.standalone and cfg.sampling == "uniform"
        runner = nn.parallel.DistributedDataParallel(loss_mod, device_ids=[device.index] if device.type == "cuda" else None,
                                                     find_unused_parameters=find_unused)

    eval_every = cfg.eval_every or max(cfg.steps // 5, 1)
    save_every = cfg.save_every or eval_every
    eval_archs = _resolve_archs(cfg.eval_archs, space, fixed)
    meta: dict[str, Any] = {}

    def evaluate(with_bleu: bool) -> None:
        losses = validation_loss(model, [a for _, a in eval_archs], valid_batches)
        for (name, arch), loss in zip(eval_archs, losses):
            row = {"step": step, "arch": name, "arch_id": arch.arch_id, "val_loss": round(loss, 5)}
            if with_bleu and cfg.bleu_sentences > 0 and rank == 0:
                row["bleu"] = round(bleu_score(model, arch, tok, corpus.valid[: cfg.bleu_sentences], cfg.beam, cfg.max_len), 3)
            history.append(row)
            if rank == 0:
                log(f"step {step}: {name} ({arch.arch_id}) val_loss {loss:.4f}" + (f" BLEU {row['bleu']:.2f}" if "bleu" in row else ""))

    saves = [0]

    def save() -> None:
        saves[0] += 1
        torch_states = [torch.get_rng_state()]
        cuda_states = [torch.cuda.get_rng_state()] if device.type == "cuda" else []
        in_sync = None
        if world > 1:
            torch_states = [None] * world
            dist.all_gather_object(torch_states, torch.get_rng_state())
            if cuda_states:
                cuda_states = [None] * world
                dist.all_gather_object(cuda_states, torch.cuda.get_rng_state())
            digests = [None] * world
            dist.all_gather_object(digests, _params_digest(model))
            in_sync = len(set(digests)) == 1
        if rank != 0:
            return
        meta.update({
            "format": CKPT_FORMAT, "kind": kind, "space": space.name, "supernet": cfg.supernet if kind == "supernet" else None,
            "sampling": cfg.sampling if kind == "supernet" else None, "arch": cfg.arch, "steps": step,
            "target_steps": cfg.steps, "corpus": corpus.summary(), "corpus_info": corpus.info,
            "corpus_fingerprint": corpus.fingerprint, "tokenizer": str(tok.path), "tokenizer_vocab": tok.vocab_size,
            "world_size": world, "device": str(device), "params": sum(p.numel() for p in model.parameters()),
            "history": history, "versions": _versions(), "train_config": cfg.to_dict(),
            "ddp_params_in_sync": in_sync, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        meta.update(stats)
        state = {
            "format": CKPT_FORMAT, "version": CKPT_VERSION, "kind": kind, "train_config": cfg.to_dict(),
            "supernet_config": snet_cfg.to_dict() if snet_cfg else None, "arch": cfg.arch,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
            "sampler": sampler.state_dict(), "data": stream.state_dict(),
            "rng": {"torch": torch_states, "cuda": cuda_states}, "meta": json.loads(json.dumps(meta)),
        }
        _atomic_save(state, out)
        _atomic_save(json.dumps(meta, indent=2, sort_keys=True) + "\n", meta_path(out))

    stats: dict[str, Any] = {"train_loss": None, "tokens_per_s": None}
    if rank == 0:
        n_par = sum(p.numel() for p in model.parameters())
        log(f"training {kind} ({cfg.supernet if kind == 'supernet' else fixed.arch_id}, {n_par / 1e6:.2f}M params) on "
            f"{corpus.source} [{corpus.fingerprint}]: {len(corpus.train)} train pairs, vocab {tok.vocab_size}, "
            f"{world} process(es) on {device}")
    if step == 0 and not history:
        evaluate(with_bleu=False)

    bar = None
    if cfg.progress and rank == 0 and step < cfg.steps:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
    ema, tok_count, t0 = None, 0, time.time()
    while step < cfg.steps:
        archs = sampler.next()
        batch = next(stream).to(device)
        lr = lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        with _autocast(device):
            loss, parts = runner(batch.src, batch.tgt_in, batch.tgt_out, archs)
        loss.backward()
        if cfg.clip_norm > 0:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tok_count += batch.n_tokens * world
        value = float(parts.mean())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        tps = tok_count / max(time.time() - t0, 1e-9)
        stats.update({"train_loss": round(ema, 5), "tokens_per_s": round(tps, 1)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tps:.0f}", lr=f"{lr:.2e}")
        last = step == cfg.steps
        if step % eval_every == 0 or last:
            evaluate(with_bleu=last)
        if step % save_every == 0 or last:
            save()
    if bar is not None:
        bar.close()
    if not saves[0]:  # nothing trained (already at --steps): still write/refresh the files
        save()
    stats["wall_s"] = round(time.time() - t_start, 2)
    meta.update(stats)
    if rank == 0 and meta:
        _atomic_save(json.dumps(meta, indent=2, sort_keys=True) + "\n", meta_path(out))
    return meta
