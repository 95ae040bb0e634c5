"""Every figure of the workbook: training curves, CMC curves, ranked lists, paper-vs-ours bars
(Tables 2, 5–13), Table 13's cost bars, and notebook 10's diagnostics (pair distances and ROC,
Rank-1 by camera pair, the selection weights' norms).

Each function returns its matplotlib Figure; a notebook displays it. Given a ``path``, the figure
is also written there as a PNG (atomically) and closed, so scripts do not pile figures up.
Nothing here selects a matplotlib backend: matplotlib picks a headless one by itself where there is
no display (CI, papermill) and the notebook's inline one in a kernel. Synthetic values are
labelled "synthetic" in the legends, as everywhere else.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from jlml_lib.data import open_image
from jlml_lib.io import atomic_open
from jlml_lib.losses import LOSS_TERMS
from jlml_lib.results.records import DEFAULT_VARIANT
from jlml_lib.results.runs import read_log
from jlml_lib.results.tables import CAPTIONS, source_data
from jlml_lib.selection import stripe_balance

Item = tuple[str, int, int]  # (image_ref, pid, camid), as in ReidDataset


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it; the Figure can still be displayed."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


# ---------------------------------------------------------------- one run
def plot_training(run_dir: str | os.PathLike, title: str = "", path: str | os.PathLike | None = None) -> Figure:
    """Loss terms (Eq. 5) and the run's own learning rate against iterations, from the run's
    ``log.jsonl`` (a smoke run's schedule is scaled down, not Table 4's: ``schedule_plots`` shows both)."""
    log = read_log(run_dir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
    if log.empty:
        ax1.text(0.5, 0.5, "no log", ha="center", transform=ax1.transAxes)
        return _finish(fig, path)
    terms = [c for c in LOSS_TERMS if c in log]
    long = log.melt(id_vars="iteration", value_vars=terms, var_name="term", value_name="loss")
    sns.lineplot(data=long, x="iteration", y="loss", hue="term", ax=ax1)
    ax1.set_title(f"{title} training loss (Eq. 5 terms)".strip())
    ax2.plot(log["iteration"], log["lr"], color="k")
    ax2.set(yscale="log", xlabel="iteration", ylabel="learning rate",
            title="this run's learning rate (its profile's step schedule)")
    fig.tight_layout()
    return _finish(fig, path)


def plot_cmc(curves: Mapping[str, Sequence[float]], title: str = "CMC", max_rank: int = 20,
             path: str | os.PathLike | None = None) -> Figure:
    """CMC curves (matching rate in % at rank 1..max_rank), one per label; the legend beside the plot.

    ``curves`` holds fractions, e.g. a record's ``cmc`` list (:func:`jlml_lib.results.runs.split_curves`,
    :func:`jlml_lib.results.runs.cmc_curves`).
    """
    rows = [{"rank": r + 1, "matching rate (%)": 100 * v, "run": label}
            for label, cmc in curves.items() for r, v in enumerate(list(cmc)[:max_rank])]
    fig, ax = plt.subplots(figsize=(6, 4))
    if rows:
        sns.lineplot(data=pd.DataFrame(rows), x="rank", y="matching rate (%)", hue="run", marker="o", ax=ax)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=None, fontsize=7)
    else:
        ax.text(0.5, 0.5, "no run with a CMC", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100), title=title)
    return _finish(fig, path)


_MEMBER = ("split-", "seed-")  # a split's / seed's own folder inside an aggregated run (paths.RunDir)


def _variant_words(variant: Mapping[str, object]) -> list[str]:
    """What sets a record's curve apart from the full JLML evaluated as the paper does."""
    words = ["re-ranked (beyond the paper)"] if variant.get("rerank") else []
    words += ["mean over seeds"] if variant.get("aggregate") == "seeds" else []
    words += [f"{k}={v}" for k, v in variant.items()
              if k not in ("rerank", "aggregate") and DEFAULT_VARIANT.get(k, v) != v]
    return words


