"""The four benchmarks' test protocols as pictures (notebook 00; paper §3 "Evaluation Protocol",
Table 2): CUHK03 classic single-shot, Market-1501 single- and multi-query, VIPeR's halves, GRID's
gallery with its distractors.

Each picture has two parts. The bars are the **real** dataset's numbers, read from
``data_manifests/<name>.json`` and the protocol's own constants (never typed here). The images are
picked from the copy that was loaded — real or synthetic, as its title says — with the rules of
:mod:`jlml_lib.protocols` (CUHK03's single-shot draw is the protocol's own function).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from jlml_lib.data.base import Item, ReidDataset
from jlml_lib.data.examples import market_query, pick, small_gallery, sort_gallery
from jlml_lib.data.manifests import load_manifest
from jlml_lib.errors import DataError
from jlml_lib.protocols import CLASSIC_DRAWS, _single_shot_draw
from jlml_lib.results.primer_plots import STATUS_COLOURS, _finish, framed, status_legend

#: bar colours: the statuses' frame colours, and the two halves of a split
BAR_COLOURS = {**STATUS_COLOURS, "train": "0.8", "test": "lightsteelblue"}

Segment = tuple[str, int, str]  # (label, count, colour key of BAR_COLOURS)
Picture = tuple[Any, str, str]  # (image reference or None, status, caption)


@dataclass
class ProtocolPicture:
    """What one protocol's figure shows: bars of counts, lines of text, rows of framed images."""

    title: str
    bars: list[tuple[str, list[Segment]]]
    notes: list[str]
    rows: list[tuple[str, list[Picture]]] = field(default_factory=list)


