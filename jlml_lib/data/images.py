"""Images to tensors: reading any image reference, transforms, and the DataLoader.

An ``image_ref`` is a plain file path, or a reference into CUHK03's MATLAB v7.3 file written
``<path/to/cuhk-03.mat>::<labeled|detected>/<pair>/<person>/<cell>`` (0-based indices). CUHK03
crops are read straight from the HDF5 file each time, with no conversion step and no hidden
cache: a crop is a few kB and h5py reads it in well under a millisecond.

Transforms (the paper, §4 "Implementation": "All person images were resized to 224×224"):

* test: resize to ``image_size`` (H, W) with bilinear interpolation, ``ToTensor``, and the
  ImageNet mean/std normalisation (the network is pre-trained on ImageNet, Table 4's chain).
* train: the same plus **random horizontal flip** (p = 0.5) and nothing else. The paper does
  not state its augmentation; a mirror image is the same person, so flipping is the one
  augmentation that cannot change an identity. Anything stronger is left to the training
  config, not hidden here.
"""
from __future__ import annotations

import os
import random
import threading
from typing import Any, Callable, Sequence

import h5py
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader
from torchvision import transforms as T

from jlml_lib.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAT_SEP = "::"

# per-process cache of open HDF5 files: a DataLoader worker opens its own handle after fork,
# because h5py handles must not be shared across processes
_h5_files: dict[tuple[int, str], Any] = {}
_h5_lock = threading.Lock()


def cuhk03_ref(mat_path: str, kind: str, pair: int, person: int, cell: int) -> str:
    return f"{mat_path}{MAT_SEP}{kind}/{pair}/{person}/{cell}"


def parse_cuhk03_ref(ref: str) -> tuple[str, str, int, int, int]:
    try:
        path, inner = ref.rsplit(MAT_SEP, 1)
        kind, pair, person, cell = inner.split("/")
        return path, kind, int(pair), int(person), int(cell)
    except ValueError:
        raise DataError(f"{ref!r} is not a CUHK03 image reference; expected "
                        "'<cuhk-03.mat>::<labeled|detected>/<pair>/<person>/<cell>'.") from None


def h5_file(path: str):

    key = (os.getpid(), path)
    with _h5_lock:
        fh = _h5_files.get(key)
        if fh is None:
            try:
                fh = h5py.File(path, "r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot open as a MATLAB v7.3 (HDF5) file ({exc}). "
                                "Expected CUHK03's cuhk-03.mat as distributed in cuhk03_release/; "
                                "a truncated download must be fetched again.") from None
            _h5_files[key] = fh
        return fh


def read_cuhk03_cell(path: str, kind: str, pair: int, person: int, cell: int) -> np.ndarray | None:
    """The H×W×3 uint8 crop of one cell, or None for an empty cell.

    MATLAB v7.3 stores arrays column-major, so h5py sees every array with its dimensions
    reversed: a persons×10 cell array reads as 10×persons, an H×W×3 image as 3×W×H. Empty
    cells are tiny non-image arrays (e.g. the dims ``[0, 0]``), so emptiness is ``ndim != 3``.
    """
    fh = h5_file(path)
    try:
        camp = fh[fh[kind][0][pair]]
        ds = fh[camp[cell, person]]
        if ds.ndim != 3:
            return None
        arr = ds[()]
    except DataError:
        raise
    except Exception as exc:  # h5py raises KeyError/ValueError/OSError/IndexError here
        raise DataError(f"{path}: cannot read {kind} pair {pair + 1}, person {person + 1}, cell "
                        f"{cell + 1} ({type(exc).__name__}: {exc}). The file is damaged or not "
                        "CUHK03's cuhk-03.mat; run `jlml data verify cuhk03 ROOT`.") from None
    if arr.dtype != np.uint8 or arr.shape[0] != 3:
        raise DataError(f"{path}: {kind} pair {pair + 1}, person {person + 1}, cell {cell + 1} "
                        f"holds a {arr.dtype} array of shape {arr.shape[::-1]}, expected an "
                        "H×W×3 uint8 image.")
    return np.ascontiguousarray(arr.transpose(2, 1, 0))


def open_image(ref: str) -> Image.Image:
    """Any image reference as an RGB PIL image; a clear DataError if it cannot be read."""
    if MAT_SEP in ref:
        path, kind, pair, person, cell = parse_cuhk03_ref(ref)
        arr = read_cuhk03_cell(path, kind, pair, person, cell)
        if arr is None:
            raise DataError(f"{path}: {kind} pair {pair + 1}, person {person + 1}, cell "
                            f"{cell + 1} is empty; the item list does not match this file.")
        return Image.fromarray(arr, "RGB")
    try:
        with Image.open(ref) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{ref}: image file not found. The dataset folder changed after it was "
                        "loaded; reload it or run `jlml data verify`.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{ref}: not a readable image ({type(exc).__name__}: {exc}). Replace the "
                        "file from the original archive; `jlml data verify NAME ROOT` lists "
                        "every unreadable image.") from None


def build_transform(image_size: tuple[int, int], train: bool) -> Callable:
    """Resize to ``image_size`` = (H, W), normalise; flip at random when ``train``."""
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ConfigError(f"image_size must be two positive integers (H, W), got {image_size!r}.")
    steps: list = [T.Resize((h, w), interpolation=T.InterpolationMode.BILINEAR)]
    if train:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


class ImageDataset:
    """A map-style dataset over ``(image_ref, pid, camid)`` items yielding (tensor, pid, camid)."""

    def __init__(self, items: Sequence[tuple[str, int, int]], transform: Callable | None = None):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        ref, pid, camid = self.items[index]
        img = open_image(ref)
        if self.transform is not None:
            img = self.transform(img)
        return img, pid, camid


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # distinct per worker, derived from the loader's seed
    np.random.seed(seed)
    random.seed(seed)


def build_loader(items: Sequence[tuple[str, int, int]], *, image_size: tuple[int, int],
                 train: bool, batch_size: int, workers: int = 0, seed: int = 0,
                 drop_last: bool | None = None, sampler: Any = None):
    """A ``DataLoader`` over ``items``: shuffled (seeded) for training unless a sampler is given."""
    if len(items) == 0:
        raise DataError("build_loader: the item list is empty; check the dataset split "
                        "(e.g. a query list of a dataset with no test set).")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(
        ImageDataset(items, build_transform(image_size, train)),
        batch_size=batch_size,
        shuffle=bool(train and sampler is None),
        sampler=sampler,
        num_workers=workers,
        drop_last=train if drop_last is None else drop_last,
        generator=gen,
        worker_init_fn=_seed_worker,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
