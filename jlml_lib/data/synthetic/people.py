"""Procedural pedestrians: identities as attribute vectors, drawn as RGBA templates.

An identity carries **global** cues (top / bottom colours, body width and height, skirt or
trousers) and **local** ones (shoes, a bag on one side with its strap, a logo on the chest,
hair length / a hat, a trouser pattern) so that both JLML branches (paper §2.2: global
whole-body and local stripe features) have something to learn. A template is one identity
seen from one viewpoint; the viewpoint decides which local cues are visible:

* ``FRONT``: face, logo, bag on the image side opposite to the person's side;
* ``BACK``: hair covers the head, no logo, the bag on the other image side;
* ``SIDE_L`` / ``SIDE_R``: a narrower body, the bag shown only when it hangs on the side
  facing the camera.

Everything is vectorised over identities with numpy broadcasting; geometry is in units of
the canvas height so the same person can be drawn on 128×64, 128×48 or 8×4 canvases.
"""
from __future__ import annotations

import numpy as np

FRONT, BACK, SIDE_L, SIDE_R = 0, 1, 2, 3
VIEWS = (FRONT, BACK, SIDE_L, SIDE_R)
VIEW_ANGLE = {FRONT: 0, BACK: 180, SIDE_L: 90, SIDE_R: 270}

# clothing colours (RGB in [0, 1]): saturated and muted ones, as in street clothing
PALETTE = np.array([
    [0.85, 0.12, 0.12], [0.10, 0.25, 0.75], [0.10, 0.55, 0.20], [0.95, 0.85, 0.15],
    [0.95, 0.95, 0.95], [0.08, 0.08, 0.10], [0.55, 0.55, 0.58], [0.45, 0.25, 0.10],
    [0.95, 0.50, 0.10], [0.55, 0.15, 0.60], [0.20, 0.70, 0.85], [0.95, 0.60, 0.75],
    [0.15, 0.20, 0.40], [0.75, 0.70, 0.50], [0.45, 0.50, 0.15], [0.60, 0.05, 0.20],
], dtype=np.float32)
SKIN = np.array([[0.96, 0.80, 0.69], [0.87, 0.67, 0.52], [0.68, 0.48, 0.34],
                 [0.45, 0.30, 0.20]], dtype=np.float32)
HAIR = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.08], [0.75, 0.60, 0.30],
                 [0.55, 0.55, 0.55]], dtype=np.float32)


def _colours(rng: np.random.Generator, n: int, table: np.ndarray, jitter: float) -> np.ndarray:
    c = table[rng.integers(0, len(table), n)] + rng.normal(0, jitter, (n, 3)).astype(np.float32)
    return np.clip(c, 0, 1).astype(np.float32)


