"""The iteration loop: SGD on Eq. (5) with Table 4's step schedule, AMP, DDP, checkpoints.

:func:`fit` trains a model on a list of ``(image_ref, label, camid)`` items and is what
``python -m jlml_lib.train`` runs (see :mod:`jlml_lib.train` for the data, evaluation and
records around it). One iteration = one global batch of ``cfg.batch_size`` images (§2.2
"Model Training": batch-wise SGD updating both branches from the same identity labels).

* LR: Caffe ``step`` policy, ``lr · gamma^floor(i / lr_step)`` set before iteration i.
* AMP: ``autocast`` (bf16, or fp16 with a ``GradScaler``); losses are computed in fp32
  (``jlml_lib.losses`` casts logits). channels_last on request (default on CUDA).
* Checkpoints every ``ckpt_every`` iterations and at the end, atomically; a non-finite loss
  stops the run (:class:`NonFiniteLoss`) *before* anything is saved, so ``last.pt`` stays the
  last good one.
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
from torch import nn

from jlml_lib.checkpoint import last_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from jlml_lib.config import TrainConfig
from jlml_lib.distributed import DistInfo, all_reduce_sum
from jlml_lib.io import write_text
from jlml_lib.losses import LOSS_TERMS, build_loss
from jlml_lib.train_data import apply_flip, build_train_loader, flip_mask

__all__ = ["NonFiniteLoss", "FitResult", "resolve_device", "amp_dtype", "build_model", "build_optimizer",
           "fit"]

TERMS = LOSS_TERMS


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
            from jlml_lib.errors import ConfigError
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
        from jlml_lib.errors import ConfigError
        raise ConfigError("amp=fp16 needs CUDA (fp16 autocast + GradScaler); on CPU use amp=bf16 or off.")
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``auto``: on, on CUDA *and* CPU. On the CPU, oneDNN's channels_last kernels train the
    grouped local streams ~13% faster at 64×32 (benchmarks/NOTES-model.md) and degrade far less
    when the cores are shared with other processes."""
    return cfg.channels_last in ("on", "auto")


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    from jlml_lib.model import jlml_resnet39

    return jlml_resnet39(num_classes, m=cfg.m, share_local=cfg.share_local, shared_conv1=cfg.shared_conv1,
                         head=cfg.head, stride_on=cfg.stride_on, feature_layer=cfg.feature_layer)


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


