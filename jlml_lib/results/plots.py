"""Figures for the paper-vs-ours tables (notebook 09): CMC curves and paper-vs-ours bars.

PNG files through matplotlib's Agg backend (no display needed), written atomically. Synthetic
values are labelled "synthetic" in the legend, as everywhere else.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, papermill, servers
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from jlml_lib.io import atomic_open  # noqa: E402
from jlml_lib.results.tables import CAPTIONS, cells_frame, fill, scan_records, table_cells  # noqa: E402


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_cmc(runs_root: str | os.PathLike, path: str | os.PathLike, *, max_rank: int = 20) -> Path:
    """CMC curves (rank 1..max_rank, %) of every evaluation record that stores a ``cmc`` list."""
    records, _ = scan_records(runs_root)
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = 0
    for rec in sorted(records, key=lambda r: r["created"]):
        for key, value in rec["_flat"].items():
            if key.rsplit(".", 1)[-1] != "cmc" or not isinstance(value, list) or not value:
                continue
            ranks = range(1, min(max_rank, len(value)) + 1)
            label = (f"{rec['dataset']} {key[:-4] or ''} {rec['variant']['feature']} "
                     f"({rec['source']}, {rec['run_id'][-8:]})")
            ax.plot(list(ranks), [100 * v for v in value[:len(ranks)]], marker=".", label=label)
            curves += 1
    ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", ylim=(0, 100))
    if curves:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no run with a CMC", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_paper_vs_ours(n: int, runs_root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Grouped bars, paper vs ours, for every cell of result Table ``n`` (e.g. ablations 9–12)."""
    frame = cells_frame(fill(table_cells(n), scan_records(runs_root)[0]))
    if n == 13:  # counts of different magnitude: show ours / paper
        frame = frame.assign(paper=1.0, ours=frame["ours"] / frame["paper"])
    data_label = frame["data"].replace("", "no run")
    long = pd.concat([
        pd.DataFrame({"cell": frame["row"] + " · " + frame["column"], "value": frame["paper"], "who": "paper"}),
        pd.DataFrame({"cell": frame["row"] + " · " + frame["column"], "value": frame["ours"],
                      "who": "ours (" + data_label + ")"}),
    ])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(frame) + 1.5))
    sns.barplot(data=long.dropna(subset=["value"]), y="cell", x="value", hue="who", ax=ax, orient="h")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=None, fontsize=8)
    ax.set(title=f"Table {n}: {CAPTIONS[n]}", ylabel="",
           xlabel="ours / paper" if n == 13 else ("count" if n == 2 else "%"))
    return _save(fig, path)
