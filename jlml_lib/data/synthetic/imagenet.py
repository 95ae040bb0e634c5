"""Synthetic ImageNet in the ImageFolder layout: ``ILSVRC2012/train/<wnid>/<wnid>_<n>.JPEG`` and
``val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``. A class is a procedural object category (shape,
colour scheme, texture frequency) on a cluttered background: enough for a pre-training stage
to learn colour/shape filters, nothing like real ImageNet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from jlml_lib.data.manifests import plan

FOLDER = "ILSVRC2012"
SIZE = 64


def _draw(rng: np.random.Generator, cls: dict, n: int, tiny: bool) -> np.ndarray:
    s = 4 if tiny else SIZE
    y = ((np.arange(s) + 0.5) / s)[None, :, None]
    x = ((np.arange(s) + 0.5) / s)[None, None, :]
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    r = rng.uniform(0.15, 0.35, (n, 1, 1))
    d = {0: np.sqrt((y - cy) ** 2 + (x - cx) ** 2),                      # disc
         1: np.maximum(np.abs(y - cy), np.abs(x - cx)),                   # square
         2: np.abs(y - cy) + np.abs(x - cx),                              # diamond
         3: np.minimum(np.abs(y - cy) * 3, np.abs(x - cx) * 3 + 1) / 2,  # bar
         }[cls["shape"]]
    inside = (d < r)[..., None]
    tex = 0.5 + 0.5 * np.sin(2 * np.pi * cls["freq"] * (x * np.cos(cls["angle"])
                                                        + y * np.sin(cls["angle"])))
    fg = cls["c1"] * tex[..., None] + cls["c2"] * (1 - tex[..., None])
    bg = rng.uniform(0.2, 0.8, (n, 1, 1, 3)) + rng.normal(0, 0.08, (n, s, s, 3))
    img = np.where(inside, fg, bg) + rng.normal(0, 0.03, (n, s, s, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write(root: Path, *, scale: float, seed: int, structure_only: bool,
          workers: int = 1) -> Path:
    """``workers`` is accepted for a uniform signature; these small images draw in one process."""
    p = plan("imagenet", scale)
    rng = np.random.default_rng([seed, 1000])
    k = p["classes"]
    wnids = sorted({f"n{v:08d}" for v in rng.choice(10 ** 8, k, replace=False)})
    classes = [{"shape": int(rng.integers(4)), "freq": rng.uniform(1, 8),
                "angle": rng.uniform(0, np.pi), "c1": rng.uniform(0, 1, 3),
                "c2": rng.uniform(0, 1, 3)} for _ in wnids]
    ddir = root / FOLDER
    val_no = iter(range(1, 10 ** 8))
    for part in ("train", "val"):
        per = np.full(k, p[part] // k) + (np.arange(k) < p[part] % k)
        for wnid, cls, m in zip(wnids, classes, per):
            out = ddir / part / wnid
            out.mkdir(parents=True, exist_ok=True)
            for i, arr in enumerate(_draw(rng, cls, int(m), structure_only)):
                name = (f"{wnid}_{i + 1}.JPEG" if part == "train"
                        else f"ILSVRC2012_val_{next(val_no):08d}.JPEG")
                Image.fromarray(arr).save(out / name, format="JPEG", quality=90)
    return ddir
