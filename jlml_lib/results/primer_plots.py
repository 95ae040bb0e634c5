"""The primer's pictures (notebooks 00 and 01): a ranked list with junk greyed out, CMC built rank
by rank, AP as an area under precision-recall in both conventions, one person across cameras.

Each function returns its matplotlib Figure (as :mod:`jlml_lib.results.plots`; ``path=`` also
writes a PNG). The colours of the statuses are defined once, here (:data:`STATUS_COLOURS`), and
used by :mod:`jlml_lib.results.protocol_plots` as well.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from jlml_lib.data import open_image
from jlml_lib.primer import STATUSES
from jlml_lib.results.plots import save_figure

#: frame colour of each gallery status, and of the query
STATUS_COLOURS = {"query": "royalblue", "good": "limegreen", "junk": "0.55", "distractor": "darkorange",
                  "wrong": "red"}
#: what each status means, for legends
STATUS_TEXT = {"query": "query (probe)", "good": "true match (same person, other camera)",
               "junk": "junk: same person & camera, or id -1 (skipped)",
               "distractor": "distractor (id 0: nobody's match)", "wrong": "another person"}


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def status_legend(fig: Figure, statuses: Sequence[str] = ("query",) + STATUSES, **kw: Any) -> None:
    """A legend of the frame colours, below the figure by default."""
    handles = [Patch(facecolor="white", edgecolor=STATUS_COLOURS[s], linewidth=3, label=STATUS_TEXT[s])
               for s in statuses]
    fig.legend(handles=handles, **{"loc": "lower center", "ncol": len(handles), "fontsize": 7,
                                   "frameon": False, **kw})


def framed(ax, image: Any, status: str, caption: str = "", greyed: bool = False) -> None:
    """One image in ``ax`` with a frame in its status colour; ``image`` is an image reference (path,
    CUHK03 .mat reference), an array / PIL image, or None (a drawn box instead). ``greyed`` fades
    it (junk: the evaluation skips it)."""
    if image is None:
        ax.add_patch(Rectangle((0.15, 0.05), 0.7, 0.9, color=STATUS_COLOURS[status], alpha=0.25))
        ax.set(xlim=(0, 1), ylim=(0, 1))
    else:
        arr = np.asarray(open_image(image) if isinstance(image, str) else image)
        if greyed:
            arr = np.repeat(arr.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
        ax.imshow(arr, alpha=0.35 if greyed else 1.0)
    for spine in ax.spines.values():
        spine.set(color=STATUS_COLOURS[status], linewidth=4, linestyle=":" if greyed else "-")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(caption, fontsize=7)


def plot_ranked_list(table: pd.DataFrame, q_pid: int, q_cam: int, *, q_image: Any = None,
                     g_images: Sequence[Any] | None = None, title: str = "",
                     path: str | os.PathLike | None = None) -> Figure:
    """A query beside its gallery sorted by distance (a :func:`jlml_lib.primer.ranked_list`): true
    matches framed green, junk greyed out and given no rank, distractors orange, other people red.
    ``g_images[j]`` is gallery image j (index into the original gallery, as ``table.gallery``)."""
    n = len(table)
    fig, axes = plt.subplots(1, n + 1, figsize=(1.05 * (n + 1), 2.6), squeeze=False)
    framed(axes[0, 0], q_image, "query", f"query\nid {q_pid}, cam {q_cam + 1}")
    for ax, row in zip(axes[0, 1:], table.itertuples()):
        junk = row.status == "junk"
        where = "junk: no rank" if junk else f"rank {row.rank}"
        framed(ax, None if g_images is None else g_images[row.gallery], row.status,
               f"{where}\nid {row.pid}, cam {row.camera + 1}\nd = {row.distance:.2f}", greyed=junk)
    fig.suptitle(title or "One query's gallery sorted by distance (nearest first)", fontsize=9)
    status_legend(fig, ("query",) + tuple(s for s in STATUSES if s in set(table.status)),
                  bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return _finish(fig, path)


def plot_cmc_steps(first_matches: Sequence[int], max_rank: int, library_cmc: Sequence[float] | None = None,
                   path: str | os.PathLike | None = None) -> Figure:
    """CMC built rank by rank: left, one row per query, filled from the rank of its first true match
    on (★) — matched at every rank from there; right, the fraction of filled rows at each rank (the
    CMC curve), with ``library_cmc`` (rank_metrics' answer) drawn over it when given."""
    first = np.asarray(first_matches, dtype=int)
    ranks = np.arange(1, max_rank + 1)
    matched = (first[:, None] > 0) & (first[:, None] <= ranks[None, :])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 0.45 * len(first) + 2.2), width_ratios=(1.2, 1))
    ax1.imshow(matched, cmap="Greens", vmin=0, vmax=1.6, aspect="auto",
               extent=(0.5, max_rank + 0.5, len(first) - 0.5, -0.5))
    for q, f in enumerate(first):
        if f > 0:
            ax1.text(f, q, "★", ha="center", va="center", fontsize=12)
    ax1.set(xticks=ranks, xticklabels=[f"{k}\n{n}/{len(first)}" for k, n in zip(ranks, matched.sum(0))],
            yticks=range(len(first)), yticklabels=[f"query {q}" for q in range(len(first))],
            xlabel="rank k (matched queries / all)", title="matched within rank k? (★ = first true match)")
    cmc = matched.mean(axis=0)
    ax2.step(ranks, 100 * cmc, where="post", color="k", label="by hand (left: filled rows / queries)")
    ax2.plot(ranks, 100 * cmc, "ko")
    if library_cmc is not None:
        ax2.plot(ranks, 100 * np.asarray(library_cmc)[:max_rank], "x", color="tab:orange", markersize=10,
                 label="rank_metrics(...).cmc")
    ax2.set(xticks=ranks, ylim=(0, 105), xlabel="rank k", ylabel="CMC(k) = matching rate (%)",
            title="CMC: cumulative matching characteristic")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _finish(fig, path)


