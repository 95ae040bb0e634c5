"""Use a trained model: load it with its preprocessing, embed any images (paper §2.3).

    from jlml_lib.inference import load_model
    tm = load_model("runs/05_market")            # a run folder, or a checkpoint file
    feats = tm.features(["a.jpg", "b.jpg"])     # N × 1,024 joint features, as the run evaluates

:func:`load_model` rebuilds the model from a checkpoint this project wrote
(:func:`jlml_lib.engine.checkpoint.load_model`) and pairs it with the test-time transform the run
used (:func:`jlml_lib.data.build_transform`: resize to the run's image size, ImageNet
normalisation). :func:`image_features` takes paths, PIL images, numpy ``H×W×3`` uint8 arrays or
tensors and runs them through :func:`jlml_lib.features.extract_features`, the training evaluation's
own extractor — so a feature here is the feature a run's ``metrics.json`` was computed from: raw
by default (the paper's L2 distance on the unnormalised joint feature), L2-normalised when the run
set ``eval_normalize`` (or when asked), flip-averaged when the run set ``eval_flip``.

A tensor is taken as already preprocessed (``3×H×W`` or ``N×3×H×W``, normalised, at the run's image
size), as torchreid's ``FeatureExtractor`` does; everything else goes through ``preprocess``.
``amp="bf16"`` runs the convolutions under bfloat16 autocast (CPU or CUDA); features come back in
float32 and stay close to fp32 (tests/test_inference.py), not equal.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from jlml_lib.engine.checkpoint import load_model as _load_checkpoint_model
from jlml_lib.engine.config import TrainConfig
from jlml_lib.engine.evaluate import _Normalised  # the training evaluation's normalisation (one owner)
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.features import eval_batch, extract_features
from jlml_lib.model import FEATURE_KINDS
from jlml_lib.paths import RunDir

__all__ = ["AMP_MODES", "IMAGE_SUFFIXES", "TrainedModel", "resolve_checkpoint", "load_model", "image_features",
           "amp_context", "file_sha256", "list_images"]

#: test-time precision: fp32 ("off") or bfloat16 autocast ("bf16", beyond the paper)
AMP_MODES = ("off", "bf16")
#: what a folder of images given to ``jlml embed`` / ``jlml search`` may hold
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def resolve_checkpoint(path_or_run: str | os.PathLike) -> Path:
    """The checkpoint of ``path_or_run``: the file itself, or a run folder's ``checkpoints/final.pt``
    (its first seed's / split's for a multi-seed or multi-split run; ``last.pt`` before the run ended)."""
    path = Path(path_or_run).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        run = RunDir(path).first_run()
        for ckpt in (run.final, run.last):
            if ckpt.is_file():
                return ckpt
        raise ConfigError(f"{path}: a folder without a trained model (looked for {run.final} and {run.last}). "
                          "Give a run folder of `jlml train` or the path of a .pt checkpoint.")
    raise ConfigError(f"{path}: no such file or folder. Give a run folder of `jlml train` (e.g. runs/05_market) "
                      "or a checkpoint (RUN/checkpoints/final.pt).")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the model's identity in the feature cache and in records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def amp_context(amp: str, device: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bfloat16 for ``amp="bf16"``, nothing for ``"off"``."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp={amp!r}: expected one of {AMP_MODES} (bf16: bfloat16 autocast at test time).")
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@dataclass
class TrainedModel:
    """A trained JLML in eval mode with what a run evaluates it with.

    ``preprocess`` turns a PIL image into the network's input (resize to ``config.image_size``,
    ImageNet normalisation); ``normalize`` / ``flip`` are the run's ``eval_normalize`` / ``eval_flip``.
    """

    model: nn.Module
    config: TrainConfig
    preprocess: Callable[[Any], torch.Tensor]
    checkpoint: Path
    device: torch.device

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image_size

    @property
    def normalize(self) -> bool:
        return bool(self.config.eval_normalize)

    @property
    def flip(self) -> bool:
        return bool(self.config.eval_flip)

    def net(self, normalize: bool | None = None) -> nn.Module:
        """The module whose ``.features`` the evaluation calls: normalised ones when asked or the run did."""
        return _Normalised(self.model) if (self.normalize if normalize is None else normalize) else self.model

    def features(self, images: Any, **options: Any) -> torch.Tensor:
        """:func:`image_features` of this model."""
        return image_features(self, images, **options)


def load_model(path_or_run: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a run folder or checkpoint, in eval mode, with its preprocessing.

    The architecture comes from the checkpoint's own config (``model.ARCH_KEYS``), so every
    ablation variant loads; the ID classifiers are kept (they are part of the file) but unused.
    """
    from jlml_lib.data import build_transform  # lazy: the data package pulls in PIL/h5py

    ckpt = resolve_checkpoint(path_or_run)
    dev = torch.device(device)
    model, cfg = _load_checkpoint_model(ckpt, dev)
    return TrainedModel(model=model.eval(), config=cfg, preprocess=build_transform(cfg.image_size, train=False),
                        checkpoint=ckpt, device=dev)


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their images (:data:`IMAGE_SUFFIXES`, sorted, recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: a folder with no images (looked for {', '.join(IMAGE_SUFFIXES)}).")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such image file or folder.")
    return out


