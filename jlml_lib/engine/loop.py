"""The iteration loop: SGD on Eq. (5) with Table 4's step schedule, AMP, DDP, checkpoints.

:func:`fit` trains a model on a list of ``(image_ref, label, camid)`` items and is what
``python -m jlml_lib.train`` runs (see :mod:`jlml_lib.engine.run` for the data, evaluation and
records around it): :func:`setup` builds or resumes everything, :func:`step` is one iteration,
:class:`Bookkeeper` logs and checkpoints. One iteration = one global batch of ``cfg.batch_size`` images (§2.2
"Model Training": batch-wise SGD updating both branches from the same identity labels).

* LR: Caffe ``step`` policy, ``lr · gamma^floor(i / lr_step)`` set before iteration i.
* AMP: ``autocast`` (bf16, or fp16 with a ``GradScaler``); losses are computed in fp32
  (``jlml_lib.losses`` casts logits). channels_last on request (default on CUDA).
* Checkpoints every ``ckpt_every`` iterations and at the end, atomically; a non-finite loss
  stops the run (:class:`NonFiniteLoss`) *before* anything is saved, so ``last.pt`` stays the
  last good one. A data error in the middle (an unreadable image) first saves the last completed
  iteration (single process), so ``--resume`` loses nothing once the file is replaced.
* A start (fresh or resumed) clears what a killed run left: temporary checkpoint files, and log
  lines past the iteration it starts from (none on a fresh start).
* Logging (rank 0): ``log.jsonl`` one line per ``log_every`` iterations — mean loss terms over
  the interval (averaged over ranks), LR, images/s, wall time — and a tqdm bar.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm  # a text bar everywhere: tqdm.auto warns inside a kernel without ipywidgets

from jlml_lib.engine.checkpoint import (check_init, load_checkpoint, remove_stale_temporaries, save_checkpoint,
                                       set_rng_state)
from jlml_lib.engine.config import TrainConfig
from jlml_lib.engine.distributed import DistInfo, all_reduce_sum, cpu_threads
from jlml_lib.engine.sampler import apply_flip, build_train_loader, flip_mask
from jlml_lib.errors import ConfigError, DataError, one_line
from jlml_lib.io import write_text
from jlml_lib.losses import LOSS_TERMS, LossTerms, build_loss
from jlml_lib.paths import RunDir

__all__ = ["NonFiniteLoss", "FitResult", "Training", "resolve_device", "amp_dtype", "check_device_settings",
           "check_before_data", "build_optimizer", "setup", "step", "fit"]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf; the run stopped and kept its last good checkpoint."""


@dataclass
class FitResult:
    model: nn.Module            # the bare (unwrapped) model, on its device
    iteration: int              # iterations completed
    wall_time_s: float          # this process's training time (excluding evaluation)
    images_per_s: float         # global images/s over this process's iterations
    last_log: dict[str, Any]


