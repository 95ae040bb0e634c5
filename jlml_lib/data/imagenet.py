"""ImageNet ILSVRC2012 in the ``torchvision.datasets.ImageFolder`` layout (pre-training, Table 4).

``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``. ``train`` items are ``(path, class, 0)``
with classes numbered in sorted wnid order (ImageFolder's rule); ``extras["val"]`` holds the
validation items and ``extras["classes"]`` the wnids. There is no query/gallery.
"""
from __future__ import annotations

import os
from pathlib import Path

from jlml_lib.data.base import ReidDataset, find_dataset_dir, register, source_of
from jlml_lib.errors import DataError

EXTS = (".jpeg", ".jpg", ".png")


def read_split(folder: Path, classes: list[str] | None = None):
    if not folder.is_dir():
        raise DataError(f"imagenet: folder {str(folder)!r} is missing; expected train/<wnid>/ and "
                        "val/<wnid>/ (the ImageFolder layout; sort the validation images into "
                        "class folders first).")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = found if classes is None else classes
    if not found:
        raise DataError(f"imagenet: {folder} has no class folders.")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"imagenet: {folder} has class folders {unknown[:3]} not in train/.")
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for c in found:
        for name in sorted(os.listdir(folder / c)):
            if name.lower().endswith(EXTS):
                items.append((str(folder / c / name), index[c], 0))
    return items, classes


@register("imagenet", folders=("ILSVRC2012", "imagenet", "ImageNet", "ILSVRC"),
          signature=("train", "val"), default_scale=0.02)
def load(root: str | os.PathLike) -> ReidDataset:
    ddir = find_dataset_dir("imagenet", root)
    train, classes = read_split(ddir / "train")
    val, _ = read_split(ddir / "val", classes)
    return ReidDataset(name="imagenet", train=train, query=[], gallery=[],
                       num_train_pids=len(classes), split=None, num_splits=1,
                       protocol="imagenet", source=source_of("imagenet", ddir), root=str(ddir),
                       extras={"val": val, "classes": classes})
