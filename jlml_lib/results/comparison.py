"""The paper's whole comparison (Tables 5–8 with every competitor, Table 3's categories), ours added.

§2.3 is the point of these tables: JLML matches people with a *generic* L2 distance on its
1,024-d feature, while the category A and B competitors learn a metric for the camera pair
(XQDA, NFST, SCS; deep verification networks). :func:`categories` reads Table 3
(``results/paper/table3.csv``), :func:`comparison_frame` puts it beside every row of Table 5, 6, 7
or 8 (``results/paper/table<N>.csv``) and appends our JLML row(s) from the run records, with their
source; :func:`plot_comparison` draws it, coloured by category. Nothing here is typed: the paper's
rows come from its CSVs, ours from ``metrics.json`` records (:mod:`jlml_lib.results.tables`).
"""
from __future__ import annotations

import os
from typing import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from jlml_lib.errors import ConfigError
from jlml_lib.results.paper import CMC_COLUMNS, MARKET_COLUMNS, load_paper_table
from jlml_lib.results.plots import _finish
from jlml_lib.results.tables import Record, cells_frame, fill, source_data, table_cells

__all__ = ["COMPARISON_TABLES", "CATEGORY_MEANING", "OURS", "categories", "comparison_frame", "plot_comparison"]

#: the benchmark tables with competitor rows, and their metric columns
COMPARISON_TABLES: dict[int, tuple[str, ...]] = {5: CMC_COLUMNS, 6: MARKET_COLUMNS, 7: CMC_COLUMNS, 8: CMC_COLUMNS}
#: §3 "Competitors": what Table 3's categories mean
CATEGORY_MEANING: dict[str, str] = {
    "A": "hand-crafted feature + camera-pair specific metric learning",
    "B": "deep feature + deep verification metric (camera-pair specific)",
    "C": "deep feature + generic L2 distance (no metric learning)",
}
_CATEGORY_COLOURS = {"A": "tab:green", "B": "tab:purple", "C": "tab:blue"}
#: the label of our row(s)
OURS = "JLML (ours)"
#: Table 5's paper annotation -> the row label of our cell in tables.table_cells(5)
_ANNOTATION_ROW = {"labelled": "JLML (labelled)", "detected": "JLML (detected)"}


def _feature(r: pd.Series) -> str:
    if isinstance(r["feature_hand_crafted"], str):
        return f"hand-crafted: {r['feature_hand_crafted']}"
    return f"deep: {r['feature_dl']}" if isinstance(r["feature_dl"], str) else "-"


def categories() -> pd.DataFrame:
    """Table 3: each method's category, reference, feature and metric, one line each, with
    ``metric_kind``: "camera-pair specific", "generic" or both (MTDnet's "DVM, L2")."""
    t3 = load_paper_table(3)

    out = pd.DataFrame({
        "category": t3["category"], "method": t3["method"], "method_key": t3["method_key"],
        "reference": t3["reference"].fillna(""),
        "feature": [_feature(r) for _, r in t3.iterrows()],
        "metric": [r["metric_cpsl"] if isinstance(r["metric_cpsl"], str) else r["metric_generic"]
                   for _, r in t3.iterrows()],
        "metric_kind": ["camera-pair specific" + (" + generic" if "L2" in str(r["metric_cpsl"]) else "")
                        if isinstance(r["metric_cpsl"], str) else "generic" for _, r in t3.iterrows()],
    })
    out["category_meaning"] = out["category"].map(CATEGORY_MEANING)
    return out


def _ours_rows(n: int, records: Iterable[Record], jlml: pd.Series) -> list[dict]:
    """Our JLML row(s) of Table ``n`` from the records (one per annotation in Table 5)."""
    frame = cells_frame(fill(table_cells(n), list(records)))
    groups = ({a: frame[frame["row"] == label] for a, label in _ANNOTATION_ROW.items()} if n == 5
              else {None: frame})
    rows = []
    for annotation, cells in groups.items():
        filled = cells[cells["ours"].notna()]
        sources = list(dict.fromkeys(filled["source"]))
        data = sorted({source_data(s) for s in sources} - {""})
        row = {"category": jlml["category"], "method": OURS + (f" — {', '.join(data)} data" if data else ""),
               "method_key": "ours", "feature": jlml["feature"], "metric": jlml["metric"],
               "metric_kind": jlml["metric_kind"], "reference": "",
               **dict(zip(cells["column"], pd.to_numeric(cells["ours"], errors="coerce"))),
               "source": "; ".join(sources) if sources else "no run"}
        if annotation is not None:
            row["annotation"] = annotation
        rows.append(row)
    return rows


