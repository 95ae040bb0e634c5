"""What a complete copy of each dataset holds (``data_manifests/<name>.json``) and its scaling.

The JSON files hold the real datasets' facts (design §4). :func:`plan` gives the counts of a
copy shrunk by ``scale``; the synthetic generator writes exactly those counts and
:func:`scaled_manifest` turns them into the manifest ``verify`` checks a synthetic copy
against. ``plan(name, 1.0)`` reproduces the real counts (tested), so structure-only copies at
scale 1 are checked against the untouched manifests.

The VIPeR splits (10 random 316/316 halves, §4 "Evaluation Protocol") are drawn once from
:data:`VIPER_SPLIT_SEED` and stored in ``data_manifests/viper_splits.json`` so every user
evaluates on the same people.
"""
from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.paths import REPO_ROOT

MANIFEST_DIR = REPO_ROOT / "data_manifests"
VIPER_SPLIT_SEED = 20170819  # IJCAI 2017's opening day; any fixed value would do
VIPER_NUM_SPLITS = 10


def _r(x: float) -> int:
    """Round half up (Python's round() rounds half to even, which is harder to explain)."""
    return int(math.floor(x + 0.5))


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    path = MANIFEST_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"no manifest for {name!r}: {path} is missing. The data_manifests/ folder "
                          "ships with the project; restore it from git.")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); restore it from git.") from None


def load_manifest(name: str) -> dict[str, Any]:
    """The manifest of the real dataset (a fresh copy, safe to modify)."""
    return copy.deepcopy(_load(name))


# ---------------------------------------------------------------- scaled counts

