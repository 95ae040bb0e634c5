"""Cameras and the batch image pipeline: template -> crop -> scene -> camera nuisance.

Each camera has its own illumination gain and colour cast, a light gradient, blur, sensor
noise, resolution (downsampling factor), JPEG quality, a viewpoint distribution (a corridor
camera sees mostly fronts and backs) and a background scene with clutter; some cameras often
see people partly occluded. Re-identification is then the task the paper sets: match the same
clothing/body/accessory cues across these nuisances.

A :class:`Shot` list describes the images to draw; :func:`render` draws them in batches with
vectorised numpy (one gather for the crop, masks for clutter and occlusion) and uses PIL only
for the per-image resize and blur, which are C loops.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFilter

from jlml_lib.data.synthetic import people, workers

CANVAS = (128, 64)   # canonical H, W: Market-1501's real crop size
TINY = (8, 4)        # structure-only images

CASTS = np.array([[1.0, 1.0, 1.0], [1.18, 1.0, 0.78], [0.82, 0.96, 1.22], [0.9, 1.12, 0.88],
                  [1.12, 0.86, 1.06], [1.0, 1.0, 1.0], [1.08, 1.05, 0.9], [0.88, 0.9, 1.1],
                  [1.15, 0.95, 0.95], [0.95, 1.05, 1.1]], np.float32)
GAINS = np.array([1.0, 1.1, 0.85, 1.2, 0.95, 0.65, 1.0, 0.8, 1.15, 0.9], np.float32)


@dataclass
class Cameras:
    gain: np.ndarray        # (C,)
    cast: np.ndarray        # (C, 3)
    gradient: np.ndarray    # (C,) top-to-bottom light fall-off
    blur: np.ndarray        # (C,) Gaussian radius in pixels of the canonical canvas
    noise: np.ndarray       # (C,) sensor noise std (intensity in [0, 1])
    down: np.ndarray        # (C,) resolution loss factor (1 = full resolution)
    jpeg: np.ndarray        # (C,) JPEG quality
    occlusion: np.ndarray   # (C,) probability of a partial occlusion
    views: np.ndarray       # (C, 4) viewpoint distribution over people.VIEWS
    scenes: np.ndarray      # (C, H, 3W, 3) background panorama


def make_cameras(rng: np.random.Generator, num: int, canvas: tuple[int, int] = CANVAS, *,
                 down_range: tuple[float, float] = (1.0, 2.2)) -> Cameras:
    """``num`` cameras with distinct nuisance; cameras i and j differ by construction."""
    h, w = canvas
    order = rng.permutation(len(CASTS))
    idx = np.resize(order, num)
    cast = CASTS[idx] * rng.normal(1, 0.03, (num, 3)).astype(np.float32)
    views = rng.dirichlet(np.full(4, 0.9), num).astype(np.float64)
    views = 0.85 * views + 0.15 / 4  # every view possible, a few dominant per camera
    scenes = np.stack([_scene(rng, h, 3 * w) for _ in range(num)])
    return Cameras(
        gain=GAINS[idx] * rng.uniform(0.95, 1.05, num).astype(np.float32),
        cast=cast.astype(np.float32),
        gradient=rng.uniform(0.0, 0.35, num).astype(np.float32),
        blur=rng.uniform(0.0, 1.3, num).astype(np.float32),
        noise=rng.uniform(0.01, 0.05, num).astype(np.float32),
        down=rng.uniform(*down_range, num).astype(np.float32),
        jpeg=rng.integers(70, 96, num),
        occlusion=rng.choice([0.05, 0.1, 0.3], num),
        views=views / views.sum(1, keepdims=True),
        scenes=scenes,
    )


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street/station backdrop: wall, floor, poles, windows, and fine texture."""
    y = (np.arange(h) / h)[:, None, None]
    wall = rng.uniform(0.25, 0.8, 3).astype(np.float32)
    floor = rng.uniform(0.2, 0.6, 3).astype(np.float32)
    horizon = rng.uniform(0.55, 0.75)
    img = np.where(y < horizon, wall, floor) * np.ones((h, w, 1), np.float32)
    x = np.arange(w)[None, :]
    for _ in range(int(rng.integers(4, 9))):  # vertical structures and shop windows
        x0 = rng.integers(0, w)
        ww = rng.integers(2, max(3, w // 6))
        y0 = rng.uniform(0, horizon)
        y1 = rng.uniform(y0 + 0.1, 1.0)
        col = rng.uniform(0.05, 0.95, 3).astype(np.float32)
        m = (x >= x0) & (x < x0 + ww) & (y[..., 0] >= y0) & (y[..., 0] < y1)
        img[m] = col
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


@dataclass
class Shots:
    """Column arrays describing N images (made by :meth:`Studio.shots`)."""

    template: np.ndarray   # index into the template stack, -1 = no person (a distractor)
    camera: np.ndarray
    scale: np.ndarray      # zoom of the crop (1 = tight box)
    dx: np.ndarray         # crop offset in canvas widths
    dy: np.ndarray         # crop offset in canvas heights
    seed: np.ndarray       # per-image seed for everything drawn later (noise, clutter)


def crop_jitter(rng: np.random.Generator, n: int, kind: str) -> tuple[np.ndarray, ...]:
    """Bounding-box misalignment: ``tight`` (hand-drawn), ``detected`` (a detector's box,
    CUHK03 ``detected`` / Market DPM), ``junk`` (a box that mostly misses the person)."""
    if kind == "tight":
        return (rng.uniform(0.97, 1.03, n), rng.normal(0, 0.015, n), rng.normal(0, 0.01, n))
    if kind == "detected":
        return (rng.uniform(0.82, 1.18, n), rng.normal(0, 0.08, n), rng.normal(0, 0.06, n))
    if kind == "junk":
        sc = rng.uniform(1.6, 3.2, n)
        return (sc, rng.uniform(-0.5, 0.5, n), rng.uniform(-0.45, 0.45, n))
    raise ValueError(kind)


def render(shots: Shots, rgb: np.ndarray, alpha: np.ndarray, cams: Cameras,
           out_sizes: np.ndarray | tuple[int, int], *, batch: int = workers.BATCH):
    """Yield ``(i, uint8 H×W×3 array)`` for every shot, in order.

    ``out_sizes`` is one (H, W) for all images or an (N, 2) array of per-image sizes.
    """
    n = len(shots.template)
    h, w = rgb.shape[1:3]
    per_image = np.asarray(out_sizes).ndim == 2
    yy = np.arange(h, dtype=np.float32)
    xx = np.arange(w, dtype=np.float32)
    hw = h * w
    flat_rgb = rgb.reshape(-1, 3)
    flat_alpha = alpha.reshape(-1)
    sh_, sw_ = cams.scenes.shape[1:3]
    flat_scene = cams.scenes.reshape(-1, 3)
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        m = sl.stop - sl.start
        cam = shots.camera[sl]
        tmpl = shots.template[sl]
        # one generator per batch, seeded by the shots' own seeds: deterministic and vectorised
        r = np.random.default_rng(shots.seed[sl].astype(np.uint64))
        # 1. the person, cropped by a (mis)aligned box: one flat gather for the whole batch
        sc = shots.scale[sl].astype(np.float32)[:, None]
        rows = (yy[None] - h / 2 - shots.dy[sl, None] * h) / sc + h / 2
        cols = (xx[None] - w / 2 - shots.dx[sl, None] * w) / sc + w / 2
        valid = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
                 & (tmpl >= 0)[:, None, None])
        ri = np.clip(rows, 0, h - 1).astype(np.int64)
        ci = np.clip(cols, 0, w - 1).astype(np.int64)
        flat = (np.maximum(tmpl, 0)[:, None, None] * hw + ri[:, :, None] * w + ci[:, None, :])
        person = np.take(flat_rgb, flat, axis=0)
        a = (np.take(flat_alpha, flat) & valid)[..., None].astype(np.float32)
        # 2. the scene behind: a random window of the camera's panorama, plus clutter
        off = r.integers(0, sw_ - w + 1, m)
        sflat = (cam[:, None, None] * (sh_ * sw_) + np.arange(h)[None, :, None] * sw_
                 + (off[:, None] + np.arange(w)[None, :])[:, None, :])
        img = np.take(flat_scene, sflat, axis=0)
        # clutter: two muted rectangles per image (axis-aligned, so plain slice assignment)
        box = r.uniform(0, 1, (m, 2, 4))
        ccol = (0.5 * r.uniform(0.1, 0.8, (m, 2, 3)) + 0.25).astype(np.float32)
        y0 = (np.minimum(box[..., 0], box[..., 1]) * h).astype(int)
        y1 = (np.maximum(box[..., 0], box[..., 1]) * h).astype(int)
        x0 = ((box[..., 2] - 0.2) * w).astype(int)
        x1 = x0 + ((0.1 + 0.2 * box[..., 3]) * w).astype(int)
        x0 = np.maximum(x0, 0)
        for j in range(m):
            for k in range(2):
                img[j, y0[j, k]:y1[j, k], x0[j, k]:x1[j, k]] = ccol[j, k]
        img += a * (person - img)
        # 3. partial occlusion (a bench or car from below, a passer-by or pole at one side)
        occ = r.random(m) < cams.occlusion[cam]
        ob = r.uniform(0, 1, (m, 3))
        ocol = r.uniform(0, 0.9, (m, 3)).astype(np.float32)
        for j in np.flatnonzero(occ):
            if ob[j, 2] < 0.5:
                img[j, int((0.62 + 0.25 * ob[j, 0]) * h):] = ocol[j]
            else:
                c0 = int((ob[j, 1] - 0.15) * w)
                img[j, :, max(c0, 0):max(c0 + int(0.3 * w), 0)] = ocol[j]
        # 4. illumination (gain, cast, top-to-bottom gradient, flicker) and 5. sensor noise
        flick = r.normal(1, 0.06, m).astype(np.float32)
        light = 1 - cams.gradient[cam][:, None] * (yy / h)[None, :]            # (m, H)
        factor = ((cams.gain[cam] * flick)[:, None, None] * light[..., None]
                  * cams.cast[cam][:, None, :])                                # (m, H, 3)
        img *= factor[:, :, None, :]
        # uniform noise with the camera's std (sqrt(12) turns U(-.5,.5) into unit std): cheaper
        # to draw than Gaussian and just as good a nuisance
        u = r.random(img.shape, dtype=np.float32)
        u -= 0.5
        u *= (cams.noise[cam] * np.float32(12 ** 0.5))[:, None, None, None]
        img += u
        img8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
        # 6. resolution loss, blur and the output size (PIL's C resamplers)
        for j in range(m):
            i = sl.start + j
            c = cam[j]
            oh, ow = (out_sizes[i] if per_image else out_sizes)
            im = Image.fromarray(img8[j])
            d = float(cams.down[c])
            if d > 1.05:
                im = im.resize((max(2, int(w / d)), max(2, int(h / d))), Image.BILINEAR)
            if cams.blur[c] > 0.3:
                im = im.filter(ImageFilter.GaussianBlur(float(cams.blur[c]) / max(d, 1)))
            if im.size != (ow, oh):
                im = im.resize((int(ow), int(oh)), Image.BILINEAR)
            yield i, np.asarray(im)


def render_tiny(colours_top: np.ndarray, colours_bottom: np.ndarray, size=TINY) -> np.ndarray:
    """Structure-only images: two colour blocks (top/bottom clothing), uint8 (N,h,w,3)."""
    h, w = size
    out = np.empty((len(colours_top), h, w, 3), np.float32)
    out[:, : h // 2] = colours_top[:, None, None, :]
    out[:, h // 2:] = colours_bottom[:, None, None, :]
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


class Studio:
    """People + cameras for one dataset: draws templates lazily and renders shots."""

    def __init__(self, rng: np.random.Generator, num_people: int, num_cameras: int,
                 canvas: tuple[int, int] = CANVAS, *, structure_only: bool = False,
                 down_range: tuple[float, float] = (1.0, 2.2), workers: int = 1):
        self.canvas = canvas
        self.structure_only = structure_only
        self.workers = workers  # processes for templates and rendering (same output for any)
        self.ident = people.sample_identities(rng, num_people)
        self.cams = make_cameras(rng, num_cameras, TINY if structure_only else canvas,
                                 down_range=down_range)
        self.rng = rng
        self._rgb: np.ndarray | None = None
        self._alpha: np.ndarray | None = None

    def templates(self) -> tuple[np.ndarray, np.ndarray]:
        """Every person from every viewpoint, drawn once (index = person * 4 + view)."""
        if self._rgb is None:
            n = len(self.ident["width"])
            h, w = self.canvas
            rgb = np.empty((4 * n, h, w, 3), np.float32)
            alpha = np.empty((4 * n, h, w), bool)
            idx = np.arange(4 * n)
            parts = workers.chunks(4 * n)  # bounded memory for the intermediate masks
            tasks = [(people.take(self.ident, idx[sl] // 4), idx[sl] % 4, h, w) for sl in parts]
            for sl, (r, a) in zip(parts, workers.ordered_map(_template_task, tasks, self.workers)):
                rgb[sl], alpha[sl] = r, a
            self._rgb, self._alpha = rgb, alpha
        return self._rgb, self._alpha

    def draw_views(self, cameras: np.ndarray) -> np.ndarray:
        """A viewpoint for each shot, from its camera's viewpoint distribution."""
        u = self.rng.random(len(cameras))
        cdf = np.cumsum(self.cams.views[cameras], axis=1)
        return np.minimum((u[:, None] > cdf).sum(1), 3)

    def shots(self, person: np.ndarray, camera: np.ndarray, crop: str,
              views: np.ndarray | None = None) -> tuple[Shots, np.ndarray]:
        """Shots for ``person[i]`` (-1: nobody) seen by ``camera[i]``; also returns the views."""
        person = np.asarray(person)
        camera = np.asarray(camera)
        n = len(person)
        views = self.draw_views(camera) if views is None else np.asarray(views)
        sc, dx, dy = crop_jitter(self.rng, n, crop)
        seeds = self.rng.integers(0, 2**63 - 1, n)
        tmpl = np.where(person >= 0, person * 4 + views, -1)
        return Shots(tmpl, camera, sc, dx, dy, seeds), views

    def render(self, shots: Shots, out_sizes) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(i, uint8 array)`` for every shot, streaming (sizes may differ per image)."""
        if self.structure_only:
            p = np.maximum(shots.template, 0) // 4
            top = self.ident["top"][p] * self.cams.cast[shots.camera]
            bottom = self.ident["bottom"][p] * self.cams.cast[shots.camera]
            top[shots.template < 0] = 0.5
            bottom[shots.template < 0] = 0.3
            yield from enumerate(render_tiny(top, bottom))
            return
        rgb, alpha = self.templates()
        if workers.effective_workers(self.workers) > 1:
            yield from workers.render_parallel(shots, rgb, alpha, self.cams, out_sizes, self.workers)
        else:
            yield from render(shots, rgb, alpha, self.cams, out_sizes)

    def save(self, shots: Shots, out_sizes, paths: Sequence[str | Path],
             quality: Sequence[int] | None = None) -> None:
        """Render every shot and write it to ``paths[i]`` (JPEG ``quality[i]``, or a format
        without one when ``quality`` is None) as it is drawn: nothing is held in memory, and
        with ``workers`` > 1 each worker process writes its own images."""
        if self.structure_only or workers.effective_workers(self.workers) <= 1:
            for i, arr in self.render(shots, out_sizes):
                workers.save_image(arr, paths[i], None if quality is None else quality[i])
            return
        rgb, alpha = self.templates()
        for _ in workers.render_parallel(shots, rgb, alpha, self.cams, out_sizes, self.workers,
                                         paths=paths, quality=quality):
            pass


def _template_task(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    ident, views, h, w = task
    rgb, alpha = people.render_templates(ident, views, h, w)
    return rgb, alpha > 0