def cmc_legend_curves(records: Sequence[Mapping]) -> dict[str, dict[str, dict]]:
    """Every record's CMC for notebook 09, ``{dataset: {label: {"cmc", "rerank"}}}``: one curve per
    evaluation, each label saying its query type, what differs from the plain JLML evaluation
    (re-ranked, a feature, an ablation switch), the data, profile and run; a split's or seed's own
    curve is left out when its run's aggregate carries the mean curve (``records`` as
    :func:`jlml_lib.results.tables.scan_records` gives them, oldest first wins no label clash)."""
    with_cmc = [r for r in records if r["kind"] == "evaluation"
                and any(k.rsplit(".", 1)[-1] == "cmc" and v for k, v in r["_flat"].items())]
    has_mean = {Path(r["_path"]).parent for r in with_cmc}
    out: dict[str, dict[str, dict]] = {}
    for rec in sorted(with_cmc, key=lambda r: str(r["created"])):
        folder = Path(rec["_path"]).parent
        member = next((p for p in folder.parents if p.name.startswith(_MEMBER)), None) or (
            folder if folder.name.startswith(_MEMBER) else None)
        if member is not None:
            twin = member.parent / folder.relative_to(member)  # the aggregate's folder of this evaluation
            if twin in has_mean:
                continue
        words = _variant_words(rec["variant"])
        for key, value in rec["_flat"].items():
            if key.rsplit(".", 1)[-1] != "cmc" or not value:
                continue
            query = key[:-4].rstrip(".").replace("_", "-") or "single-shot"
            label = " · ".join([query, *words, f"{rec['source']} {rec.get('profile') or ''}".strip(),
                                f"run …{rec['run_id'][-8:]}"])
            out.setdefault(rec["dataset"], {})[label] = {"cmc": list(value), "rerank": bool(rec["variant"].get("rerank"))}
    return out


def plot_cmc_overview(records: Sequence[Mapping], max_rank: int = 20,
                      path: str | os.PathLike | None = None) -> Figure:
    """Notebook 09's CMC figure: one panel per dataset, a curve per evaluation
    (:func:`cmc_legend_curves`), re-ranked curves dashed, each panel with its own legend."""
    curves = cmc_legend_curves(records)
    n = max(len(curves), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 3.2 * n), squeeze=False)
    if not curves:
        axes[0, 0].text(0.5, 0.5, "no run with a CMC", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax, (dataset, lines) in zip(axes[:, 0], sorted(curves.items())):
        for label, c in lines.items():
            cmc = np.asarray(c["cmc"][:max_rank], dtype=float) * 100
            ax.plot(np.arange(1, len(cmc) + 1), cmc, "--" if c["rerank"] else "-", marker="o", ms=3, label=label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
        ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100), title=f"{dataset}: CMC")
    fig.tight_layout()
    return _finish(fig, path)


