"""VIPeR loader (Gray and Tao 2008; paper Table 2 and Table 7).

``VIPeR/cam_a/*.bmp`` and ``VIPeR/cam_b/*.bmp``: 632 people, one 128×48 image per camera;
the i-th sorted file of cam_a and of cam_b show the same person (person index i, pid i+1).
Ten random 316/316 splits (``split`` 0..9) are stored once in
``data_manifests/viper_splits.json``; test: cam_a probes (camid 0) against cam_b (camid 1).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from jlml_lib.data.base import (ReidDataset, check_split, find_dataset_dir, register, relabel,
                                source_of)
from jlml_lib.data.manifests import viper_splits
from jlml_lib.errors import DataError

NAME_RE = re.compile(r"^\d{3}_\d{1,3}\.bmp$")


def list_camera(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"viper: folder {str(folder)!r} is missing; VIPeR/ holds cam_a/ and "
                        "cam_b/ with one NNN_ANGLE.bmp image per person.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".bmp")
    bad = [p.name for p in files if not NAME_RE.match(p.name)]
    if bad:
        raise DataError(f"viper: {folder / bad[0]} breaks the name grammar 'NNN_ANGLE.bmp' "
                        f"({len(bad)} such files); rename or remove them.")
    return files


@register("viper", folders=("VIPeR", "viper", "VIPeR.v1.0"), signature=("cam_a", "cam_b"),
          default_scale=0.25)
def load(root: str | os.PathLike, *, split: int = 0) -> ReidDataset:
    ddir = find_dataset_dir("viper", root)
    a, b = list_camera(ddir / "cam_a"), list_camera(ddir / "cam_b")
    if len(a) != len(b):
        raise DataError(f"viper: {ddir / 'cam_a'} holds {len(a)} images but cam_b holds {len(b)}; "
                        "each person has one image per camera (632 + 632).")
    splits = viper_splits(len(a))
    split = check_split("viper", split, len(splits))
    train_ids, test_ids = splits[split]["train"], splits[split]["test"]
    if max(train_ids + test_ids) >= len(a):
        raise DataError(f"viper: the stored splits index {max(train_ids + test_ids) + 1} people "
                        f"but {ddir} holds {len(a)}.")
    train, n = relabel([(str(f[i]), i + 1, c) for i in train_ids for c, f in enumerate((a, b))])
    return ReidDataset(
        name="viper", train=train, query=[(str(a[i]), i + 1, 0) for i in test_ids],
        gallery=[(str(b[i]), i + 1, 1) for i in test_ids], num_train_pids=n, split=split,
        num_splits=len(splits), protocol="viper", source=source_of("viper", ddir),
        root=str(ddir), extras={"num_persons": len(a)})
