"""GRID loader (Loy et al. 2009; paper Table 2 and Table 8).

``underground_reid/probe/*.jpeg`` (250 people) and ``gallery/*.jpeg`` (their 250 matches plus
775 ``0000`` distractors); names begin ``PPPP_C_`` (pid, camera 1–8).
``features_and_partitions.mat`` (MATLAB v5) holds ``trainIdxAll``: the 10 benchmark folds,
each a struct whose third field (``personIdx``) lists the 125 training pids. Test: the other
125 probes against their matches **plus all 775 distractors** in every fold.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from jlml_lib.data.base import (ReidDataset, check_split, find_dataset_dir, register, relabel,
                                source_of)
from jlml_lib.errors import DataError

NAME_RE = re.compile(r"^(\d{4})_([1-8])_.+\.jpeg$")
MAT = "features_and_partitions.mat"


def read_folder(folder: Path) -> list[tuple[str, int, int]]:
    if not folder.is_dir():
        raise DataError(f"grid: folder {str(folder)!r} is missing; underground_reid/ holds probe/, "
                        f"gallery/ and {MAT}.")
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jpeg"):
            continue
        m = NAME_RE.match(name)
        if not m:
            raise DataError(f"grid: {folder / name} breaks the name grammar 'PPPP_C_....jpeg' "
                            "(pid, camera 1-8); rename or remove it.")
        out.append((str(folder / name), int(m.group(1)), int(m.group(2)) - 1))
    return out


def read_folds(path: Path) -> list[list[int]]:
    """The 10 folds' training pids from ``trainIdxAll`` (third struct field, ``personIdx``)."""

    if not path.is_file():
        raise DataError(f"grid: {path} is missing; it ships with GRID (underground_reid.zip) and "
                        "holds the 10 benchmark folds.")
    try:
        m = loadmat(str(path))
        cells = m["trainIdxAll"].ravel()
        folds = []
        for cell in cells:
            rec = np.asarray(cell).ravel()[0]
            names = rec.dtype.names or ()
            field = rec["personIdx"] if "personIdx" in names else rec[2]
            folds.append([int(v) for v in np.asarray(field).ravel()])
    except KeyError:
        raise DataError(f"{path}: the field 'trainIdxAll' is missing; expected GRID's "
                        f"{MAT} with the 10 folds.") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read the folds ({type(exc).__name__}: {exc}); expected "
                        "a MATLAB v5 file whose trainIdxAll is a 1×10 cell of structs.") from None
    return folds


@register("grid", folders=("underground_reid", "GRID", "grid"),
          signature=("probe", "gallery"), default_scale=0.2)
def load(root: str | os.PathLike, *, split: int = 0) -> ReidDataset:
    ddir = find_dataset_dir("grid", root)
    probe, gallery = read_folder(ddir / "probe"), read_folder(ddir / "gallery")
    folds = read_folds(ddir / MAT)
    split = check_split("grid", split, len(folds))
    train_ids = set(folds[split])
    known = {p for _, p, _ in probe}
    if not train_ids <= known:
        raise DataError(f"{ddir / MAT}: fold {split} lists pids {sorted(train_ids - known)[:5]} "
                        "that have no probe image.")
    train_raw = [it for it in probe + gallery if it[1] in train_ids]
    train, n = relabel(train_raw)
    return ReidDataset(
        name="grid", train=train, query=[it for it in probe if it[1] not in train_ids],
        gallery=[it for it in gallery if it[1] not in train_ids], num_train_pids=n,
        split=split, num_splits=len(folds), protocol="grid", source=source_of("grid", ddir),
        root=str(ddir), extras={"distractors": sum(1 for it in gallery if it[1] == 0)})