def comparison_frame(n: int, records: Iterable[Record] = ()) -> pd.DataFrame:
    """Every row of Table ``n`` (5–8) with Table 3's category, feature and metric, then our row(s)
    filled from ``records`` (e.g. :func:`jlml_lib.results.runs.records_under`); "no run" where none.

    Columns: category, method, [annotation,] feature, metric, metric_kind, the table's metric columns
    (%, as printed; ours in the same unit), source ("paper, Table N (reference)" or our record's)."""
    if n not in COMPARISON_TABLES:
        raise ConfigError(f"Table {n} has no competitor rows; the comparison tables are "
                          f"{', '.join(map(str, COMPARISON_TABLES))}.")
    cats = categories()
    paper = load_paper_table(n).drop(columns=["category", "method"]).merge(
        cats, on="method_key", how="left", validate="many_to_one")
    missing = paper[paper["category"].isna()]
    if len(missing):
        raise ConfigError(f"results/paper/table{n}.csv: method_key {sorted(missing['method_key'])} not in "
                          "results/paper/table3.csv; every compared method has a Table 3 row.")
    # keep the table's own printed method label (Table 5 prints NSFT where Table 3 prints NFST)
    paper["method"] = load_paper_table(n)["method"].to_numpy()
    paper["source"] = [f"paper, Table {n} ({ref or 'this paper'})" for ref in paper["reference"]]
    jlml = cats.set_index("method_key").loc["jlml"]
    ours = pd.DataFrame(_ours_rows(n, records, jlml))
    frame = pd.concat([paper, ours], ignore_index=True)
    columns = ["category", "method", *(["annotation"] if n == 5 else []), "feature", "metric", "metric_kind",
               *COMPARISON_TABLES[n], "source"]
    frame = frame[columns]
    if n == 5:  # the paper prints labelled then detected side by side: group the rows the same way
        order = {a: i for i, a in enumerate(_ANNOTATION_ROW)}
        frame = frame.sort_values("annotation", key=lambda s: s.map(order), kind="stable", ignore_index=True)
    return frame


def plot_comparison(frame: pd.DataFrame, title: str = "", path: str | os.PathLike | None = None) -> Figure:
    """Bars of every row of a :func:`comparison_frame`, one panel per metric column, coloured by
    Table 3's category; our row(s) hatched, a missing value (the paper prints "-", or no run) left empty."""
    metrics = [c for c in frame.columns if c in set(CMC_COLUMNS) | set(MARKET_COLUMNS)]
    labels = (frame["method"] + (" (" + frame["annotation"] + ")" if "annotation" in frame else "")).tolist()
    ours = frame["method"].str.startswith(OURS).to_numpy()
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.6 * len(metrics) + 2.4, 0.28 * len(frame) + 1.4),
                             sharey=True, squeeze=False)
    y = np.arange(len(frame))
    for ax, col in zip(axes[0], metrics):
        values = frame[col].astype(float).to_numpy()
        colours = [_CATEGORY_COLOURS.get(c, "0.5") for c in frame["category"]]
        bars = ax.barh(y, np.nan_to_num(values), color=colours, edgecolor="k", linewidth=0.4)
        for bar, mine in zip(bars, ours):
            if mine:
                bar.set_hatch("///")
        ax.set_title(f"{col} (%)", fontsize=8)
        ax.set_xlim(0, 100)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_yticks(y, labels, fontsize=7)
    axes[0, 0].set_ylim(len(frame) - 0.5, -0.5)
    handles = [Patch(color=_CATEGORY_COLOURS[c], label=f"{c}: {m}") for c, m in CATEGORY_MEANING.items()]
    handles.append(Patch(facecolor="white", edgecolor="k", hatch="///", label="ours (this workbook's run)"))
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return _finish(fig, path)
