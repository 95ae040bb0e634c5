"""CUHK03 loader, read straight from ``cuhk03_release/cuhk-03.mat`` (Li et al. 2014; Table 5).

The file is MATLAB v7.3 (HDF5): ``labeled``/``detected`` are 5 camera pairs, each a
persons×10 cell array (cells 1–5: view 1, 6–10: view 2; empty cells where a person has fewer
images), ``testsets`` 20 arrays of 100 ``[pair, person]`` rows (1-based).

* ``protocol="classic"`` (``split`` 0..19): the 100 people of ``testsets{split}`` are the test
  set, every other person trains (1,367 ids). ``query`` holds all their view-1 images (camid 0)
  and ``gallery`` all view-2 images (camid 1); the single-shot draw (one gallery image per
  person, 10 draws) is done by the evaluation. ``extras["query_pairs"]``/``["gallery_pairs"]``
  give each item's camera pair (1..5).
* ``protocol="new"``: the 767/700 split of Zhong et al. (CVPR 2017) from
  ``cuhk03_new_protocol_config_{labeled,detected}.mat`` (MATLAB v5), looked for in the dataset
  folder and the folder above it, or passed as ``config=``.

Pids are global person numbers 1..1,467 (pair by pair, as the config's ``labels``); cameras
are 0/1 (view 1/2), the convention of both protocols.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import loadmat

from jlml_lib.data.base import (ReidDataset, check_split, find_dataset_dir, register, relabel,
                                source_of)
from jlml_lib.data.images import cuhk03_ref, h5_file
from jlml_lib.errors import ConfigError, DataError

MAT = "cuhk-03.mat"
KINDS = ("labeled", "detected")
CFG_RE = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$")


def mat_path(ddir: Path) -> Path:
    return ddir / MAT


def _fail(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}. Expected CUHK03's cuhk-03.mat (MATLAB v7.3) as distributed "
                     "in cuhk03_release/; run `jlml data verify cuhk03 ROOT` for every problem.")


def scan(path: Path, kind: str) -> dict[str, Any]:
    """Non-empty cells of ``kind``: persons per pair and a list of (pair, person, cell) 0-based."""
    fh = h5_file(str(path))
    try:
        if kind not in fh:
            raise _fail(path, f"field {kind!r} is missing (fields: {sorted(fh.keys())})")
        pairs = fh[kind][0]
        persons, cells = [], []
        for p, ref in enumerate(pairs):
            camp = fh[ref]
            if camp.ndim != 2 or camp.shape[0] != 10:
                raise _fail(path, f"{kind} pair {p + 1} has shape {camp.shape[::-1]}, expected "
                            "persons×10 cells")
            refs = camp[()]
            persons.append(refs.shape[1])
            for person in range(refs.shape[1]):
                for cell in range(10):
                    if fh[refs[cell, person]].ndim == 3:   # empty cells are tiny 1-D arrays
                        cells.append((p, person, cell))
    except DataError:
        raise
    except Exception as exc:
        raise _fail(path, f"cannot read {kind!r} ({type(exc).__name__}: {exc})") from None
    return {"persons": persons, "cells": cells}


def testsets(path: Path) -> list[np.ndarray]:
    fh = h5_file(str(path))
    try:
        return [np.asarray(fh[r][()]).T.astype(int) for r in fh["testsets"][0]]
    except Exception as exc:
        raise _fail(path, f"cannot read 'testsets' ({type(exc).__name__}: {exc})") from None


def find_config(ddir: Path, kind: str, config: str | os.PathLike | None) -> Path:
    name = f"cuhk03_new_protocol_config_{kind}.mat"
    if config is not None:
        cfg = Path(config).expanduser()
        if not cfg.is_file():
            raise DataError(f"cuhk03: the new-protocol config {str(cfg)!r} does not exist; "
                            f"expected {name}.")
        return cfg
    for folder in (ddir, ddir.parent):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"cuhk03: protocol='new' needs {name} (Zhong et al., CVPR 2017; "
                    "zhunzhong07/person-re-ranking, evaluation/data/CUHK03/). Put it in "
                    f"{str(ddir)!r} or {str(ddir.parent)!r}, or pass config=PATH.")


def read_config(cfg: Path) -> dict[str, np.ndarray]:
    """The new-protocol config: filelist, labels, camId and 1-based index lists."""

    try:
        m = loadmat(str(cfg))
    except Exception as exc:
        raise DataError(f"{cfg}: cannot read as a MATLAB v5 file ({type(exc).__name__}: {exc}). "
                        "Fetch the config file again.") from None
    need = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")
    missing = [k for k in need if k not in m]
    if missing:
        raise DataError(f"{cfg}: fields {missing} are missing; expected {list(need)}.")
    out = {k: np.asarray(m[k]).ravel() for k in need if k != "filelist"}
    out["filelist"] = np.array([str(np.asarray(x).ravel()[0]) for x in m["filelist"].ravel()])
    for k in ("train_idx", "query_idx", "gallery_idx"):
        idx = out[k].astype(int)
        if idx.min() < 1 or idx.max() > len(out["filelist"]):
            raise DataError(f"{cfg}: {k} holds indices outside 1..{len(out['filelist'])}.")
        out[k] = idx
    return out


def _global_pid(offsets: list[int], pair: int, person: int) -> int:
    return offsets[pair] + person + 1


def _hold_out(items: list, n: int, split: int) -> tuple[list, list[int]]:
    """``items`` without the images of ``n`` people drawn with a seed fixed by the split."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"cuhk03: val_people must be a non-negative integer, got {n!r}.")
    if n == 0:
        return items, []
    pids = sorted({p for _, p, _ in items})
    if n >= len(pids):
        raise ConfigError(f"cuhk03: val_people={n} would leave no training person ({len(pids)} non-test people).")
    held = sorted(np.random.default_rng(1000 + split).choice(pids, size=n, replace=False).tolist())
    keep = set(pids) - set(held)
    return [it for it in items if it[1] in keep], held


