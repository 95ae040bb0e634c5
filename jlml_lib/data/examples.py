"""Example images picked from a loaded dataset for the workbook's pictures (notebooks 00 and 01).

Nothing here is used for training or evaluation: these functions choose *which* images a picture
shows — one person seen by several cameras (the paper's Figure 2), a query's gallery sorted into
good / junk / distractor / wrong images (:func:`jlml_lib.primer.gallery_status`) — and give a toy
distance (raw pixels) so that a ranked list can be drawn before any model is trained.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jlml_lib.data.base import Item, ReidDataset
from jlml_lib.data.images import open_image
from jlml_lib.errors import DataError
from jlml_lib.primer import DISTRACTOR_PID, JUNK_PIDS, STATUSES, gallery_status


def identities_across_cameras(items: Sequence[Item], n: int, seed: int = 0) -> list[tuple[int, list[Item]]]:
    """``n`` identities, each with one image from every camera that saw it: the identities seen by
    the most cameras first (ties drawn at random with ``seed``). Pass a test set (query + gallery):
    training pids are relabelled and would collide with test pids. Junk and distractor pids
    (no identity) are left out."""
    rng = np.random.default_rng(seed)
    by_pid: dict[int, dict[int, list[str]]] = {}
    for ref, pid, cam in items:
        if pid != DISTRACTOR_PID and pid not in JUNK_PIDS:
            by_pid.setdefault(int(pid), {}).setdefault(int(cam), []).append(ref)
    seen = [(p, cams) for p, cams in by_pid.items() if len(cams) >= 2]
    if not seen:
        raise DataError("identities_across_cameras: no identity is seen by two cameras in these items; pass "
                        "a test set (query + gallery) of a re-id dataset")
    keys = rng.random(len(seen))
    order = sorted(range(len(seen)), key=lambda i: (-len(seen[i][1]), keys[i]))
    out = []
    for i in order[:n]:
        pid, cams = seen[i]
        out.append((pid, [(sorted(refs)[int(rng.integers(len(refs)))], pid, cam)
                          for cam, refs in sorted(cams.items())]))
    return out


def sort_gallery(query: Item, gallery: Sequence[Item], *, cameras: bool = True) -> dict[str, list[Item]]:
    """The gallery of one query sorted into :data:`jlml_lib.primer.STATUSES`, gallery order kept.
    ``cameras=False`` for the single-shot protocols (VIPeR, GRID), where the true match counts
    whatever its camera: the query's camera is then treated as one no gallery image has."""
    _, q_pid, q_cam = query
    out: dict[str, list[Item]] = {s: [] for s in STATUSES}
    for item in gallery:
        _, pid, cam = item
        out[gallery_status(q_pid, q_cam if cameras else -2, pid, cam)].append(item)
    return out


def market_query(ds: ReidDataset, seed: int = 0) -> tuple[Item, dict[str, list[Item]], list[Item]]:
    """A Market-1501 query that shows every kind of gallery image — two or more true matches and a
    same-camera junk image — and, where the copy has ``gt_bbox/``, a multi-query set of two or more
    boxes: ``(query, its gallery by status, its multi-query set)``, the query drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    boxes = ds.extras.get("gt_bbox") or []
    for i in rng.permutation(len(ds.query)):
        q = ds.query[int(i)]
        g = sort_gallery(q, ds.gallery)
        mq = [b for b in boxes if b[1:] == q[1:]]
        if len(g["good"]) >= 2 and any(it[1] == q[1] for it in g["junk"]) and (len(mq) >= 2 or not boxes):
            return q, g, mq
    raise DataError(f"market1501: no query of {ds.root} has two true matches and a same-camera junk image")


def small_gallery(query: Item, by_status: dict[str, list[Item]], per_kind: int,
                  rng: np.random.Generator) -> list[Item]:
    """A few gallery images of each kind for one query (from :func:`sort_gallery`): ``per_kind + 1``
    true matches, ``per_kind`` each of same-camera junk, junk-pid boxes, distractors, other people."""
    same_cam = [it for it in by_status["junk"] if it[1] == query[1]]
    label_junk = [it for it in by_status["junk"] if it[1] != query[1]]
    return (pick(by_status["good"], per_kind + 1, rng) + pick(same_cam, per_kind, rng)
            + pick(label_junk, per_kind, rng) + pick(by_status["distractor"], per_kind, rng)
            + pick(by_status["wrong"], per_kind, rng))


def pick(items: Sequence[Item], n: int, rng: np.random.Generator) -> list[Item]:
    """Up to ``n`` of ``items`` drawn at random, in their original order."""
    idx = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist()) if items else []
    return [items[i] for i in idx]


def thumbnail_distances(query_ref: str, refs: Sequence[str], size: tuple[int, int] = (16, 8)) -> np.ndarray:
    """A toy distance for pictures drawn before any model is trained: L2 between images shrunk to
    ``size`` (H, W) pixels, RGB in [0, 1]. It ranks by colour and layout only — not JLML's feature."""
    def thumb(ref: str) -> np.ndarray:
        return np.asarray(open_image(ref).resize(size[::-1]), dtype=np.float64).reshape(-1) / 255.0

    q = thumb(query_ref)
    return np.array([np.linalg.norm(thumb(r) - q) for r in refs])