def plot_ap_areas(steps: Mapping[str, pd.DataFrame], path: str | os.PathLike | None = None) -> Figure:
    """AP as an area under the precision-recall points of a ranked list, one panel per convention
    (``steps``: :func:`jlml_lib.primer.ap_by_hand`'s second value per convention): ``"official"``
    adds a trapezoid between successive recalls, ``"standard"`` a rectangle of width 1/ngood and
    height the precision at each true match."""
    fig, axes = plt.subplots(1, len(steps), figsize=(4.5 * len(steps), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], steps.items()):
        rec = np.concatenate([[0.0], s["recall"].to_numpy()])
        prec = np.concatenate([[1.0], s["precision"].to_numpy()])
        hits = (s["status"] == "good").to_numpy()
        ngood = int(s["good so far"].iloc[-1]) if len(s) else 0
        for i in np.flatnonzero(hits):
            if name == "official":
                xs, ys = [rec[i], rec[i + 1], rec[i + 1], rec[i]], [0, 0, prec[i + 1], prec[i]]
            else:
                xs = [rec[i + 1] - 1 / ngood, rec[i + 1], rec[i + 1], rec[i + 1] - 1 / ngood]
                ys = [0, 0, prec[i + 1], prec[i + 1]]
            ax.fill(xs, ys, alpha=0.35, color="tab:blue")
            ax.text(np.mean(xs[:2]), 0.05, f"+{s['added to AP'].iloc[i]:.3f}", ha="center", fontsize=8)
        ax.plot(rec[1:], prec[1:], "ko-", markersize=4, label="(recall, precision) at each rank")
        for r, p, k in zip(rec[1:], prec[1:], s.index):
            ax.annotate(f"r={k}", (r, p), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xlim=(-0.02, 1.05), ylim=(0, 1.1), xlabel="recall", ylabel="precision",
               title=f"{name}: AP = shaded area = {s['AP so far'].iloc[-1]:.3f}")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _finish(fig, path)


def plot_identities(rows: Sequence[tuple[int, Sequence[tuple[str, int, int]]]], title: str = "",
                    path: str | os.PathLike | None = None) -> Figure:
    """One person per row, one image per camera that saw them (the paper's Figure 2):
    ``rows`` as :func:`jlml_lib.data.examples.identities_across_cameras` returns them."""
    cols = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(max(5.0, 1.1 * cols + 0.6), 2.1 * len(rows)), squeeze=False)
    for r, (pid, items) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            if c < len(items):
                ref, _, cam = items[c]
                framed(ax, ref, "good", f"id {pid}, cam {cam + 1}")
            else:
                ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)
