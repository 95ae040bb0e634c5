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

import contextlib
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
from jlml_lib.model import ARCH_KEYS, JLMLConfig
from jlml_lib.paths import CONFIG, FINAL, LAST, LOG, METRICS, QUERIES, SUMMARY, RunDir

__all__ = ["FORMAT", "VERSION", "CLASSIFIER_PREFIXES", "INIT_MAY_DIFFER", "rng_state", "set_rng_state",
           "save_checkpoint", "save_final", "load_checkpoint", "load_model", "load_init_weights", "check_init",
           "remove_stale_temporaries"]

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


def remove_stale_temporaries(run: RunDir) -> list[Path]:
    """Delete the temporary files a killed write left in a run folder (``jlml_lib.io.atomic_open``
    writes ``.<name>.<random>.tmp`` beside ``<name>`` and renames it when complete, so such a file
    is never a result; a checkpoint's can be as large as the checkpoint). Returns what went."""
    gone = []
    for folder, names in ((run.checkpoints, (LAST, FINAL)), (run.path, (CONFIG, LOG, SUMMARY, METRICS, QUERIES))):
        for name in names:
            for tmp in folder.glob(f".{name}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                    gone.append(tmp)
    return gone


def _read(path: Path, purpose: str) -> Any:
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "checkpoint not found"
        raise ConfigError(f"{path}: {what} ({purpose}). Give the path of a .pt file "
                          "written by `jlml train` (e.g. RUN/checkpoints/last.pt or final.pt).")
    try:
        # weights_only: a checkpoint is data; never execute pickled code from a file
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # PyTorch's own text suggests weights_only=False: never, for a file that is not plain data
        raise ConfigError(f"{path}: not a readable checkpoint ({purpose}): its contents are not the tensors "
                          "and plain values a jlml checkpoint holds (a damaged or foreign file; objects in it "
                          "are never unpickled, as that could run code). Use RUN/checkpoints/final.pt or "
                          "last.pt of a `jlml train` run.") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"{path}: not a readable PyTorch checkpoint ({purpose}; {type(exc).__name__}: "
                          f"{detail.split('. ')[0]}). The file is damaged or not a checkpoint; use another "
                          "one (RUN/checkpoints/last.pt or final.pt).") from None


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


#: architecture settings (``model.ARCH_KEYS``) in which an ``--init`` checkpoint may differ from the
#: model it starts, and how: the classifiers are never loaded, so ``head`` (Table 10's UniLoss from
#: the ImageNet model) is free; a shared conv1 is copied into both first convs (Table 11)
INIT_MAY_DIFFER = {"head": None, "shared_conv1": (True, False)}


def _init_state(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights of an ``--init`` file (a jlml checkpoint or a bare state_dict) and its config."""
    obj = _read(path, "given with --init")
    state = obj.get("model") if isinstance(obj, dict) and obj.get("format") == FORMAT else obj
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: holds no model weights (expected a jlml checkpoint or a "
                          "state_dict of JLML-ResNet39). Use RUN/checkpoints/final.pt of the pre-training run.")
    src = obj.get("config") if isinstance(obj, dict) and isinstance(obj.get("config"), dict) else None
    return {k.removeprefix("module."): v for k, v in state.items()}, src


def _fit_init(model: nn.Module, path: Path, state: dict[str, torch.Tensor],
              src: dict | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone weights ``model`` takes from ``state`` and the keys filled by copying; a
    ConfigError naming the setting when the file's architecture is not ``model``'s."""
    own_cfg = getattr(model, "cfg", None)
    if src is not None and own_cfg is not None:
        differ = {}
        for k in ARCH_KEYS:
            theirs, ours = src.get(k, JLMLConfig.__dataclass_fields__[k].default), getattr(own_cfg, k)
            allowed = INIT_MAY_DIFFER.get(k, ())
            if theirs != ours and not (allowed is None or (theirs, ours) == allowed):
                differ[k] = (theirs, ours)
        if differ:
            raise ConfigError(
                f"{path}: written by a model of another architecture ("
                + "; ".join(f"{k}: file {a!r}, this run {b!r}" for k, (a, b) in differ.items())
                + "), so its weights would not mean the same here. Start from a checkpoint of this "
                "architecture, or train this run with " + " ".join(f"{k}={str(a).lower()}" for k, (a, _) in differ.items())
                + ".")
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
        arch = {k: src.get(k) for k in ARCH_KEYS} if src else "unknown (a bare state_dict)"
        raise ConfigError(
            f"{path}: its weights do not fit this model (architecture of the file: {arch}). "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:3]}. "
            f"Use the same {' / '.join(k for k in ARCH_KEYS if k != 'head')} as the run that wrote it.")
    return backbone, copied


def check_init(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Refuse an ``--init`` file that cannot start ``cfg``'s model (unreadable, no weights, another
    architecture) before any data is loaded. The model is built on the CPU (under a second; the
    meta device takes longer the first time) with the global RNG left as it was; the file is read
    once more by :func:`load_init_weights` when training starts."""
    path = Path(path)
    state, src = _init_state(path)
    with torch.random.fork_rng(devices=[]):
        model = cfg.build_model(1)
    _fit_init(model, path, state, src)


def load_init_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Start ``model`` from the backbone of another run (--init, §3 "Implementation" chains).

    The ID classifiers of the checkpoint (ImageNet's 1,000 classes, or another dataset's
    identities) are dropped; ``model`` keeps its own freshly initialised ones (the
    ``reset_classifiers`` of fine-tuning). Accepts a jlml checkpoint or a bare state_dict.
    A model with its own local first conv (``shared_conv1=False``, Table 11) started from a
    shared-conv1 checkpoint gets a copy of the shared conv1 in its local conv1 too, so both
    branches start from the same pre-trained low-level filters. A jlml checkpoint of another
    architecture (any ``model.ARCH_KEYS`` setting but :data:`INIT_MAY_DIFFER`'s) is refused, also
    where the shapes agree (``stride_on``).
    Returns ``{"path", "skipped": [classifier keys], "copied": [filled keys], "source_config"}``.
    """
    path = Path(path)
    state, src = _init_state(path)
    backbone, copied = _fit_init(model, path, state, src)
    model.load_state_dict(backbone, strict=False)
    return {"path": str(path), "skipped": sorted(set(state) - set(backbone)), "copied": copied,
            "source_config": src}
