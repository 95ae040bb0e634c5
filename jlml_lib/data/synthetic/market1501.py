"""Synthetic Market-1501 in the original layout (``Market-1501-v15.09.15/``).

Folders and names as distributed: ``bounding_box_train/``, ``bounding_box_test/`` (with
``-1_*`` junk boxes that mostly miss the person and ``0000_*`` distractor boxes of
background), ``query/`` (at most one per id and camera), ``gt_bbox/`` (hand-drawn boxes: every
query image plus more of the same and the training people), ``gt_query/`` (per-query
good/junk index lists) and ``PPPP_cXsY_FFFFFF_BB.jpg`` names (``BB = 00``: hand-drawn).
Detector boxes (train/test) are misaligned like DPM's; hand-drawn ones are tight.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from jlml_lib.data.manifests import plan
from jlml_lib.data.synthetic.matlab import savemat_v5
from jlml_lib.data.synthetic.render import Studio

FOLDER = "Market-1501-v15.09.15"
NUM_CAMS = 6


def _spread(rng: np.random.Generator, total: int, slots: np.ndarray) -> np.ndarray:
    """``total`` items over ``len(slots)`` slots, at least one each (slots all valid)."""
    k = len(slots)
    if total < k:
        raise ValueError(f"cannot place {total} images in {k} id/camera slots")
    extra = rng.multinomial(total - k, np.full(k, 1.0 / k))
    return 1 + extra


class _Namer:
    """Unique ``PPPP_cXsY_FFFFFF_BB.jpg`` names: a frame is (camera, sequence, frame number)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[tuple[int, int, int]] = set()

    def frame(self, cam: int) -> tuple[int, int, int]:
        while True:  # every image its own frame, so names never collide
            seq = int(self.rng.integers(1, 7))
            frame = int(self.rng.integers(1, 999999)) // 25 * 25 + 1
            if (cam, seq, frame) not in self.used:
                self.used.add((cam, seq, frame))
                return cam, seq, frame

    def name(self, pid: int, cam: int, seq: int, frame: int, box: int) -> str:
        p = "-1" if pid < 0 else f"{pid:04d}"
        return f"{p}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def write(root: Path, *, scale: float, seed: int, structure_only: bool,
          workers: int = 1) -> Path:
    p = plan("market1501", scale)
    rng = np.random.default_rng([seed, 1501])
    n_ids = p["train_ids"] + p["test_ids"]
    studio = Studio(rng, n_ids, NUM_CAMS, structure_only=structure_only, workers=workers)
    # pids 1..n_ids shuffled between train and test, as in the real set (interleaved ids)
    pids = np.arange(1, n_ids + 1)
    order = rng.permutation(n_ids)
    train_people, test_people = np.sort(order[:p["train_ids"]]), np.sort(order[p["train_ids"]:])
    # camera sets: every person seen by >= 2 cameras; test people by many (query ~4.5/id)
    camsets = {}
    is_train = set(train_people.tolist())
    for person in range(n_ids):
        size = (rng.choice([2, 3, 4, 5, 6], p=[.1, .2, .25, .25, .2]) if person in is_train
                else rng.choice([4, 5, 6], p=[.1, .3, .6]))
        camsets[person] = np.sort(rng.choice(NUM_CAMS, size, replace=False))
    namer = _Namer(rng)
    items: dict[str, list] = {k: [] for k in ("bounding_box_train", "bounding_box_test",
                                              "query", "gt_bbox")}

    def add(folder: str, person: int, cam: int, box: int, crop: str) -> None:
        pid = -1 if person == -2 else (0 if person == -1 else int(pids[person]))
        cam_, seq, frame = namer.frame(cam)
        items[folder].append((namer.name(pid, cam_, seq, frame, box), person, cam, crop))

    # training boxes (DPM detections)
    slots = [(q, c) for q in train_people for c in camsets[q]]
    for (q, c), k in zip(slots, _spread(rng, p["train"], np.arange(len(slots)))):
        for _ in range(k):
            add("bounding_box_train", q, c, int(rng.integers(1, 9)), "detected")
    # query: one hand-drawn box per chosen camera of each test person
    qcount = np.ones(len(test_people), int)
    room = np.array([len(camsets[q]) for q in test_people]) - 1
    for _ in range(p["query"] - len(test_people)):
        i = rng.choice(np.flatnonzero(room > 0))
        qcount[i] += 1
        room[i] -= 1
    query_keys = []
    for q, k in zip(test_people, qcount):
        for c in rng.choice(camsets[q], k, replace=False):
            add("query", q, int(c), 0, "tight")
            query_keys.append(items["query"][-1])
    # gallery: detections of every test person in every one of their cameras, so each query
    # has a good match in another camera; then junk and distractors
    slots = [(q, c) for q in test_people for c in camsets[q]]
    for (q, c), k in zip(slots, _spread(rng, p["gallery_good"], np.arange(len(slots)))):
        for _ in range(k):
            add("bounding_box_test", q, c, int(rng.integers(1, 9)), "detected")
    for _ in range(p["junk"]):
        add("bounding_box_test", -2, int(rng.integers(NUM_CAMS)), int(rng.integers(1, 9)), "junk")
    for _ in range(p["distractors"]):
        add("bounding_box_test", -1, int(rng.integers(NUM_CAMS)), int(rng.integers(1, 9)),
            "detected")
    # gt_bbox: the query boxes themselves, one per training person, then more hand-drawn boxes
    items["gt_bbox"] = list(items["query"])
    for q in train_people:
        add("gt_bbox", q, int(rng.choice(camsets[q])), 0, "tight")
    everyone = np.concatenate([train_people, test_people])
    while len(items["gt_bbox"]) < p["gt_bbox"]:
        q = int(rng.choice(everyone))
        add("gt_bbox", q, int(rng.choice(camsets[q])), 0, "tight")

    ddir = root / FOLDER
    # render, each image written as it is drawn (bounded memory at the real 58k images): junk
    # uses a random test person's template (a box that mostly misses them)
    query_names = {it[0] for it in items["query"]}
    for folder in ("bounding_box_train", "bounding_box_test", "query", "gt_bbox"):
        out = ddir / folder
        out.mkdir(parents=True, exist_ok=True)
        reused = folder == "gt_bbox"  # gt_bbox holds the query images verbatim: copy the files
        todo = [it for it in items[folder] if not (reused and it[0] in query_names)]
        if reused:
            for name in sorted(query_names):
                shutil.copyfile(ddir / "query" / name, out / name)
        if not todo:
            continue
        person = np.array([it[1] for it in todo])
        person = np.where(person == -2, rng.choice(test_people, len(person)), person)
        cams = np.array([it[2] for it in todo])
        for crop in ("tight", "detected", "junk"):
            sel = [i for i, it in enumerate(todo) if it[3] == crop]
            if not sel:
                continue
            shots, _ = studio.shots(person[sel], cams[sel], crop)
            studio.save(shots, (128, 64), [out / todo[i][0] for i in sel],
                        [int(studio.cams.jpeg[cams[i]]) for i in sel])
    _write_gt_query(ddir, items["query"], items["bounding_box_test"])
    return ddir


def _write_gt_query(ddir: Path, query: list, test: list) -> None:
    """Per-query ``_good.mat`` / ``_junk.mat`` lists of 1-based indices into the sorted test
    folder (good: same pid, other camera; junk: same pid and camera). The evaluation never
    reads these (it derives good/junk from pids and cameras); they complete the layout."""
    out = ddir / "gt_query"
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(t[0] for t in test)
    meta = np.array([(int(n.split("_")[0]), int(n.split("_")[1][1])) for n in names])
    for name, *_ in query:
        pid, cam = int(name.split("_")[0]), int(name.split("_")[1][1])
        same = meta[:, 0] == pid
        good = np.flatnonzero(same & (meta[:, 1] != cam)) + 1
        junk = np.flatnonzero(same & (meta[:, 1] == cam)) + 1
        stem = name[: -len("_00.jpg")]
        savemat_v5(out / f"{stem}_good.mat", {"good_index": good.reshape(-1, 1).astype(float)})
        savemat_v5(out / f"{stem}_junk.mat", {"junk_index": junk.reshape(-1, 1).astype(float)})
