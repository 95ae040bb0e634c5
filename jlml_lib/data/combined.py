"""``cuhk03+market1501``: the pre-training union for VIPeR and GRID (paper §3, "Implementation":
"ImageNet → CUHK03+Market → VIPeR/GRID", "pre-trained JLML on CUHK03+Market (whole datasets)").

Training only: CUHK03 people take pids 0..K-1 and Market-1501 people K.., so the two sets of
ids are disjoint; cameras are renumbered too (CUHK03 pair p view v -> 2(p-1)+v-1, i.e. 0..9;
Market cameras -> 10..15). ``whole=True`` (the paper's "whole datasets", default) uses every
image of a real identity (Market train + query + test, minus junk and distractors; all CUHK03
people); ``whole=False`` only the training parts (Market train, CUHK03 classic split 0 train).
``cuhk03_images``: ``"labeled"``, ``"detected"`` or ``"both"`` (default: both, the whole set).
"""
from __future__ import annotations

import os
from pathlib import Path

from jlml_lib.data import cuhk03, market1501
from jlml_lib.data.base import ReidDataset, find_dataset_dir, register, source_of
from jlml_lib.data.images import cuhk03_ref, parse_cuhk03_ref
from jlml_lib.errors import ConfigError


COMBINED = "cuhk03+market1501"
COMBINED_PARTS = ("cuhk03", "market1501")


@register(COMBINED, folders=(), signature=(), default_scale=0.1)
def load(root: str | os.PathLike | None = None, *, cuhk03_images: str = "both",
         whole: bool = True, cuhk03_root: str | os.PathLike | None = None,
         market1501_root: str | os.PathLike | None = None) -> ReidDataset:
    if cuhk03_images not in ("labeled", "detected", "both"):
        raise ConfigError(f"cuhk03+market1501: cuhk03_images must be labeled, detected or both, "
                          f"got {cuhk03_images!r}.")
    if root is None and (cuhk03_root is None or market1501_root is None):
        raise ConfigError("cuhk03+market1501: pass a root holding both datasets, or "
                          "cuhk03_root= and market1501_root=.")
    cdir = find_dataset_dir("cuhk03", cuhk03_root or root)
    mdir = find_dataset_dir("market1501", market1501_root or root)
    kinds = ("labeled", "detected") if cuhk03_images == "both" else (cuhk03_images,)
    items, pid_map = [], {}

    def add(ref: str, key: tuple, cam: int) -> None:
        items.append((ref, pid_map.setdefault(key, len(pid_map)), cam))

    mat = cuhk03.mat_path(cdir)
    for kind in kinds:
        if whole:  # the classic split only partitions people; the union takes all of them
            for p, q, c in cuhk03.scan(mat, kind)["cells"]:
                add(cuhk03_ref(str(mat), kind, p, q, c), ("c", p, q), 2 * p + int(c >= 5))
        else:
            for ref, pid, cam in cuhk03.load(cdir, images=kind, protocol="classic", split=0).train:
                add(ref, ("c", pid), 2 * parse_cuhk03_ref(ref)[2] + cam)
    n_cuhk = len(pid_map)
    m = market1501.load(mdir)
    market_items = market1501.read_folder(Path(mdir) / "bounding_box_train")  # original pids
    if whole:
        market_items += [it for it in m.query + m.gallery if it[1] > 0]
    for ref, pid, cam in market_items:
        add(ref, ("m", pid), 10 + cam)
    sources = {source_of("cuhk03", cdir), source_of("market1501", mdir)}
    return ReidDataset(
        name="cuhk03+market1501", train=items, query=[], gallery=[], num_train_pids=len(pid_map),
        split=None, num_splits=1, protocol="cuhk03+market1501",
        source="synthetic" if "synthetic" in sources else "real",
        root=str(Path(root)) if root is not None else str(cdir.parent),
        extras={"cuhk03_ids": n_cuhk, "market1501_ids": len(pid_map) - n_cuhk,
                "cuhk03_images": cuhk03_images, "whole": whole,
                "cuhk03_root": str(cdir), "market1501_root": str(mdir),
                "sources": sorted(sources),
                "components": [{"dataset": "cuhk03", "source": source_of("cuhk03", cdir), "root": str(cdir)},
                               {"dataset": "market1501", "source": source_of("market1501", mdir),
                                "root": str(mdir)}]})