def resolve_device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    kind = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or auto.")
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: bf16 on CUDA when supported, else fp16."""
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if cfg.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp=fp16 needs CUDA (fp16 autocast + GradScaler); on CPU use amp=bf16 or off.")
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def check_device_settings(cfg: TrainConfig, device: torch.device) -> None:
    """Settings the device cannot honour (amp=fp16, sync_bn=on without CUDA): a ConfigError."""
    amp_dtype(cfg, device)
    if cfg.sync_bn == "on" and device.type != "cuda":
        raise ConfigError("sync_bn=on needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); on CPU use "
                          "sync_bn=off (per-process BN statistics) or freeze_bn=true.")


def check_before_data(cfg: TrainConfig, info: DistInfo = DistInfo(), *, init: bool = True) -> torch.device:
    """Everything about a run that can be refused before its data is loaded or a file written:
    the device and what it must support, and (``init``; a resumed run takes its weights from its
    checkpoint instead) the ``--init`` checkpoint, readable and of this architecture
    (:func:`jlml_lib.engine.checkpoint.check_init`). Returns the device."""
    device = resolve_device(cfg, info)
    check_device_settings(cfg, device)
    if init and cfg.init:
        check_init(cfg, cfg.init)
    return device


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``auto``: on, on CUDA *and* CPU. On the CPU, oneDNN's channels_last kernels train the
    grouped local streams ~13% faster at 64×32 (benchmarks/NOTES-model.md) and degrade far less
    when the cores are shared with other processes."""
    return cfg.channels_last in ("on", "auto")


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.SGD:
    """SGD (Table 4: momentum 0.9); weight decay on every parameter (Caffe decay_mult 1)."""
    cls_ids = {id(p) for p in model.classifier_parameters()}
    backbone = [p for p in model.parameters() if id(p) not in cls_ids]
    heads = [p for p in model.parameters() if id(p) in cls_ids]
    groups = [{"params": backbone, "lr_mult": 1.0},
              {"params": heads, "lr_mult": cfg.classifier_lr_mult}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def set_bn_eval(model: nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()


@dataclass
class Training:
    """Everything the loop works with, set up by :func:`setup` (resumed state included)."""

    model: nn.Module            # the bare model (checkpoints, regulariser weights)
    net: nn.Module              # what runs the forward pass: the model, or its DDP wrapper
    optimizer: torch.optim.SGD
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    device: torch.device
    autocast: Callable[[], contextlib.AbstractContextManager]
    channels_last: bool
    start: int                  # first iteration to run (0, or the checkpoint's on resume)


def setup(cfg: TrainConfig, num_classes: int, run: RunDir, info: DistInfo, *, resume: bool,
          init: Callable[[nn.Module], Any] | None) -> Training:
    """Model (fresh, ``init``-ialised, or resumed), SyncBatchNorm/DDP wrapping, optimizer, AMP, loss."""
    device = resolve_device(cfg, info)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg.threads, info))
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    if device.type == "cpu" and cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = cfg.build_model(num_classes)
    if init is not None and not resume:
        init(model)
    model.to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    check_device_settings(cfg, device)
    if info.distributed and (cfg.sync_bn == "on" or (cfg.sync_bn == "auto" and device.type == "cuda")):
        # 8 GPUs × 4 images: without it each BN layer would normalise over 4 images, not Table 4's 32
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    optimizer = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    start = _restore(run, model, optimizer, scaler, info) if resume else 0
    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()
    if cfg.freeze_bn:
        set_bn_eval(net)
    return Training(
        model=model, net=net, optimizer=optimizer, scaler=scaler, device=device, channels_last=channels_last,
        loss_fn=build_loss(cfg.head, m=cfg.m, lambda_global=cfg.lambda_global, lambda_local=cfg.lambda_local,
                           sfl=cfg.sfl),
        autocast=(lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext,
        start=start)


def _restore(run: RunDir, model: nn.Module, optimizer, scaler, info: DistInfo) -> int:
    """Load ``last.pt`` into the model, optimizer, scaler and RNGs; returns its iteration."""
    ckpt = load_checkpoint(run.last)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    start = int(ckpt["iteration"])
    if info.is_main:
        _truncate_log(run.log, start)
    return start


def step(t: Training, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor, it: int,
         info: DistInfo) -> LossTerms:
    """One SGD iteration on Eq. (5) at the step-policy LR of iteration ``it`` (Table 4)."""
    for group in t.optimizer.param_groups:
        group["lr"] = cfg.lr_at(it) * group["lr_mult"]
    images = images.to(t.device, non_blocking=True)
    labels = labels.to(t.device, non_blocking=True)
    if cfg.flip:
        images = apply_flip(images, flip_mask(cfg.seed, it, cfg.batch_size, info.rank, info.world_size))
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with t.autocast():
        out = t.net(images)
    terms = t.loss_fn(out, labels, t.model.global_fc_weight, t.model.local_fc_weight)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(terms.total).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return terms


class Bookkeeper:
    """Loss sums kept on the device (no host sync per iteration), log lines, progress bar,
    the non-finite check and checkpoints at ``log_every`` / ``ckpt_every`` iterations."""

    def __init__(self, cfg: TrainConfig, t: Training, run: RunDir, info: DistInfo, num_classes: int,
                 data: dict) -> None:
        self.cfg, self.t, self.run, self.info = cfg, t, run, info
        self.data = {"num_train_pids": num_classes, **data}
        self.num_classes = num_classes
        self.sums = torch.zeros(len(LOSS_TERMS), device=t.device, dtype=torch.float64)
        self.first_bad = torch.full((), -1, device=t.device, dtype=torch.long)
        self.bar = _progress(cfg, info, t.start)
        self.t0 = self.t_log = time.perf_counter()
        self.it_log, self.last_log = t.start, {}

    def add(self, it: int, terms: LossTerms) -> None:
        vals = torch.stack([v.detach().double() for v in terms])
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(vals[0]),
                                     torch.full_like(self.first_bad, it), self.first_bad)
        self.sums += vals

    def after(self, done: int) -> None:
        """Log and/or checkpoint after ``done`` iterations, when one is due."""
        cfg = self.cfg
        log_now = done % cfg.log_every == 0 or done == cfg.iterations
        ckpt_now = done % cfg.ckpt_every == 0 or done == cfg.iterations
        if not (log_now or ckpt_now):
            return
        _check_finite(self.first_bad, self.info, self.run)   # before anything is saved
        if log_now:
            self._log(done)
        if ckpt_now and self.info.is_main:
            t = self.t
            save_checkpoint(self.run.last, model=t.model, optimizer=t.optimizer, scaler=t.scaler,
                            iteration=done, config=cfg.to_dict(), num_classes=self.num_classes, data=self.data)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def save_after_data_error(self, done: int, exc: DataError) -> DataError:
        """The error to raise for a data error met before iteration ``done + 1``, after saving
        the ``done`` completed iterations when that is cheap: one process (under DDP the other
        ranks wait in a collective), something new since the start, and finite losses."""
        saved = ""
        if not self.info.distributed and done > self.t.start:
            try:
                _check_finite(self.first_bad, self.info, self.run)
            except NonFiniteLoss:
                pass
            else:
                t = self.t
                save_checkpoint(self.run.last, model=t.model, optimizer=t.optimizer, scaler=t.scaler,
                                iteration=done, config=self.cfg.to_dict(), num_classes=self.num_classes,
                                data=self.data)
                saved = f"saved {self.run.last} at iteration {done}; "
        where = (f"{saved}fix the data, then run the same command with --resume" if saved or self.run.last.exists()
                 else "no checkpoint had been written; fix the data and run the same command again")
        if not saved and self.run.last.exists():
            where += f" (continues from {self.run.last})"
        return DataError(f"{one_line(exc)} [training stopped before iteration {done + 1}: {where}.]")

    def _log(self, done: int) -> None:
        all_reduce_sum(self.sums, self.info)
        n = (done - self.it_log) * self.info.world_size
        now = time.perf_counter()
        self.last_log = {"iteration": done, **{k: float(v) / n for k, v in zip(LOSS_TERMS, self.sums.tolist())},
                         "lr": self.cfg.lr_at(done - 1),
                         "images_per_s": (done - self.it_log) * self.cfg.batch_size / (now - self.t_log),
                         "wall_time_s": now - self.t0}
        self.sums.zero_()
        self.it_log, self.t_log = done, now
        if self.info.is_main:
            _append_log(self.run.log, self.last_log)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{self.last_log['total']:.3f}", lr=f"{self.last_log['lr']:.0e}",
                                     ips=f"{self.last_log['images_per_s']:.0f}")

    def close(self) -> FitResult:
        if self.bar is not None:
            self.bar.close()
        wall = time.perf_counter() - self.t0
        cfg, done_here = self.cfg, self.cfg.iterations - self.t.start
        return FitResult(model=self.t.model, iteration=max(cfg.iterations, self.t.start), wall_time_s=wall,
                         images_per_s=done_here * cfg.batch_size / wall if done_here > 0 and wall > 0 else 0.0,
                         last_log=self.last_log)