def plot_ranked_lists(queries: Sequence[Item], ranked: Sequence[Sequence[Item]],
                      title: str = "Ranked gallery (L2 on the joint feature): green = same person, red = another",
                      path: str | os.PathLike | None = None) -> Figure:
    """Each query beside its ranked gallery images: a green border = the same person, red = another."""
    top = max((len(r) for r in ranked), default=0)
    fig, axes = plt.subplots(len(queries), top + 1, figsize=(1.1 * (top + 1), 2.3 * len(queries)), squeeze=False)
    for row, ((q_ref, qp, qc), shown) in enumerate(zip(queries, ranked)):
        axes[row, 0].imshow(open_image(q_ref))
        axes[row, 0].set_title(f"query\nid {qp} cam {qc + 1}", fontsize=7)
        for col, (ref, gp, _gc) in enumerate(shown, 1):
            ax = axes[row, col]
            ax.imshow(open_image(ref))
            for spine in ax.spines.values():
                spine.set(color="limegreen" if gp == qp else "red", linewidth=4)
            ax.set_title(f"{col}: id {gp}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


# ---------------------------------------------------------------- paper vs ours
_COLOURS = {"paper": "0.6", "ours (real)": "tab:blue", "ours (synthetic)": "tab:orange"}


def _bars(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """One line per cell: row, column, paper, ours, and who "ours" is (real / synthetic data).

    Table 13's counts differ by orders of magnitude between models, so it is shown as ours / paper.
    """
    data = frame["data"] if "data" in frame else frame["source"].map(source_data)
    out = pd.DataFrame({"row": frame["row"], "column": frame["column"], "paper": frame["paper"].astype(float),
                        "ours": frame["ours"].astype(float), "who": "ours (" + data + ")"})
    for end in ("low", "high"):  # ours' 95% interval (issue 12), where the record has one
        out[end] = frame[end].astype(float) if end in frame and n != 13 else np.nan
    if n == 13:
        out["ours"], out["paper"] = out["ours"] / out["paper"], 1.0
    return out


def _interval_bars(ax, cells: pd.DataFrame, y: np.ndarray) -> None:
    """Error bars on ours' bars from the interval columns ``low`` / ``high`` (none where absent)."""
    has = (cells["low"].notna() & cells["high"].notna() & cells["ours"].notna()).to_numpy()
    if has.any():
        c = cells[has]
        err = np.vstack([(c["ours"] - c["low"]).clip(lower=0), (c["high"] - c["ours"]).clip(lower=0)])
        ax.errorbar(c["ours"], y[has] + 0.2, xerr=err, fmt="none", ecolor="k", elinewidth=1, capsize=2)


def _panel(ax, cells: pd.DataFrame) -> None:
    """Horizontal bars of one metric column: the paper's value above ours for every row."""
    y = np.arange(len(cells))
    ax.barh(y - 0.2, cells["paper"], height=0.4, color=_COLOURS["paper"])
    ours = cells["ours"].fillna(0.0)  # "no run": no bar
    ax.barh(y + 0.2, ours, height=0.4, color=[_COLOURS.get(w, "tab:blue") for w in cells["who"]])
    _interval_bars(ax, cells, y)
    ax.set_yticks(y, cells["row"], fontsize=7)
    ax.set_ylim(len(cells) - 0.5, -0.5)  # the table's first row on top (set, not toggled: y is shared)


def plot_paper_vs_ours(tables: Mapping[int, pd.DataFrame], path: str | os.PathLike | None = None) -> Figure:
    """Paper vs ours bars for result tables ``{n: frame}`` (frames of ``tables.cells_frame`` or
    ``workbook.steps.compare``): one row of panels per table, one panel per metric column (so
    Table 10's 24 cells are four readable panels of six), the legend outside the bars. Where a cell
    has an interval (columns ``low`` / ``high``) ours' bar carries it as an error bar."""
    bars = {n: _bars(frame, n) for n, frame in tables.items()}
    ncols = max(b["column"].nunique() for b in bars.values())
    heights = [0.28 * b["row"].nunique() + 1.2 for b in bars.values()]
    fig = plt.figure(figsize=(2.9 * ncols + 2.5, sum(heights)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(tables), 1, height_ratios=heights))
    for subfig, (n, table) in zip(subfigs, bars.items()):
        columns = list(dict.fromkeys(table["column"]))
        axes = subfig.subplots(1, ncols, sharey=True, sharex=n != 2, squeeze=False)[0]
        for ax, column in zip(axes, columns):
            _panel(ax, table[table["column"] == column])
            ax.set_title(column, fontsize=8)
            ax.set_xlabel("ours / paper" if n == 13 else ("count" if n == 2 else "%"), fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
        for ax in axes[len(columns):]:
            ax.set_visible(False)
        subfig.suptitle(f"Table {n}: {CAPTIONS[n]}", fontsize=9)
    present = ["paper"] + sorted({w for b in bars.values() for w in b["who"][b["ours"].notna()]} & set(_COLOURS))
    fig.legend(handles=[Patch(color=_COLOURS[w], label=w) for w in present], loc="outside right upper",
               fontsize=8)
    return _finish(fig, path)


def plot_table13(frame: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Table 13 as bars: the paper's FLOPs beside our MACs and 2×MACs (log scale), and the parameters
    (``frame`` = :func:`jlml_lib.results.complexity_tables.table13`)."""
    cost = frame.melt(id_vars="model", value_vars=["paper FLOPs", "our MACs", "our FLOPs (2×MACs)"],
                      var_name="count", value_name="operations")
    size = frame.melt(id_vars="model", value_vars=["paper params (M)", "our params (M)"],
                      var_name="count", value_name="millions")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sns.barplot(data=cost, x="model", y="operations", hue="count", ax=axes[0])
    axes[0].set_yscale("log")
    axes[0].set_title("Table 13: operations per 224×224 image (log scale)")
    sns.barplot(data=size, x="model", y="millions", hue="count", ax=axes[1])
    axes[1].set_title("Table 13: parameters (final classifier excluded)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return _finish(fig, path)


# ---------------------------------------------------------------- diagnostics (notebook 10)
def plot_pair_distances(positive: np.ndarray, negative: np.ndarray, fpr: np.ndarray, tpr: np.ndarray,
                        marks: Mapping[float, float], title: str = "",
                        path: str | os.PathLike | None = None) -> Figure:
    """Left: the distances of positive and negative pairs as densities (areas 1, so the two shapes
    compare whatever their counts). Right: the ROC of accepting pairs below a distance, on a log
    false-positive axis, with ``marks`` = {FPR: TPR} (:func:`jlml_lib.diagnostics.tpr_at_fpr`) as dots;
    left of the dotted line an FPR means less than one negative pair."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    bins = np.linspace(min(positive.min(), negative.min()), max(positive.max(), negative.max()), 61)
    ax1.hist(negative, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"negative ({len(negative):,})")
    ax1.hist(positive, bins=bins, density=True, alpha=0.55, color="tab:green", label=f"positive ({len(positive):,})")
    ax1.set(xlabel="L2 distance", ylabel="density", title=f"{title} pair distances".strip())
    ax1.legend(fontsize=8)
    ax2.plot(fpr, tpr, color="k", lw=1.2)
    floor = 1.0 / len(negative)
    ax2.axvline(floor, color="0.5", ls=":", lw=1)
    for f, t in marks.items():
        ax2.plot([f], [t], "o", color="tab:blue")
        ax2.annotate(f"TPR {100 * t:.1f}% @ FPR {f:g}", (f, t), textcoords="offset points", xytext=(-8, 8),
                     ha="right", fontsize=8)
    ax2.set(xscale="log", xlim=(min(floor, *marks) / 2 if marks else floor / 2, 1), ylim=(0, 1.02),
            xlabel="false positive rate (log)", ylabel="true positive rate", title=f"{title} ROC".strip())
    fig.tight_layout()
    return _finish(fig, path)


def plot_camera_matrix(rank1: pd.DataFrame, queries: pd.DataFrame | None = None, title: str = "",
                       path: str | os.PathLike | None = None) -> Figure:
    """Rank-1 (%) of each query camera (row) against each gallery camera alone (column)
    (:func:`jlml_lib.diagnostics.camera_pair_rank1`); blank cells (the diagonal) have no score,
    ``queries`` adds the number of queries behind each cell."""
    values = 100 * rank1.astype(float)
    text = values.map(lambda v: "" if np.isnan(v) else f"{v:.0f}")
    if queries is not None:
        text = text + queries.map(lambda n: f"\nn={n}" if n else "")
    fig, ax = plt.subplots(figsize=(1.1 * len(rank1.columns) + 2, 0.8 * len(rank1) + 1.2))
    sns.heatmap(values, annot=text.to_numpy(), fmt="", vmin=0, vmax=100, cmap="viridis", ax=ax,
                cbar_kws={"label": "Rank-1 (%)"}, annot_kws={"fontsize": 8})
    ax.set_title(f"{title} Rank-1 by camera pair".strip(), fontsize=10)
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return _finish(fig, path)


def plot_selection_norms(groups: np.ndarray, column_norms: np.ndarray, within: np.ndarray | None = None,
                         title: str = "", path: str | os.PathLike | None = None) -> Figure:
    """One panel per statistic an equation acts on (issue 18), every scale from 0, left to right:

    * Eq. (2) inside the groups: the Hoyer sparsity of each (output unit, stripe) group of W_L
      (``within``, :func:`jlml_lib.selection.unit_stripe_hoyer`), one column per unit in its own order
      (never sorted by a stripe), colours 0 … 1. Without ``within``: each unit's share of its ℓ1 mass
      per stripe (``groups`` / row total), colours 0 … 1 (0.25 everywhere = perfectly even);
    * Eq. (2) across the stripes: each unit's balance of its m group-ℓ1 norms (``groups``,
      :func:`jlml_lib.selection.unit_stripe_norms`; 1 = every stripe carries the same mass,
      :func:`jlml_lib.selection.stripe_balance`) as a histogram on [0, 1];
    * Eq. (1): W_G's input-column ℓ2 norms, largest first (:func:`jlml_lib.selection.sorted_column_norms`);
      a line falling to 0 is columns switched off.
    """
    g = np.asarray(groups, dtype=float)
    balance = stripe_balance(g)
    cols = np.asarray(column_norms, dtype=float)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 3.2), gridspec_kw={"width_ratios": [3, 1.2, 1]})
    if within is not None:
        heat, what = np.asarray(within, dtype=float), "sparsity inside each (unit, stripe) group"
        label = "Hoyer sparsity (0 = even, 1 = one weight)"
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            heat = g / g.sum(axis=1, keepdims=True)
        what, label = "each unit's share per stripe", "share of the unit's ℓ1 mass"
    im = ax1.imshow(heat.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax1.set_yticks(range(heat.shape[1]), [f"stripe {j + 1}" for j in range(heat.shape[1])], fontsize=8)
    ax1.set(xlabel="output unit of the local feature layer (own order)",
            title=f"Eq. 2: {what}, mean {np.nanmean(heat):.3f}")
    fig.colorbar(im, ax=ax1, label=label)
    ax2.hist(balance[np.isfinite(balance)], bins=np.linspace(0.0, 1.0, 21), color="tab:blue")
    ax2.axvline(np.nanmean(balance), color="k", linestyle="--", label=f"mean {np.nanmean(balance):.3f}")
    ax2.set(xlim=(0, 1), xlabel="balance across the stripes (1 = even)", ylabel="units",
            title="Eq. 2: balance across stripes")
    ax2.legend(fontsize=8)
    ax3.plot(np.arange(1, len(cols) + 1), cols, color="k")
    ax3.set(ylim=(0, None), xlabel="input column (sorted, largest first)", ylabel="ℓ2 norm",
            title="Eq. 1: W_G column norms")
    if title:  # the cell's name once, above the three panels (beside each it overlapped)
        fig.suptitle(title.rstrip(": "), x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return _finish(fig, path)