def plan(name: str, scale: float) -> dict[str, Any]:
    """Identity and image counts of a copy shrunk by ``scale`` (1.0 = the real dataset).

    Identities shrink by ``scale`` (at least 2 per part so every protocol stays defined) and
    images follow the identities, so images per identity stay those of the real dataset.
    """
    if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
        raise ConfigError(f"scale must be a number in (0, 1], got {scale!r}.")
    s = float(scale)
    if name == "market1501":
        tr, te = max(2, _r(751 * s)), max(2, _r(750 * s))
        query = min(max(_r(3368 * te / 750), te), 6 * te)
        return {"train_ids": tr, "test_ids": te, "train": _r(12936 * tr / 751), "query": query,
                "gallery_good": _r(13115 * te / 750), "junk": max(1, _r(3819 * s)),
                "distractors": max(1, _r(2798 * s)),
                "gt_bbox": max(_r(25259 * (tr + te) / 1501), query + tr)}
    if name == "cuhk03":
        persons = [max(2, _r(p * s)) for p in (843, 440, 77, 58, 49)]
        m = _load("cuhk03")["mat_files"]["cuhk-03.mat"]["cuhk03"]
        images = {}
        for kind in ("labeled", "detected"):
            per = [min(max(_r(n * q / p), 2 * q), 10 * q) for n, q, p in
                   zip(m["images"][kind]["per_pair"], persons, m["persons_per_pair"])]
            images[kind] = per
        total = sum(persons)
        test_ids = min(max(2, _r(100 * s)), total // 2)
        new_train = min(max(1, _r(767 * total / 1467)), total - 1)
        return {"persons_per_pair": persons, "images": images, "testsets": 20,
                "test_ids": test_ids, "new_train_ids": new_train, "new_test_ids": total - new_train}
    if name == "viper":
        half = max(2, _r(316 * s))
        return {"persons": 2 * half, "train_ids": half, "test_ids": half}
    if name == "grid":
        ids = max(2, 2 * _r(125 * s))
        return {"ids": ids, "train_ids": ids // 2, "distractors": max(1, _r(775 * s)), "folds": 10}
    if name == "imagenet":
        # for ImageNet `scale` shrinks the classes AND the images per class (so the total by
        # scale**2): 1,281 images per class would dominate generation time for no teaching gain
        classes = max(2, _r(1000 * s))
        return {"classes": classes, "train": max(2 * classes, _r(1281167 * s * classes / 1000)),
                "val": max(2 * classes, _r(50000 * s * classes / 1000))}
    raise ConfigError(f"no count plan for {name!r}; expected market1501, cuhk03, viper, grid "
                      "or imagenet.")


def scaled_manifest(name: str, scale: float) -> dict[str, Any]:
    """The manifest a synthetic copy made at ``scale`` must satisfy (counts replaced)."""
    man = load_manifest(name)
    if scale == 1:
        return man
    p = plan(name, scale)
    man["scale"] = scale
    if name == "market1501":
        f = man["image_folders"]
        f["bounding_box_train"].update(count=p["train"], ids=p["train_ids"])
        f["bounding_box_test"].update(count=p["gallery_good"] + p["junk"] + p["distractors"],
                                      ids=p["test_ids"],
                                      pid_counts={"-1": p["junk"], "0": p["distractors"]})
        f["query"].update(count=p["query"], ids=p["test_ids"])
        f["gt_bbox"].update(count=p["gt_bbox"])
    elif name == "cuhk03":
        c = man["mat_files"]["cuhk-03.mat"]["cuhk03"]
        c["persons_per_pair"] = p["persons_per_pair"]
        for kind in ("labeled", "detected"):
            c["images"][kind] = {"total": sum(p["images"][kind]), "per_pair": p["images"][kind]}
        c["test_ids"] = p["test_ids"]
        for kind in ("labeled", "detected"):
            cfg = man["mat_files"][f"cuhk03_new_protocol_config_{kind}.mat"]
            cfg["counts"] = {"filelist": sum(p["images"][kind]), "query_idx": 2 * p["new_test_ids"]}
            cfg["ids"] = {"train": p["new_train_ids"], "test": p["new_test_ids"]}
            cfg.pop("sha256", None)
    elif name == "viper":
        for cam in ("cam_a", "cam_b"):
            man["image_folders"][cam]["count"] = p["persons"]
        man["splits"].update(train_ids=p["train_ids"], test_ids=p["test_ids"])
    elif name == "grid":
        man["image_folders"]["probe"].update(count=p["ids"], ids=p["ids"])
        man["image_folders"]["gallery"].update(count=p["ids"] + p["distractors"], ids=p["ids"],
                                               pid_counts={"0": p["distractors"]})
        man["mat_files"]["features_and_partitions.mat"]["grid"].update(
            train_ids=p["train_ids"], ids=p["ids"])
    elif name == "imagenet":
        for part in ("train", "val"):
            man["class_folders"][part].update(classes=p["classes"], count=p[part])
    return man


def synthetic_manifest(name: str, scale: float, structure_only: bool) -> dict[str, Any]:
    """As :func:`scaled_manifest`, minus facts a synthetic copy cannot share with the real one
    (checksums of fixed files; image sizes of structure-only copies)."""
    man = scaled_manifest(name, scale)
    for spec in man.get("mat_files", {}).values():
        spec.pop("sha256", None)
        # the synthetic new-protocol split draws whole people, so its train/gallery image
        # counts only match the real ones in expectation; files, ids and queries are exact
        for k in ("train_idx", "gallery_idx"):
            spec.get("counts", {}).pop(k, None)
    if structure_only:
        for spec in man.get("image_folders", {}).values():
            spec.pop("size", None)
    return man


# ---------------------------------------------------------------- VIPeR splits

def make_viper_splits(num_persons: int, *, seed: int = VIPER_SPLIT_SEED,
                      num_splits: int = VIPER_NUM_SPLITS) -> list[dict[str, list[int]]]:
    """``num_splits`` random halves of the people 0..num_persons-1 (sorted-file order)."""
    if num_persons < 4 or num_persons % 2:
        raise ConfigError(f"VIPeR splits need an even number of people >= 4, got {num_persons}.")
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(num_splits):
        perm = rng.permutation(num_persons)
        half = num_persons // 2
        splits.append({"train": sorted(int(i) for i in perm[:half]),
                       "test": sorted(int(i) for i in perm[half:])})
    return splits


def viper_splits(num_persons: int) -> list[dict[str, list[int]]]:
    """The stored splits for the real 632 people; the same draw for other (synthetic) sizes."""
    if num_persons != 632:
        return make_viper_splits(num_persons)
    path = MANIFEST_DIR / "viper_splits.json"
    try:
        data = json.loads(path.read_text())
        splits = data["splits"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read the stored VIPeR splits ({exc}); restore the file "
                        "from git.") from None
    return splits