def fit(cfg: TrainConfig, items: Sequence[tuple[str, int, int]], num_classes: int, out_dir: str | Path, *,
        info: DistInfo = DistInfo(), resume: bool = False, init: Callable[[nn.Module], Any] | None = None,
        data_info: dict | None = None,
        on_iteration: Callable[[int, nn.Module], None] | None = None) -> FitResult:
    """Train from scratch (or ``init`` hook: e.g. --init weights) or resume ``out_dir``'s last.pt.

    ``on_iteration(i, model)`` runs after iteration i's update (tests use it to simulate a kill).
    The process-wide deterministic-algorithms flag is restored afterwards.
    """
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return _fit(cfg, items, num_classes, Path(out_dir), info, resume, init, data_info, on_iteration)
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def _fit(cfg, items, num_classes, out_dir, info, resume, init, data_info, on_iteration) -> FitResult:
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg, info)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    if device.type == "cpu" and cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(cfg, num_classes)
    if init is not None and not resume:
        init(model)
    model.to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn == "on" and device.type != "cuda":
        from jlml_lib.errors import ConfigError
        raise ConfigError("sync_bn=on needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); on CPU use "
                          "sync_bn=off (per-process BN statistics) or freeze_bn=true.")
    if info.distributed and (cfg.sync_bn == "on" or (cfg.sync_bn == "auto" and device.type == "cuda")):
        # 8 GPUs × 4 images: without it each BN layer would normalise over 4 images, not Table 4's 32
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    optimizer = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    loss_fn = build_loss(cfg.head, m=cfg.m, lambda_global=cfg.lambda_global,
                         lambda_local=cfg.lambda_local, sfl=cfg.sfl)

    start = 0
    if resume:
        ckpt = load_checkpoint(last_checkpoint(out_dir))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["iteration"])
        if info.is_main:
            _truncate_log(out_dir / "log.jsonl", start)

    net: nn.Module = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()
    if cfg.freeze_bn:
        set_bn_eval(net)

    loader = build_train_loader(items, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                workers=cfg.workers, seed=cfg.seed, start_iteration=start,
                                rank=info.rank, world_size=info.world_size)
    batches = iter(loader)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
    sums = torch.zeros(len(TERMS), device=device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    data = {"num_train_pids": num_classes, **(data_info or {})}
    bar = _progress(cfg, info, start)
    t0 = t_log = time.perf_counter()
    it_log, last_log = start, {}

    for it in range(start, cfg.iterations):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(it) * group["lr_mult"]
        images, labels, _ = next(batches)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cfg.flip:
            images = apply_flip(images, flip_mask(cfg.seed, it, cfg.batch_size, info.rank, info.world_size))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = net(images)
        terms = loss_fn(out, labels, model.global_fc_weight, model.local_fc_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.step(optimizer)
        scaler.update()

        # bookkeeping on the device: no host sync per iteration
        vals = torch.stack([t.detach().double() for t in terms])
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(vals[0]), torch.full_like(first_bad, it),
                                first_bad)
        sums += vals
        done = it + 1
        if on_iteration is not None:
            on_iteration(done, model)
        log_now = done % cfg.log_every == 0 or done == cfg.iterations
        ckpt_now = done % cfg.ckpt_every == 0 or done == cfg.iterations
        if not (log_now or ckpt_now):
            continue
        _check_finite(first_bad, info, out_dir)
        if log_now:
            all_reduce_sum(sums, info)
            n = (done - it_log) * info.world_size
            now = time.perf_counter()
            last_log = {"iteration": done, **{k: float(v) / n for k, v in zip(TERMS, sums.tolist())},
                        "lr": cfg.lr_at(it), "images_per_s": (done - it_log) * cfg.batch_size / (now - t_log),
                        "wall_time_s": now - t0}
            sums.zero_()
            it_log, t_log = done, now
            if info.is_main:
                _append_log(out_dir / "log.jsonl", last_log)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_log['total']:.3f}", lr=f"{last_log['lr']:.0e}",
                                    ips=f"{last_log['images_per_s']:.0f}")
        if ckpt_now and info.is_main:
            save_checkpoint(last_checkpoint(out_dir), model=model, optimizer=optimizer, scaler=scaler,
                            iteration=done, config=cfg.to_dict(), num_classes=num_classes, data=data)
        if bar is not None:
            bar.update(done - bar.n)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    done_here = cfg.iterations - start
    return FitResult(model=model, iteration=max(cfg.iterations, start), wall_time_s=wall,
                     images_per_s=done_here * cfg.batch_size / wall if done_here > 0 and wall > 0 else 0.0,
                     last_log=last_log)


def _check_finite(first_bad: torch.Tensor, info: DistInfo, out_dir: Path) -> None:
    """Raise NonFiniteLoss on every rank if any rank saw a NaN/inf loss (before any save)."""
    flag = torch.where(first_bad >= 0, first_bad + 1, torch.zeros_like(first_bad)).clone()
    if info.distributed:
        import torch.distributed as dist
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    bad = int(flag.item())
    if bad:
        ckpt = last_checkpoint(out_dir)
        kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint had been written yet"
        raise NonFiniteLoss(
            f"the training loss became non-finite (NaN/inf) at iteration {bad} (1-based); the run "
            f"stopped and {kept}. Lower the learning rate (lr=...), try amp=off, or check the data; "
            "--resume continues from the last good checkpoint.")


def _progress(cfg: TrainConfig, info: DistInfo, start: int):
    if not (cfg.progress and info.is_main):
        return None
    from tqdm.auto import tqdm

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
