"""Dataset summaries for notebook 01: Table 2 regenerated from loaded data, camera mosaics.

Table 2 columns (paper): Cams, IDs, Train IDs, Test IDs, Labelled, Detected. Counting rules:
VIPeR/GRID images are hand-cropped, so they count as "Labelled" (GRID including the 775
distractors, 1,275 in all); CUHK03 counts both image sets of ``cuhk-03.mat`` and its cameras
as 2 × camera pairs (the paper's Table 2 says 6; the release has 5 pairs of 2 views);
Market-1501's "Detected" is bounding_box_train + bounding_box_test (32,668 = 12,936 +
19,732, junk and distractors included), as the paper's row implies.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jlml_lib.data.base import ReidDataset, load_dataset
from jlml_lib.data.images import open_image
from jlml_lib.paths import PAPER, REPO_ROOT
from jlml_lib.results.records import STATS_KEYS, write_dataset_stats

PAPER_TABLE2 = REPO_ROOT / PAPER / "table2.csv"
BANNER = ("SYNTHETIC DATA: {names} {verb} procedurally generated stand-ins written in the "
          "original formats. Every number below describes the synthetic copies, not the real "
          "datasets; pass the *_root parameters to use real data.")


def _ids(items) -> set[int]:
    return {p for _, p, _ in items if p > 0}


def table2_row(name: str, root: str | Path) -> dict[str, Any]:
    """Our Table 2 row for ``name`` computed from the data at ``root``."""
    if name == "cuhk03":
        lab = load_dataset("cuhk03", root, images="labeled")
        det = load_dataset("cuhk03", root, images="detected")
        n_lab = len(lab.train) + len(lab.query) + len(lab.gallery)
        n_det = len(det.train) + len(det.query) + len(det.gallery)
        pairs = len(set(lab.extras["query_pairs"]) | set(lab.extras["gallery_pairs"])
                    | {int(r.split("::")[1].split("/")[1]) + 1 for r, _, _ in lab.train})
        test = len(_ids(lab.query) | _ids(lab.gallery))
        row = dict(cams=2 * pairs, ids=lab.num_train_pids + test, train_ids=lab.num_train_pids,
                   test_ids=test, labelled=n_lab, detected=n_det, source=lab.source)
    else:
        ds: ReidDataset = load_dataset(name, root)
        cams = len({c for part in (ds.train, ds.query, ds.gallery) for _, _, c in part})
        test = len(_ids(ds.query) | _ids(ds.gallery))
        n_all = len(ds.train) + len(ds.query) + len(ds.gallery)
        if name == "market1501":
            row = dict(cams=cams, ids=ds.num_train_pids + test, train_ids=ds.num_train_pids,
                       test_ids=test, labelled=0, detected=len(ds.train) + len(ds.gallery))
        else:
            row = dict(cams=cams, ids=ds.num_train_pids + test, train_ids=ds.num_train_pids,
                       test_ids=test, labelled=n_all, detected=0)
        row["source"] = ds.source
    return {"dataset_key": name, **row}


def write_table2_records(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """One Table 2 record (``kind = dataset_stats``) per row of :func:`table2_row`, in
    ``out_dir/<dataset>``: what `jlml tables` and notebook 09 read for Table 2."""
    return [write_dataset_stats(Path(out_dir) / r["dataset_key"], dataset=r["dataset_key"], source=r["source"],
                                **{k: r[k] for k in STATS_KEYS}) for r in rows]


def paper_table2() -> dict[str, dict[str, Any]]:
    with open(PAPER_TABLE2, newline="") as fh:
        return {r["dataset_key"]: r for r in csv.DictReader(fh)}


def table2(rows: list[dict[str, Any]]):
    """Ours beside the paper's row, one line each, with the source of every line."""

    paper = paper_table2()
    cols = list(STATS_KEYS)
    out = []
    for r in rows:
        p = paper.get(r["dataset_key"])
        if p is None:
            continue
        out.append({"dataset": p["dataset"], "source": "paper (Table 2)",
                    **{c: int(p[c]) for c in cols}, "test_setting": p["test_setting"]})
        out.append({"dataset": p["dataset"], "source": f"ours ({r['source']} data)",
                    **{c: r[c] for c in cols}, "test_setting": p["test_setting"]})
    return pd.DataFrame(out).set_index(["dataset", "source"])


def camera_mosaic(items, per_camera: int = 4, size: tuple[int, int] = (128, 64),
                  seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A (cameras × per_camera) mosaic of random images per camera; returns it and the cameras."""

    rng = np.random.default_rng(seed)
    by_cam: dict[int, list[str]] = {}
    for ref, _, cam in items:
        by_cam.setdefault(cam, []).append(ref)
    cams = sorted(by_cam)
    h, w = size
    mosaic = np.full((len(cams) * h, per_camera * w, 3), 255, np.uint8)
    for i, cam in enumerate(cams):
        refs = by_cam[cam]
        for j, k in enumerate(rng.choice(len(refs), min(per_camera, len(refs)), replace=False)):
            im = open_image(refs[k]).resize((w, h))
            mosaic[i * h:(i + 1) * h, j * w:(j + 1) * w] = np.asarray(im)
    return mosaic, cams