@register("cuhk03", folders=("cuhk03_release", "cuhk03", "CUHK03"), signature=(MAT,),
          default_scale=0.1)
def load(root: str | os.PathLike, *, images: str = "labeled", protocol: str = "classic",
         split: int = 0, config: str | os.PathLike | None = None, val_people: int = 0) -> ReidDataset:
    if images not in KINDS:
        raise ConfigError(f"cuhk03: images must be 'labeled' or 'detected', got {images!r}.")
    if protocol not in ("classic", "new"):
        raise ConfigError(f"cuhk03: protocol must be 'classic' or 'new', got {protocol!r}.")
    ddir = find_dataset_dir("cuhk03", root)
    path = mat_path(ddir)
    sc = scan(path, images)
    offsets = list(np.concatenate([[0], np.cumsum(sc["persons"])[:-1]]).astype(int))
    ref = lambda p, q, c: cuhk03_ref(str(path), images, p, q, c)  # noqa: E731
    common = dict(name="cuhk03", source=source_of("cuhk03", ddir), root=str(ddir))
    if protocol == "classic":
        sets = testsets(path)
        split = check_split("cuhk03", split, len(sets))
        test = {(int(p) - 1, int(q) - 1) for p, q in sets[split]}
        for p, q in test:
            if not (0 <= p < len(sc["persons"]) and 0 <= q < sc["persons"][p]):
                raise _fail(path, f"testsets{{{split + 1}}} names pair {p + 1} person {q + 1}, "
                            "which does not exist")
        train_raw, query, gallery, qp, gp = [], [], [], [], []
        for p, q, c in sc["cells"]:
            pid, view = _global_pid(offsets, p, q), int(c >= 5)
            if (p, q) not in test:
                train_raw.append((ref(p, q, c), pid, view))
            elif view == 0:
                query.append((ref(p, q, c), pid, 0))
                qp.append(p + 1)
            else:
                gallery.append((ref(p, q, c), pid, 1))
                gp.append(p + 1)
        # Table 2 trains on all 1,367 non-test people; §4's text says 1,260 train / 100 validation:
        # val_people=N holds N of them out (drawn from the split's seed), kept in extras["val_people"]
        train_raw, held = _hold_out(train_raw, val_people, split)
        train, n = relabel(train_raw)
        return ReidDataset(train=train, query=query, gallery=gallery, num_train_pids=n,
                           split=split, num_splits=len(sets), protocol="cuhk03-classic",
                           extras={"images": images, "query_pairs": qp, "gallery_pairs": gp,
                                   "mat": str(path), "val_people": held}, **common)
    cfg_path = find_config(ddir, images, config)
    cfg = read_config(cfg_path)
    nonempty = set(sc["cells"])
    items = []
    for name, label, cam in zip(cfg["filelist"], cfg["labels"], cfg["camId"]):
        m = CFG_RE.match(name)
        if not m:
            raise DataError(f"{cfg_path}: filelist entry {name!r} breaks the grammar "
                            "'{pair}_{person:03d}_{view}_{img:02d}.png'.")
        p, q, c = int(m.group(1)) - 1, int(m.group(2)) - 1, int(m.group(4)) - 1
        if (p, q, c) not in nonempty:
            raise DataError(f"{cfg_path}: {name!r} names an empty or missing cell of {path} "
                            f"({images}); the config does not belong to this cuhk-03.mat.")
        items.append((ref(p, q, c), int(label), int(cam) - 1))
    pick = lambda idx: [items[i - 1] for i in idx]  # noqa: E731
    train, n = relabel(pick(cfg["train_idx"]))
    return ReidDataset(train=train, query=pick(cfg["query_idx"]),
                       gallery=pick(cfg["gallery_idx"]), num_train_pids=n, split=None,
                       num_splits=1, protocol="cuhk03-new",
                       extras={"images": images, "config": str(cfg_path), "mat": str(path)},
                       **common)