def sample_identities(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Attributes of ``n`` people; every array has length ``n``."""
    top = rng.integers(0, len(PALETTE), n)
    bottom = rng.integers(0, len(PALETTE), n)
    bottom = np.where(bottom == top, (bottom + 1 + rng.integers(0, len(PALETTE) - 1, n))
                      % len(PALETTE), bottom)  # top and bottom differ: a two-part global cue
    jit = lambda: rng.normal(0, 0.04, (n, 3)).astype(np.float32)  # noqa: E731
    return {
        "top": np.clip(PALETTE[top] + jit(), 0, 1),
        "bottom": np.clip(PALETTE[bottom] + jit(), 0, 1),
        "skin": _colours(rng, n, SKIN, 0.03),
        "hair": _colours(rng, n, HAIR, 0.03),
        "shoes": _colours(rng, n, PALETTE, 0.05),
        "bag_col": _colours(rng, n, PALETTE, 0.05),
        "logo_col": _colours(rng, n, PALETTE, 0.05),
        "hat_col": _colours(rng, n, PALETTE, 0.05),
        "pattern_col": _colours(rng, n, PALETTE, 0.05),
        "width": rng.uniform(0.82, 1.22, n).astype(np.float32),
        "height": rng.uniform(0.86, 1.0, n).astype(np.float32),
        "hat": rng.random(n) < 0.25,
        "long_hair": rng.random(n) < 0.3,
        "bag_side": rng.choice(3, n, p=[0.4, 0.3, 0.3]),      # 0 none, 1 person's left, 2 right
        "logo": rng.choice(4, n, p=[0.3, 0.25, 0.25, 0.2]),   # 0 none, square, circle, band
        "pattern": rng.choice(3, n, p=[0.55, 0.25, 0.2]),     # plain, h-stripes, side stripe
        "skirt": rng.random(n) < 0.15,
        "short_sleeves": rng.random(n) < 0.4,
    }


def take(ident: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in ident.items()}


def render_templates(ident: dict[str, np.ndarray], views: np.ndarray, height: int,
                     width: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB (N,H,W,3) float32 and alpha (N,H,W) float32 for person i seen from ``views[i]``."""
    n = len(views)
    views = np.asarray(views)
    P = {k: (v.reshape((n,) + (1, 1) + v.shape[1:]) if v.ndim == 2 else v.reshape(n, 1, 1))
         for k, v in ident.items()}
    y = ((np.arange(height, dtype=np.float32) + 0.5) / height).reshape(1, height, 1)
    dx = ((np.arange(width, dtype=np.float32) + 0.5 - width / 2) / height).reshape(1, 1, width)
    vw = views.reshape(n, 1, 1)
    front, back = vw == FRONT, vw == BACK
    side = (vw == SIDE_L) | (vw == SIDE_R)

    t = 1.0 - P["height"] * 0.95                    # top of the head
    L = 0.975 - t                                   # body length
    wf = 1.4 * P["width"] * np.where(side, 0.62, 1.0)     # side views are narrower
    rgb = np.zeros((n, height, width, 3), np.float32)
    alpha = np.zeros((n, height, width), np.float32)

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        m = mask.astype(bool)
        np.copyto(rgb, np.broadcast_to(colour, rgb.shape), where=m[..., None])
        alpha[m] = 1.0

    # legs (or skirt + bare legs), with the trouser pattern as a local cue
    waist, ankle = t + 0.47 * L, 0.94
    leg_w = 0.042 * wf
    in_legs = (y >= waist) & (y < ankle)
    gap = np.where(side, 0.0, 0.006)
    legs = in_legs & (np.abs(dx) >= gap) & (np.abs(dx) < gap + leg_w)
    paint(legs, P["bottom"])
    stripes = legs & (P["pattern"] == 1) & (np.sin(y * 2 * np.pi * 22) > 0.35)
    paint(stripes, P["pattern_col"])
    side_stripe = legs & (P["pattern"] == 2) & (np.abs(dx) > gap + leg_w * 0.62)
    paint(side_stripe, P["pattern_col"])
    skirt_end = t + 0.70 * L
    tw = 0.085 * wf
    skirt = P["skirt"] & (y >= waist) & (y < skirt_end) & (
        np.abs(dx) < tw * (1 + 0.5 * (y - waist) / (skirt_end - waist)))
    paint(legs & P["skirt"] & (y >= skirt_end), P["skin"])
    paint(skirt, P["bottom"])
    shoes = (y >= ankle) & (y < 0.978) & (np.abs(dx) >= gap) & (np.abs(dx) < gap + leg_w + 0.008)
    paint(shoes, P["shoes"])

    # torso (tapered) and arms
    shoulder = t + 0.13 * L
    taper = tw * (1.0 - 0.12 * (y - shoulder) / (waist - shoulder))
    torso = (y >= shoulder) & (y < waist + 0.01) & (np.abs(dx) < taper)
    paint(torso, P["top"])
    arm_lo, elbow = t + 0.52 * L, t + 0.31 * L
    arms = (~side) & (y >= shoulder + 0.01) & (y < arm_lo) & (np.abs(dx) >= taper) & (
        np.abs(dx) < taper + 0.028 * P["width"])
    paint(arms, P["top"])
    paint(arms & P["short_sleeves"] & (y >= elbow), P["skin"])
    side_arm = side & (y >= shoulder + 0.02) & (y < arm_lo) & (np.abs(dx - 0.01) < 0.028)
    paint(side_arm, P["top"] * 0.85)

    # bag: image side depends on the view (mirror between front and back)
    bag_on = P["bag_side"] > 0
    sgn = np.where(P["bag_side"] == 1, 1.0, -1.0) * np.where(back, -1.0, 1.0)
    bag_y = (y >= t + 0.40 * L) & (y < t + 0.58 * L)
    bag_fb = (~side) & bag_y & (sgn * dx >= taper - 0.01) & (sgn * dx < taper + 0.07)
    shows_side = ((vw == SIDE_L) & (P["bag_side"] == 1)) | ((vw == SIDE_R) & (P["bag_side"] == 2))
    bag_sd = side & shows_side & bag_y & (dx > -0.03) & (dx < 0.045)
    paint(bag_on & (bag_fb | bag_sd), P["bag_col"])
    # the strap runs diagonally across the chest to the opposite shoulder
    line = sgn * (taper - 0.01) * (1 - 2 * (waist - y) / (waist - shoulder) * 0.5)
    strap = (~side) & bag_on & (y >= shoulder) & (y < t + 0.40 * L) & (np.abs(dx - line) < 0.007)
    paint(strap, P["bag_col"] * 0.8)

    # logo on the chest: only a front view shows it
    ly = t + 0.25 * L
    logo_sq = (np.abs(dx) < 0.035) & (np.abs(y - ly) < 0.03)
    logo_ci = (dx ** 2 + (y - ly) ** 2) < 0.035 ** 2
    logo_bd = (np.abs(y - ly) < 0.014) & (np.abs(dx) < taper)
    logo = front & (((P["logo"] == 1) & logo_sq) | ((P["logo"] == 2) & logo_ci)
                    | ((P["logo"] == 3) & logo_bd))
    paint(logo, P["logo_col"])

    # head, hair, hat
    cy, ry, rx = t + 0.065 * L, 0.065 * L, 0.055 * P["width"] ** 0.3
    head = ((dx / rx) ** 2 + ((y - cy) / ry) ** 2) <= 1.0
    paint(head, P["skin"])
    hair = head & (back | (y < cy - 0.25 * ry) | (side & (dx < -0.2 * rx)))
    paint(hair, P["hair"])
    long_h = P["long_hair"] & (y >= cy) & (y < cy + 0.13 * L) & (
        (back & (np.abs(dx) < 1.05 * rx))
        | ((~back) & (np.abs(dx) > 0.6 * rx) & (np.abs(dx) < 1.15 * rx)))
    paint(long_h, P["hair"])
    hat = P["hat"] & (((y >= t - 0.012) & (y < cy - 0.3 * ry) & (np.abs(dx) < 1.12 * rx))
                      | ((np.abs(y - (cy - 0.3 * ry)) < 0.008) & (np.abs(dx) < 1.5 * rx)))
    paint(hat, P["hat_col"])

    # round shading so the body is not a flat cut-out
    shade = 1.0 - 0.35 * np.clip((dx / (tw + 0.04)) ** 2, 0, 1)
    rgb *= shade[..., None]
    return rgb, alpha