# ---------------------------------------------------------------- images of any kind -> tensors
def _as_items(images: Any) -> list[Any]:
    """One image or a sequence of them -> a list of single images (a 4-D batch is split)."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if hasattr(images, "convert") and hasattr(images, "size"):  # one PIL image
        return [images]
    try:
        return list(images)
    except TypeError:
        raise DataError(f"images: expected paths, PIL images, numpy arrays or tensors, got {type(images).__name__}") \
            from None


class _Images(torch.utils.data.Dataset):
    """(tensor, -1, -1) per image: the (images, pids, camids) batches extract_features reads."""

    def __init__(self, items: Sequence[Any], preprocess: Callable, image_size: tuple[int, int]) -> None:
        self.items, self.preprocess, self.size = items, preprocess, tuple(image_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.tensor(self.items[i], i), -1, -1

    def tensor(self, item: Any, i: int) -> torch.Tensor:
        from PIL import Image

        from jlml_lib.data import open_image

        if isinstance(item, torch.Tensor):
            if item.dim() != 3 or item.shape[0] != 3 or tuple(item.shape[1:]) != self.size:
                raise DataError(f"image {i}: a tensor must be a preprocessed 3×{self.size[0]}×{self.size[1]} image "
                                f"(the model's input), got shape {tuple(item.shape)}; pass a PIL image or a path "
                                "to have it resized and normalised")
            return item.float()
        if isinstance(item, (str, os.PathLike)):
            return self.preprocess(open_image(str(item)))
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
                raise DataError(f"image {i}: a numpy image must be H×W×3 (or H×W) uint8, got {item.dtype} "
                                f"{item.shape}")
            return self.preprocess(Image.fromarray(item).convert("RGB"))
        if isinstance(item, Image.Image):
            return self.preprocess(item.convert("RGB"))
        raise DataError(f"image {i}: expected a path, PIL image, numpy array or tensor, got {type(item).__name__}")


def image_features(
    tm: TrainedModel,
    images: Any,
    *,
    kind: str = "joint",
    normalize: bool | None = None,
    flip: bool | None = None,
    batch_size: int | None = None,
    amp: str = "off",
    progress: bool = False,
    workers: int = 0,
) -> torch.Tensor:
    """Re-id features (float32 CPU tensor ``N × D``, input order) of ``images``.

    ``images``: one or many paths, PIL images, ``H×W×3`` uint8 arrays, or preprocessed tensors.
    ``kind``: ``joint`` (1,024-d, §2.3), ``global`` or ``local`` (512-d each, Table 9).
    ``normalize`` / ``flip``: ``None`` = as the run evaluated (``eval_normalize`` / ``eval_flip``).
    ``batch_size``: ``None`` = the run's evaluation batch on this device. ``amp``: :data:`AMP_MODES`.
    """
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"kind={kind!r}: expected one of {FEATURE_KINDS}")
    items = _as_items(images)
    if not items:
        raise DataError("images: nothing to embed (an empty list)")
    loader = torch.utils.data.DataLoader(_Images(items, tm.preprocess, tm.image_size),
                                         batch_size=eval_batch(batch_size or tm.config.eval_batch_size, tm.device),
                                         shuffle=False, num_workers=workers)
    if progress:
        from tqdm import tqdm  # text bar: tqdm.auto wants ipywidgets inside a notebook and warns without them

        loader = tqdm(loader, total=len(loader), unit="batch", desc="embedding")
    with amp_context(amp, tm.device):
        feats, _, _ = extract_features(tm.net(normalize), loader, tm.device, kind=kind,
                                       flip=tm.flip if flip is None else bool(flip))
    return feats
