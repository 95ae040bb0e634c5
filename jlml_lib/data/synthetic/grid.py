"""Synthetic GRID: ``underground_reid/probe/`` and ``gallery/`` JPEGs named
``PPPP_C_FFFFF_X_Y_H.jpeg`` (pid, camera 1-8, frame, box position and height), the gallery with
``0000`` distractors (other people, never probes), and ``features_and_partitions.mat``
(MATLAB v5) whose ``trainIdxAll`` is a 1×10 cell of structs with ``personIdx`` third.
Eight low-resolution, strongly tinted station cameras; a person's probe and gallery images come
from different cameras."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jlml_lib.data.manifests import plan
from jlml_lib.data.synthetic.matlab import savemat_v5
from jlml_lib.data.synthetic.render import Studio

FOLDER = "underground_reid"


def write(root: Path, *, scale: float, seed: int, structure_only: bool,
          workers: int = 1) -> Path:
    p = plan("grid", scale)
    n, nd = p["ids"], p["distractors"]
    rng = np.random.default_rng([seed, 250])
    studio = Studio(rng, n + nd, 8, structure_only=structure_only, down_range=(1.5, 3.0),
                    workers=workers)
    probe_cam = rng.integers(0, 8, n)
    gallery_cam = (probe_cam + rng.integers(1, 8, n)) % 8
    ddir = root / FOLDER
    frames = iter(rng.permutation(90000)[: 2 * n + nd] + 10000)
    jobs = [("probe", np.arange(n), probe_cam, np.arange(1, n + 1)),
            ("gallery", np.arange(n + nd), np.concatenate([gallery_cam, rng.integers(0, 8, nd)]),
             np.concatenate([np.arange(1, n + 1), np.zeros(nd, int)]))]
    for folder, people_, cams, pids in jobs:
        out = ddir / folder
        out.mkdir(parents=True, exist_ok=True)
        sizes = np.stack([rng.integers(70, 141, len(people_)), rng.integers(30, 61, len(people_))], 1)
        shots, _ = studio.shots(people_, cams, "detected")
        names = []
        for i in range(len(people_)):  # box position: two draws per image, in image order
            x, y = rng.integers(0, 600), rng.integers(0, 400)
            names.append(f"{pids[i]:04d}_{cams[i] + 1}_{next(frames):05d}_{x}_{y}_{sizes[i][0]}.jpeg")
        studio.save(shots, sizes, [out / nm for nm in names],
                    [int(studio.cams.jpeg[c]) for c in cams])
    folds = np.empty((1, p["folds"]), dtype=object)
    for k in range(p["folds"]):
        train = np.sort(rng.choice(np.arange(1, n + 1), p["train_ids"], replace=False))
        rec = np.zeros((1, 1), dtype=[("setIdx", "O"), ("type", "O"), ("personIdx", "O")])
        rec[0, 0] = (np.array([[k + 1.0]]), np.array(["train"]),
                     train.astype(np.float64).reshape(1, -1))
        folds[0, k] = rec
    savemat_v5(ddir / "features_and_partitions.mat", {"trainIdxAll": folds})
    return ddir
