"""Market-1501 loader (Zheng et al. 2015; paper Table 2 and Table 6).

Train: ``bounding_box_train/`` (751 ids, relabelled). Test: ``query/`` (3,368) against
``bounding_box_test/`` (19,732 incl. 2,798 ``0000`` distractors and 3,819 ``-1`` junk, pids
kept so the evaluation can apply the official junk rule). ``extras["gt_bbox"]`` lists the
hand-drawn boxes used for multi-query (the query feature becomes the mean over the ``gt_bbox``
images of the same pid and camera).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from jlml_lib.data.base import (Item, ReidDataset, find_dataset_dir, register, relabel,
                                source_of)
from jlml_lib.errors import DataError

NAME_RE = re.compile(r"^(-1|\d{4})_c([1-6])s(\d)_(\d{6})_(\d{2})\.jpg$")


def parse_name(name: str) -> tuple[int, int]:
    """``PPPP_cXsY_FFFFFF_BB.jpg`` -> (pid, 0-based camera); DataError if it breaks the grammar."""
    m = NAME_RE.match(name)
    if not m:
        raise DataError(f"{name!r} breaks the Market-1501 name grammar "
                        "'PPPP_cXsY_FFFFFF_BB.jpg' (pid 0000-1501 or -1, camera 1-6).")
    return int(m.group(1)), int(m.group(2)) - 1


def read_folder(folder: Path, *, allow_junk: bool = True) -> list[Item]:
    if not folder.is_dir():
        raise DataError(f"market1501: folder {str(folder)!r} is missing; a complete copy of "
                        "Market-1501-v15.09.15 has bounding_box_train/, bounding_box_test/, "
                        "query/ and gt_bbox/.")
    items = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jpg"):
            continue  # Thumbs.db and the like ship with the real archive
        try:
            pid, cam = parse_name(name)
        except DataError as exc:
            raise DataError(f"{folder / name}: {exc} Rename or remove the file; `jlml data "
                            "verify market1501 ROOT` lists every such file.") from None
        items.append((str(folder / name), pid, cam))
    if not items:
        raise DataError(f"market1501: {str(folder)!r} holds no .jpg images; expected the "
                        "Market-1501 crops named PPPP_cXsY_FFFFFF_BB.jpg.")
    return items


@register("market1501", folders=("Market-1501-v15.09.15", "Market-1501", "market1501"),
          signature=("bounding_box_train", "bounding_box_test", "query"), default_scale=0.1)
def load(root: str | os.PathLike) -> ReidDataset:
    ddir = find_dataset_dir("market1501", root)
    train_raw = read_folder(ddir / "bounding_box_train")
    bad = [r for r, p, _ in train_raw if p <= 0]
    if bad:
        raise DataError(f"market1501: {bad[0]} (and {len(bad) - 1} more) in bounding_box_train "
                        "has pid 0 or -1; training images must belong to real identities.")
    train, n = relabel(train_raw)
    gt = ddir / "gt_bbox"
    extras = {"gt_bbox": read_folder(gt) if gt.is_dir() else [],
              "dataset_dir": str(ddir)}
    return ReidDataset(
        name="market1501", train=train, query=read_folder(ddir / "query"),
        gallery=read_folder(ddir / "bounding_box_test"), num_train_pids=n, split=None,
        num_splits=1, protocol="market1501", source=source_of("market1501", ddir),
        root=str(ddir), extras=extras)