def fit(cfg: TrainConfig, items: Sequence[tuple[str, int, int]], num_classes: int, out_dir: str | Path, *,
        info: DistInfo = DistInfo(), resume: bool = False, init: Callable[[nn.Module], Any] | None = None,
        data_info: dict | None = None,
        on_iteration: Callable[[int, nn.Module], None] | None = None) -> FitResult:
    """Train from scratch (or ``init`` hook: e.g. --init weights) or resume ``out_dir``'s last.pt.

    ``on_iteration(i, model)`` runs after iteration i's update (tests use it to simulate a kill).
    The process-wide deterministic-algorithms flag is restored afterwards.
    """
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    run = RunDir(out_dir)
    try:
        if info.is_main:
            run.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(run)
        t = setup(cfg, num_classes, run, info, resume=resume, init=init)
        if info.is_main and t.start == 0:
            _truncate_log(run.log, 0)  # lines of a run killed before its first checkpoint
        books = Bookkeeper(cfg, t, run, info, num_classes, data_info or {})
        batches = iter(build_train_loader(items, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                          workers=cfg.workers, seed=cfg.seed, start_iteration=t.start,
                                          rank=info.rank, world_size=info.world_size,
                                          random_resized_crop=cfg.random_resized_crop))
        for it in range(t.start, cfg.iterations):
            try:
                images, labels, _ = next(batches)
            except DataError as exc:
                raise books.save_after_data_error(it, exc) from None
            books.add(it, step(t, cfg, images, labels, it, info))
            if on_iteration is not None:
                on_iteration(it + 1, t.model)
            books.after(it + 1)
        return books.close()
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def _check_finite(first_bad: torch.Tensor, info: DistInfo, run: RunDir) -> None:
    """Raise NonFiniteLoss on every rank if any rank saw a NaN/inf loss (before any save)."""
    flag = torch.where(first_bad >= 0, first_bad + 1, torch.zeros_like(first_bad)).clone()
    if info.distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    bad = int(flag.item())
    if bad:
        ckpt = run.last
        kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint had been written yet"
        raise NonFiniteLoss(
            f"the training loss became non-finite (NaN/inf) at iteration {bad} (1-based); the run "
            f"stopped and {kept}. Lower the learning rate (lr=...), try amp=off, or check the data; "
            "--resume continues from the last good checkpoint.")


def _progress(cfg: TrainConfig, info: DistInfo, start: int):
    if not (cfg.progress and info.is_main):
        return None
    return tqdm(total=cfg.iterations, initial=start, desc="train", unit="it", dynamic_ncols=True)


def _append_log(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def _truncate_log(path: Path, iteration: int) -> None:
    """On resume, drop log lines past the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("iteration", math.inf) <= iteration:
                keep.append(line)
        except ValueError:
            continue  # a line cut by the kill
    write_text(path, "".join(k + "\n" for k in keep))
