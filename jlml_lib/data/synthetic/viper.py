"""Synthetic VIPeR: ``VIPeR/cam_a/NNN_ANGLE.bmp`` and ``cam_b/`` with the same NNN for the same
person; 128×48 BMPs. The two cameras differ strongly in viewpoint (cam_a mostly front/back,
cam_b mostly side, as VIPeR's ~90° viewpoint change) and illumination; ANGLE in the name is
the viewpoint the person was drawn from."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jlml_lib.data.manifests import plan
from jlml_lib.data.synthetic.people import VIEW_ANGLE
from jlml_lib.data.synthetic.render import Studio

FOLDER = "VIPeR"


def write(root: Path, *, scale: float, seed: int, structure_only: bool,
          workers: int = 1) -> Path:
    p = plan("viper", scale)
    n = p["persons"]
    rng = np.random.default_rng([seed, 632])
    studio = Studio(rng, n, 2, canvas=(128, 48), structure_only=structure_only,
                    workers=workers)
    studio.cams.views[0] = [0.45, 0.45, 0.05, 0.05]
    studio.cams.views[1] = [0.05, 0.05, 0.45, 0.45]
    numbers = np.sort(rng.choice(max(1000, n), n, replace=False))
    ddir = root / FOLDER
    for cam, folder in enumerate(("cam_a", "cam_b")):
        out = ddir / folder
        out.mkdir(parents=True, exist_ok=True)
        shots, views = studio.shots(np.arange(n), np.full(n, cam), "tight")
        studio.save(shots, (128, 48), [out / f"{numbers[i]:03d}_{VIEW_ANGLE[int(views[i])]}.bmp"
                                       for i in range(n)])
    return ddir
