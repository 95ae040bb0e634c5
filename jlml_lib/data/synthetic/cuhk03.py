"""Synthetic CUHK03 in the original layout: ``cuhk03_release/cuhk-03.mat`` (MATLAB v7.3) plus
the new-protocol config files (MATLAB v5) beside it.

Each camera pair has its own two cameras (10 in all); a person's cells 1–5 come from view 1,
6–10 from view 2, filled in order with empty cells at the end of a view, as in the real
file. The ``labeled`` and ``detected`` crops of a cell are the *same* capture cut by a
hand-drawn (tight) box or by a detector (misaligned, sometimes missing head or feet).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jlml_lib.data.manifests import plan
from jlml_lib.data.synthetic.matlab import V73Writer, cellstr, savemat_v5
from jlml_lib.data.synthetic.render import Shots, Studio

FOLDER = "cuhk03_release"


def _fill(rng: np.random.Generator, persons: int, images: int) -> np.ndarray:
    """Images per (person, view), 1..5 each, summing to ``images``."""
    counts = np.ones((persons, 2), int)
    free = np.flatnonzero(np.ones(persons * 2))
    left = images - 2 * persons
    while left > 0:  # whole extra images, spread at random over the view slots with room
        room = free[counts.ravel()[free] < 5]
        take = rng.choice(room, min(left, len(room)), replace=False)
        counts.ravel()[take] += 1
        left -= len(take)
    return counts


def write(root: Path, *, scale: float, seed: int, structure_only: bool,
          workers: int = 1) -> Path:
    p = plan("cuhk03", scale)
    rng = np.random.default_rng([seed, 3])
    persons = p["persons_per_pair"]
    total = sum(persons)
    studio = Studio(rng, total, 10, structure_only=structure_only, down_range=(1.0, 1.8),
                    workers=workers)
    offsets = np.concatenate([[0], np.cumsum(persons)[:-1]])
    # which cells hold an image: labelled counts first, detected differs by a few cells
    cells = {}
    for kind in ("labeled", "detected"):
        cells[kind] = [_fill(np.random.default_rng([seed, 3, pi]), n, p["images"][kind][pi])
                       for pi, n in enumerate(persons)]
    # one capture per cell: person, camera, viewpoint and nuisance are shared by both kinds
    keys = [(pi, q, c) for pi, n in enumerate(persons) for q in range(n) for c in range(10)]
    person = np.array([offsets[pi] + q for pi, q, _ in keys])
    camera = np.array([2 * pi + int(c >= 5) for pi, _, c in keys])
    views = studio.draw_views(camera)
    sizes = np.stack([rng.integers(112, 161, len(keys)), rng.integers(44, 69, len(keys))], 1)
    index = {k: i for i, k in enumerate(keys)}
    shots = {}
    for kind, crop in (("labeled", "tight"), ("detected", "detected")):
        s, _ = studio.shots(person, camera, crop, views=views)
        shots[kind] = s
    # the detected capture keeps the labelled one's nuisance seed: same frame, other box
    shots["detected"].seed[:] = shots["labeled"].seed

    ddir = root / FOLDER
    ddir.mkdir(parents=True, exist_ok=True)
    w = V73Writer(ddir / "cuhk-03.mat")
    filelists = {}
    for kind in ("detected", "labeled"):  # MATLAB writes fields in this (alphabetical) order
        present = [k for k in keys if cells[kind][k[0]][k[1], int(k[2] >= 5)] > k[2] % 5]
        sel = np.array([index[k] for k in present])
        sub = Shots(*(getattr(shots[kind], f)[sel] for f in
                      ("template", "camera", "scale", "dx", "dy", "seed")))
        # images arrive in cell order (``present`` is): each is written into the file as it
        # is drawn, so memory stays bounded at the real 14k images per kind
        drawn = iter(studio.render(sub, sizes[sel]))
        is_present = set(present)
        pair_refs = []
        for pi, n in enumerate(persons):
            refs = np.empty((n, 10), dtype=object)
            for q in range(n):
                for c in range(10):
                    refs[q, c] = w.array(next(drawn)[1] if (pi, q, c) in is_present else None)
            pair_refs.append(w.cell(refs))
        w.cell(np.array(pair_refs, dtype=object).reshape(5, 1), name=kind)
        filelists[kind] = present
    # testsets: 20 draws of the test people, as [pair, person] rows (1-based, doubles)
    sets = []
    for _ in range(20):
        chosen = np.sort(rng.choice(total, p["test_ids"], replace=False))
        pair = np.searchsorted(offsets, chosen, side="right") - 1
        rows = np.stack([pair + 1, chosen - offsets[pair] + 1], 1).astype(np.float64)
        sets.append(w.array(rows))
    w.cell(np.array(sets, dtype=object).reshape(20, 1), name="testsets")
    w.close()
    # new protocol (Zhong et al.): disjoint train / test people; per test person one query
    # image from each view, the rest of its images form the gallery
    train_people = set(rng.choice(total, p["new_train_ids"], replace=False).tolist())
    for kind in ("labeled", "detected"):
        krng = np.random.default_rng([seed, 3, 7, len(kind)])
        names, labels, cams, tr, qu, ga = [], [], [], [], [], []
        by_view: dict[tuple[int, int], list[int]] = {}
        for i, (pi, q, c) in enumerate(filelists[kind]):
            g = int(offsets[pi] + q)
            names.append(f"{pi + 1}_{q + 1:03d}_{int(c >= 5) + 1}_{c + 1:02d}.png")
            labels.append(g + 1)
            cams.append(int(c >= 5) + 1)
            if g in train_people:
                tr.append(i + 1)
            else:
                by_view.setdefault((g, int(c >= 5)), []).append(i + 1)
        for key in sorted(by_view):
            idx = by_view[key]
            pick = int(krng.integers(len(idx)))
            qu.append(idx[pick])
            ga.extend(idx[:pick] + idx[pick + 1:])
        col = lambda v: np.array(v, np.float64).reshape(-1, 1)  # noqa: E731
        savemat_v5(ddir / f"cuhk03_new_protocol_config_{kind}.mat", {
            "filelist": cellstr(names), "labels": col(labels), "camId": col(cams),
            "train_idx": col(tr), "query_idx": col(sorted(qu)), "gallery_idx": col(sorted(ga))})
    return ddir
