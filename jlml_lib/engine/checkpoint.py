"""Training checkpoints: written atomically, resumable exactly, loadable as ``--init`` weights.

A checkpoint (``torch.save`` of a dict, through :func:`jlml_lib.io.torch_save`, so the file is
either complete or absent) holds::

    format        "jlml-checkpoint"      version   1
    iteration     iterations completed (the next one to run)
    model         state_dict of the bare model (no DDP "module." prefix)
    optimizer     SGD state (momentum buffers)
    scaler        GradScaler state (fp16 AMP) or None
    rng           torch CPU / CUDA, numpy and python RNG states
    config        the TrainConfig as a dict
    num_classes   classifier width (training identities)
    data          {"dataset", "source", "split", "num_train_pids"}

Data order and augmentation are functions of (seed, iteration) (:mod:`jlml_lib.engine.sampler`),
so ``iteration`` is all a resumed run needs to draw the very same next batches.

``final.pt`` (the trained weights, :func:`save_final`) is the same format without optimizer,
scaler and rng; :func:`load_model` rebuilds a model from either kind for inference.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jlml_lib.engine.config import TrainConfig, config_from_dict
from jlml_lib.errors import ConfigError
from jlml_lib.io import torch_save
from jlml_lib.paths import RunDir

__all__ = ["FORMAT", "VERSION", "CLASSIFIER_PREFIXES", "rng_state", "set_rng_state", "save_checkpoint",
           "save_final", "load_checkpoint", "load_model", "load_init_weights"]

FORMAT, VERSION = "jlml-checkpoint", 1
CLASSIFIER_PREFIXES = ("global_classifier.", "local_classifier.", "joint_classifier.")


def rng_state() -> dict[str, Any]:
    """Every global RNG, in types ``torch.load(weights_only=True)`` accepts (no numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any, iteration: int, config: dict, num_classes: int,
                    data: dict) -> Path:
    """Write a resumable checkpoint atomically (temp file, fsync, rename)."""
    obj = _weights(model, iteration, config, num_classes, data)
    obj.update(optimizer=optimizer.state_dict(), rng=rng_state(),
               scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None)
    return torch_save(obj, path)


def save_final(run_dir: str | os.PathLike, *, model: nn.Module, iteration: int, config: dict,
               num_classes: int, data: dict) -> Path:
    """The run's trained weights, ``checkpoints/final.pt`` (what ``--init`` and inference load)."""
    return torch_save(_weights(model, iteration, config, num_classes, data), RunDir(run_dir).final)


def _weights(model: nn.Module, iteration: int, config: dict, num_classes: int, data: dict) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "iteration": int(iteration),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "config": dict(config), "num_classes": int(num_classes), "data": dict(data)}


def _read(path: Path, purpose: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found ({purpose}). Give the path of a .pt file "
                          "written by `jlml train` (e.g. RUN/checkpoints/last.pt or final.pt).")
    try:
        # weights_only: a checkpoint is data; never execute pickled code from a file
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}). The file is damaged or "
                          "not a checkpoint; use another one (RUN/checkpoints/last.pt).") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A resumable checkpoint written by :func:`save_checkpoint`, checked for its format."""
    path = Path(path)
    ckpt = _read(path, "needed to resume")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a jlml training checkpoint (no format={FORMAT!r}); --resume "
                          "needs RUN/checkpoints/last.pt written by `jlml train`.")
    if ckpt.get("version") != VERSION:
        raise ConfigError(f"{path}: checkpoint version {ckpt.get('version')!r}, this jlml_lib "
                          f"reads {VERSION}. Start a new run, or use --init to take its weights.")
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """The model of a checkpoint (``final.pt`` or ``last.pt``) in eval mode, and its TrainConfig.

    The checkpoint carries its config and class count, so the architecture (``model.ARCH_KEYS``)
    is rebuilt from it; a config written before a setting existed takes that setting's default.
    """
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    model = cfg.build_model(ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(torch.device(device)).eval(), cfg


def load_init_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Start ``model`` from the backbone of another run (--init, §3 "Implementation" chains).

    The ID classifiers of the checkpoint (ImageNet's 1,000 classes, or another dataset's
    identities) are dropped; ``model`` keeps its own freshly initialised ones (the
    ``reset_classifiers`` of fine-tuning). Accepts a jlml checkpoint or a bare state_dict.
    A model with its own local first conv (``shared_conv1=False``, Table 11) started from a
    shared-conv1 checkpoint gets a copy of the shared conv1 in its local conv1 too, so both
    branches start from the same pre-trained low-level filters.
    Returns ``{"path", "skipped": [classifier keys], "copied": [filled keys], "source_config"}``.
    """
    path = Path(path)
    obj = _read(path, "given with --init")
    state = obj.get("model") if isinstance(obj, dict) and obj.get("format") == FORMAT else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: holds no model weights (expected a jlml checkpoint or a "
                          "state_dict of JLML-ResNet39). Use RUN/checkpoints/final.pt of the pre-training run.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    backbone = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(CLASSIFIER_PREFIXES)}
    copied = sorted(k for k in own if k.startswith("local_conv1.") and k not in backbone
                    and "conv1." + k.removeprefix("local_conv1.") in backbone)
    backbone.update({k: backbone["conv1." + k.removeprefix("local_conv1.")] for k in copied})
    missing = sorted(set(own) - set(backbone))
    unexpected = sorted(set(backbone) - set(own))
    shapes = [f"{k}: file {tuple(backbone[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(backbone)) if backbone[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        src = obj.get("config") if isinstance(obj, dict) else None
        arch = {k: src.get(k) for k in ("m", "shared_conv1", "share_local", "stride_on")} if src else "unknown"
        raise ConfigError(
            f"{path}: its weights do not fit this model (architecture of the file: {arch}). "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:3]}. "
            "Use the same m / shared_conv1 / share_local / stride_on as the run that wrote it.")
    model.load_state_dict(backbone, strict=False)
    return {"path": str(path), "skipped": sorted(set(state) - set(backbone)), "copied": copied,
            "source_config": obj.get("config") if isinstance(obj, dict) else None}