def draw(p: ProtocolPicture, path: str | os.PathLike | None = None) -> Figure:
    """The figure of a :class:`ProtocolPicture`: counts as stacked bars (to scale within the figure),
    the protocol in words, then each row of images with its label."""
    cols = max([len(items) for _, items in p.rows] + [1])
    heights = [0.45 * len(p.bars) + 0.5, 0.22 * len(p.notes) + 0.1] + [1.9] * len(p.rows)
    fig = plt.figure(figsize=(max(9.0, 1.0 * cols + 1.5), sum(heights) + 0.9))
    gs = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    ax = fig.add_subplot(gs[0, :])
    total = max(sum(n for _, n, _ in segs) for _, segs in p.bars)
    for y, (_, segs) in enumerate(p.bars):
        left = 0
        for label, n, colour in segs:
            ax.barh(y, n, left=left, color=BAR_COLOURS[colour], edgecolor="k", linewidth=0.5)
            if n / total > 0.06:  # the count inside the segment where it fits; all of them to the right
                ax.text(left + n / 2, y, f"{n:,}", ha="center", va="center", fontsize=7)
            left += n
        ax.text(total * 1.02, y, " + ".join(f"{n:,} {label}" for label, n, _ in segs) if len(segs) > 1
                else f"{segs[0][1]:,} {segs[0][0]}", va="center", fontsize=7)
    ax.set(yticks=range(len(p.bars)), xlim=(0, total * 1.9))
    ax.set_yticklabels([b for b, _ in p.bars], fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(p.title, fontsize=10)
    note = fig.add_subplot(gs[1, :])
    note.axis("off")
    note.text(0, 1, "\n".join(p.notes), va="top", ha="left", fontsize=8, transform=note.transAxes)
    for r, (label, items) in enumerate(p.rows, start=2):
        for c in range(cols):
            a = fig.add_subplot(gs[r, c])
            if c < len(items):
                ref, status, caption = items[c]
                framed(a, ref, status, caption, greyed=status == "junk")
            else:
                a.axis("off")
            if c == 0:
                a.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", wrap=True)
    shown = {status for _, items in p.rows for _, status, _ in items}
    status_legend(fig, [s for s in STATUS_COLOURS if s in shown], bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _finish(fig, path)


def _cap(item: Item, extra: str = "") -> str:
    _, pid, cam = item
    return f"{extra}id {pid}, cam {cam + 1}"


def _copy(ds: ReidDataset) -> str:
    return f"images: the {ds.source} copy, split {ds.split}" if ds.split is not None else \
        f"images: the {ds.source} copy"


def cuhk03_classic(ds: ReidDataset, seed: int = 0, shown: int = 10) -> ProtocolPicture:
    """CUHK03 classic (Li et al. 2014; Table 5): every view-1 image of the split's test people
    against a single-shot gallery, one view-2 image per test person; 10 draws, 20 splits."""
    m = load_manifest("cuhk03")["mat_files"]["cuhk-03.mat"]["cuhk03"]
    people, test, splits = sum(m["persons_per_pair"]), m["test_ids"], m["testsets"]
    rng = np.random.default_rng(seed)
    qp, qc = (np.array([it[k] for it in ds.query]) for k in (1, 2))
    gp, gc = (np.array([it[k] for it in ds.gallery]) for k in (1, 2))
    drawn = [ds.gallery[i] for i in _single_shot_draw(gp, gc, qp, qc, rng)]
    query = ds.query[int(rng.integers(len(ds.query)))]
    gallery = sort_gallery(query, drawn)
    shown_g = gallery["good"] + pick(gallery["wrong"], shown - 1, rng)
    return ProtocolPicture(
        title=f"CUHK03 classic, single-shot (SS) — numbers: the real cuhk-03.mat; {_copy(ds)}",
        bars=[(f"people ({people:,}; one split of {splits})", [("train", people - test, "train"),
                                                              ("test", test, "test")]),
              (f"gallery of one draw (of {CLASSIC_DRAWS})", [("true match", 1, "good"),
                                                             ("other test people", test - 1, "wrong")])],
        notes=[f"query: every view-1 image of the {test} test people (camera 1 of their camera pair)",
               f"gallery: ONE view-2 image per test person, drawn at random ({test} images: single-shot); "
               f"redrawn {CLASSIC_DRAWS} times and the CMC averaged",
               f"then averaged over the {splits} splits listed in cuhk-03.mat ('testsets')"],
        rows=[("query (view 1)", [(query[0], "query", _cap(query))]),
              ("one drawn gallery\n(view 2)", [(it[0], "good" if it[1] == query[1] else "wrong", _cap(it))
                                              for it in shown_g])])


def market1501(ds: ReidDataset, seed: int = 0, per_kind: int = 2) -> ProtocolPicture:
    """Market-1501 (Zheng et al. 2015; Table 6): single query and multi-query (gt_bbox) against
    bounding_box_test with the official junk rule."""
    f = load_manifest("market1501")["image_folders"]
    test, query, gt = f["bounding_box_test"], f["query"], f["gt_bbox"]
    junk, distract = test["pid_counts"]["-1"], test["pid_counts"]["0"]
    q, g, mq = market_query(ds, seed)
    rng = np.random.default_rng(seed)
    gallery = small_gallery(q, g, per_kind, rng)
    status = {it: s for s, items in g.items() for it in items}
    return ProtocolPicture(
        title=f"Market-1501, single-query (SQ) and multi-query (MQ) — numbers: the real "
              f"Market-1501-v15.09.15; {_copy(ds)}",
        bars=[(f"gallery: bounding_box_test/ ({test['count']:,})",
               [(f"{test['ids']} test people", test["count"] - junk - distract, "test"),
                ("distractors 0000", distract, "distractor"), ("junk -1", junk, "junk")]),
              ("queries: query/", [("≤ 1 per person & camera", query["count"], "query")]),
              ("gt_bbox/ (hand-drawn boxes)", [("multi-query sets", gt["count"], "query")])],
        notes=[f"SQ: each of the {query['count']:,} query images alone is matched against the whole gallery",
               "MQ: the query's feature is the MEAN of the features of the gt_bbox images of the same "
               "person and camera (its multi-query set)",
               "for a query: good = same person, other camera; junk = same person & same camera, and every -1 "
               "box (skipped: no rank); distractors (0000) and other people are wrong answers"],
        rows=[("query and its\nmulti-query set", [(q[0], "query", _cap(q, "query\n"))]
               + [(b[0], "query", _cap(b, "gt_bbox\n")) for b in pick(mq, 5, rng)]),
              ("its gallery\n(some images)", [(it[0], status[it], _cap(it)) for it in gallery])])


def viper(ds: ReidDataset, seed: int = 0, shown: int = 6) -> ProtocolPicture:
    """VIPeR (Gray and Tao 2008; Table 7): cam_a probes against cam_b, 316/316 people, 10 splits."""
    man = load_manifest("viper")
    people, sp = man["image_folders"]["cam_a"]["count"], man["splits"]
    rng = np.random.default_rng(seed)
    probes = pick(ds.query, shown, rng)
    match = {it[1]: it for it in ds.gallery}
    return ProtocolPicture(
        title=f"VIPeR, single-shot (SS) — numbers: the real VIPeR; {_copy(ds)}",
        bars=[(f"people ({people}; one of {sp['num_splits']} random halves)",
               [("train", sp["train_ids"], "train"), ("test", sp["test_ids"], "test")]),
              ("gallery (cam_b)", [("true match", 1, "good"), ("other test people", sp["test_ids"] - 1, "wrong")])],
        notes=[f"probe: the cam_a image of each of the {sp['test_ids']} test people; gallery: their cam_b "
               "images, one each", f"CMC averaged over {sp['num_splits']} random {sp['train_ids']}/"
               f"{sp['test_ids']} splits of the people (data_manifests/{sp['file']})"],
        rows=[("probes (cam_a)", [(it[0], "query", _cap(it)) for it in probes]),
              ("their matches\n(cam_b)", [(match[it[1]][0], "good", _cap(match[it[1]])) for it in probes])])


def grid(ds: ReidDataset, seed: int = 0, shown: int = 4, distractors: int = 5) -> ProtocolPicture:
    """GRID (Loy et al. 2009; Table 8): 125 probes against their matches plus 775 distractors."""
    man = load_manifest("grid")
    f, folds = man["image_folders"], man["mat_files"]["features_and_partitions.mat"]["grid"]
    train, test = folds["train_ids"], folds["ids"] - folds["train_ids"]
    extra = f["gallery"]["pid_counts"]["0"]
    rng = np.random.default_rng(seed)
    probes = pick(ds.query, shown, rng)
    g = sort_gallery(probes[0], ds.gallery, cameras=False)
    match = {it[1]: it for it in ds.gallery if it[1] > 0}
    return ProtocolPicture(
        title=f"GRID, single-shot (SS) with distractors — numbers: the real underground_reid; {_copy(ds)}",
        bars=[(f"people ({folds['ids']}; one of {folds['folds']} folds)",
               [("train", train, "train"), ("test", test, "test")]),
              (f"gallery of a fold ({test + extra:,})", [("test people's matches", test, "good"),
                                                          ("distractors", extra, "distractor")])],
        notes=[f"probe: each of the fold's {test} test people; gallery: their {test} matches and ALL {extra} "
               "distractors (people seen by one camera only: nobody's match)",
               f"the {train} training people are left out; CMC averaged over the {folds['folds']} benchmark "
               "folds (features_and_partitions.mat)"],
        rows=[("probes", [(it[0], "query", _cap(it)) for it in probes]),
              ("gallery: their\nmatches, distractors", [(match[it[1]][0], "good", _cap(match[it[1]]))
                                                       for it in probes]
               + [(it[0], "distractor", _cap(it)) for it in pick(g["distractor"], distractors, rng)])])


#: one picture builder per test protocol (``ReidDataset.protocol``)
PICTURES = {"cuhk03-classic": cuhk03_classic, "market1501": market1501, "viper": viper, "grid": grid}


def plot_protocol(ds: ReidDataset, seed: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """The protocol picture of a loaded dataset (its ``protocol`` picks the builder)."""
    if ds.protocol not in PICTURES:
        raise DataError(f"plot_protocol: no picture for protocol {ds.protocol!r}; known: {sorted(PICTURES)}")
    return draw(PICTURES[ds.protocol](ds, seed), path)
