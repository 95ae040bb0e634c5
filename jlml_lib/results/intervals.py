"""The intervals a run's records carry, and the paired differences the tables show (issue 12).

A run computes them when it writes its records (:mod:`jlml_lib.engine`); the tables
(:mod:`jlml_lib.results.tables`) and the notebooks read them back. The statistics are
:mod:`jlml_lib.uncertainty`'s, the per-query results :mod:`jlml_lib.results.queries`'; this module
decides which statistic a record gets and how it is stored (``metrics.json``'s optional
``intervals``, ``interval_method`` and ``t_summary``, see :mod:`jlml_lib.results.records`).

Which interval (``interval_method["name"]``):

``cluster-bootstrap``
    One evaluation (Market-1501, CUHK03 new, or one split of VIPeR / GRID / CUHK03 classic): the
    percentile bootstrap over the **test identities** -- all queries of a drawn identity come
    together -- with :data:`N_BOOT` resamples at :data:`LEVEL`.
``split-stratified-bootstrap``
    A mean over splits (VIPeR, GRID: 10; CUHK03 classic: 20): identities resampled within every
    split, the splits averaged with equal weight as the protocol does (CUHK03 classic's gallery
    draws averaged per query first). Beside it ``t_summary``: mean, sample std and the t-interval
    of the mean over the splits.
``t-over-seeds``
    A mean over training seeds (``jlml train --seeds``): the t-interval of the mean over the seeds.

What they cover: the bootstrap intervals cover the sampling of test queries / identities, i.e.
"another draw of test people from the same population". They do not cover training randomness
(initialisation, batch order: that is what ``--seeds`` measures) nor the choice of split.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from jlml_lib.errors import DataError
from jlml_lib.paths import METRICS, QUERIES, RunDir
from jlml_lib.results.queries import TOP_SECTION, QueryResults, read_queries, section_of
from jlml_lib.uncertainty import (DEFAULT_RANKS, Interval, bootstrap_ci, intervals_to_json, metric_keys,
                                  paired_bootstrap_diff, stratified_bootstrap_ci, t_summary)

#: resamples, confidence level and generator seed of every interval a run records
N_BOOT = 1000
LEVEL = 0.95
BOOT_SEED = 0
CLUSTER_BOOTSTRAP = "cluster-bootstrap"
STRATIFIED_BOOTSTRAP = "split-stratified-bootstrap"
T_OVER_SEEDS = "t-over-seeds"
#: what each method means, in the words a table's note uses
METHOD_TEXT = {
    CLUSTER_BOOTSTRAP: "percentile bootstrap over the test identities of one evaluation (all queries of a "
                       "drawn identity together)",
    STRATIFIED_BOOTSTRAP: "split-stratified bootstrap: identities resampled within each split, the splits "
                          "averaged as the protocol does",
    T_OVER_SEEDS: "t-interval of the mean over training seeds",
}
#: a section's label in the notebooks' frames
SECTION_LABELS = {TOP_SECTION: "", "single_query": "SQ", "multi_query": "MQ"}

__all__ = ["N_BOOT", "LEVEL", "BOOT_SEED", "CLUSTER_BOOTSTRAP", "STRATIFIED_BOOTSTRAP", "T_OVER_SEEDS",
           "METHOD_TEXT", "metric_sections", "run_uncertainty", "split_uncertainty", "seed_uncertainty",
           "record_interval", "record_method", "record_queries", "paired_difference", "format_interval",
           "record_folders", "interval_frame", "paired_frame", "differences_frame", "paper_marks"]


# ---------------------------------------------------------------- computing (at the end of a run)
def _ranks(max_rank: int) -> tuple[int, ...]:
    return tuple(k for k in DEFAULT_RANKS if k <= max_rank)


def _method(name: str, **details: Any) -> dict[str, Any]:
    return {"name": name, "level": LEVEL, **details}


def _warn(what: str, err: Exception) -> None:
    # a finished training must still record its metrics: the interval is left out, and said so
    print(f"jlml: no interval for {what}: {err}", file=sys.stderr)


def metric_sections(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{section: {metric: value}}`` of a protocol result (or a record's ``metrics``): Market-1501's
    ``single_query`` / ``multi_query`` (its top level repeats the single query), else ``"top"``."""
    nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping) and "rank1" in v}
    # single query first whatever the stored key order (metrics.json sorts its keys)
    nested = dict(sorted(nested.items(), key=lambda kv: (kv[0] != "single_query", kv[0])))
    out = {}
    for section, values in (nested or {TOP_SECTION: metrics}).items():
        out[section] = {k: float(values[k]) for k in metric_keys(DEFAULT_RANKS)
                        if isinstance(values.get(k), (int, float)) and not isinstance(values.get(k), bool)}
    return out


def run_uncertainty(sections: Mapping[str, QueryResults]) -> dict[str, Any]:
    """The ``intervals`` / ``interval_method`` of one evaluation from its per-query results (cluster =
    query identity); ``{}`` when there are none."""
    intervals = {}
    for name, q in sections.items():
        try:
            intervals[name] = intervals_to_json(bootstrap_ci(q, q.q_pids, n_boot=N_BOOT, level=LEVEL, seed=BOOT_SEED,
                                                             ranks=_ranks(q.max_rank)))
        except DataError as err:
            _warn(f"the {name} queries", err)
    if not intervals:
        return {}
    return {"intervals": intervals,
            "interval_method": _method(CLUSTER_BOOTSTRAP, unit="test identity (query pid)", n_boot=N_BOOT,
                                       seed=BOOT_SEED)}


def _t_summary(results: Sequence[Mapping[str, Any]], over: str) -> dict[str, Any] | None:
    """Mean, sample std and t-interval over runs, per section and metric; ``None`` below 2 runs."""
    if len(results) < 2:
        return None
    per_run = [metric_sections(r) for r in results]
    sections = {}
    for section in per_run[0]:
        if not all(section in s for s in per_run):
            continue
        names = [m for m in per_run[0][section] if all(m in s[section] for s in per_run)]
        sections[section] = {m: t_summary([s[section][m] for s in per_run], level=LEVEL).to_dict() for m in names}
    return {"over": over, "level": LEVEL, "n": len(results), "sections": sections}


def split_uncertainty(split_dirs: Sequence[str | os.PathLike],
                      split_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A split aggregate's fields: the split-stratified bootstrap from each split folder's
    ``queries.npz`` (``split_dirs``, in split order) as ``intervals``, and ``t_summary`` over the
    splits' metrics (2 splits or more)."""
    out: dict[str, Any] = {}
    t = _t_summary(split_metrics, "splits")
    if t:
        out["t_summary"] = t
    try:
        per_split = [read_queries(d) for d in split_dirs]
    except DataError as err:  # e.g. a split evaluated before per-query results were saved
        _warn("the split aggregate", err)
        return out
    if not per_split:
        return out
    intervals = {}
    for section in [s for s in per_split[0] if all(s in q for q in per_split)]:
        parts = [q[section] for q in per_split]
        try:
            ci = stratified_bootstrap_ci(parts, [p.q_pids for p in parts], n_boot=N_BOOT, level=LEVEL,
                                         seed=BOOT_SEED, ranks=_ranks(min(p.max_rank for p in parts)))
        except DataError as err:
            _warn(f"the {section} queries of the splits", err)
            continue
        intervals[section] = intervals_to_json(ci)
    if intervals:
        out["intervals"] = intervals
        out["interval_method"] = _method(STRATIFIED_BOOTSTRAP, unit="test identity within each split",
                                         n_boot=N_BOOT, seed=BOOT_SEED, splits=len(per_split))
    return out


def seed_uncertainty(seed_metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A seed aggregate's fields: the t-interval of the mean over seeds as ``intervals`` (marked
    ``t-over-seeds``) and its ``t_summary``; ``{}`` for fewer than 2 seeds."""
    t = _t_summary(seed_metrics, "seeds")
    if not t:
        return {}
    intervals = {s: {m: v["interval"] for m, v in ms.items()} for s, ms in t["sections"].items()}
    return {"intervals": intervals, "interval_method": _method(T_OVER_SEEDS, seeds=len(seed_metrics)),
            "t_summary": t}


# ---------------------------------------------------------------- reading (tables, notebooks)
def record_interval(rec: Mapping[str, Any], metric_key: str) -> Interval | None:
    """The interval of a dotted metric key (``"single_query.rank1"``, ``"rank1"``) in a record, as
    fractions; ``None`` for a record written before intervals existed."""
    section, metric = section_of(metric_key)
    value = ((rec.get("intervals") or {}).get(section) or {}).get(metric)
    return Interval.from_dict(value) if value else None


def record_method(rec: Mapping[str, Any]) -> str | None:
    """The ``interval_method`` name of a record with intervals."""
    return (rec.get("interval_method") or {}).get("name") if rec.get("intervals") else None


@functools.lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int) -> dict[str, QueryResults]:
    return read_queries(path)


def record_queries(rec: Mapping[str, Any]) -> dict[str, QueryResults] | None:
    """The per-query results beside a scanned record (``rec["_path"]``, as ``tables.scan_records``
    sets it); ``None`` when it has none (an older run, or an aggregate)."""
    path = rec.get("_path")
    file = Path(path).parent / QUERIES if path else None
    if file is None or not file.is_file():
        return None
    return _read(str(file), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _paired(a: str, a_mtime: int, b: str, b_mtime: int, section: str) -> dict[str, Interval]:
    qa, qb = _read(a, a_mtime)[section], _read(b, b_mtime)[section]
    return paired_bootstrap_diff(qa, qb, qa.q_pids, n_boot=N_BOOT, level=LEVEL, seed=BOOT_SEED,
                                 ranks=_ranks(min(qa.max_rank, qb.max_rank)))


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], metric_key: str) -> Interval | None:
    """``a - b`` of ``metric_key`` (fractions) with its paired cluster-bootstrap interval, from the two
    records' ``queries.npz`` (the same resampled identities for both); ``None`` when either has no
    per-query results or they were not evaluated on the same queries (their ``query_key`` differs)."""
    section, metric = section_of(metric_key)
    qa, qb = record_queries(a), record_queries(b)
    if not qa or not qb or section not in qa or section not in qb:
        return None
    if qa[section].query_key != qb[section].query_key or qa[section].ap != qb[section].ap:
        return None
    fa, fb = Path(a["_path"]).parent / QUERIES, Path(b["_path"]).parent / QUERIES
    diffs = _paired(str(fa), fa.stat().st_mtime_ns, str(fb), fb.stat().st_mtime_ns, section)
    return diffs.get(metric)


def format_interval(value: float | None, interval: Interval | None = None, *, scale: float = 100.0,
                    signed: bool = False) -> str:
    """``84.2 [82.9, 85.4]`` (``scale`` x fractions, one decimal); the number alone without an interval."""
    if value is None or value != value:
        return "-"
    sign = "+" if signed else ""
    text = f"{value * scale:{sign}.1f}"
    if interval is not None:
        text += f" [{interval.low * scale:{sign}.1f}, {interval.high * scale:{sign}.1f}]"
    return text


def _scanned(folder: str | os.PathLike) -> dict[str, Any]:
    from jlml_lib.results.records import read_metrics

    rec = read_metrics(folder)
    rec["_path"] = Path(folder) / METRICS if Path(folder).is_dir() else Path(folder)
    return rec


def record_folders(run_dir: str | os.PathLike) -> list[Path]:
    """A run's record folders: the run itself (joint feature) and its ``eval-<kind>[-rerank]/``."""
    run = RunDir(run_dir)
    return [d for d in [run.path, *run.eval_dirs()] if (d / METRICS).is_file()]


def _label(rec: Mapping[str, Any]) -> str:
    """What a record is, in words: "joint", "joint + re-ranking", "global, mean of 3 seeds"..."""
    v = rec["variant"]
    text = v["feature"] + (" + re-ranking" if v.get("rerank") else "")
    seeds, splits = rec.get("extra", {}).get("aggregated_over_seeds"), rec.get("extra", {}).get("aggregated_over")
    if v.get("aggregate") == "seeds":
        text += f", mean of {seeds} seeds"
    elif isinstance(splits, int) and splits > 1:
        text += f", mean of {splits} splits"
    return text


def interval_frame(*folders: str | os.PathLike) -> pd.DataFrame:
    """One row per record folder and section: each metric as ``84.2 [82.9, 85.4]`` (%) and the method
    (records without intervals show the number alone)."""
    rows = []
    for folder in folders:
        rec = _scanned(folder)
        for section, values in metric_sections(rec["metrics"]).items():
            row = {"record": _label(rec), "query": SECTION_LABELS.get(section, section)}
            for metric, v in values.items():
                key = metric if section == TOP_SECTION else f"{section}.{metric}"
                row[metric] = format_interval(v, record_interval(rec, key))
            row["interval"] = record_method(rec) or "none recorded"
            rows.append(row)
    return pd.DataFrame(rows)


def paired_frame(a: str | os.PathLike, b: str | os.PathLike) -> pd.DataFrame:
    """``a − b`` in points for every section and metric of two records evaluated on the same queries,
    each with its paired 95% interval, and whether the interval excludes 0."""
    ra, rb = _scanned(a), _scanned(b)
    rows = []
    for section, values in metric_sections(ra["metrics"]).items():
        for metric in values:
            key = metric if section == TOP_SECTION else f"{section}.{metric}"
            d = paired_difference(ra, rb, key)
            if d is None:
                raise DataError(f"paired_frame: {a} and {b} have no per-query results on the same queries for "
                                f"{key} (queries.npz missing, or evaluated on other queries)")
            rows.append({"query": SECTION_LABELS.get(section, section), "metric": metric,
                         "a − b (points)": format_interval(d.estimate, d, signed=True),
                         "excludes 0": d.low > 0 or d.high < 0})
    return pd.DataFrame(rows)


def differences_frame(frames: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Tables 9-12 as differences to the full model: for every filled ablation cell ours − full JLML
    with its paired 95% interval (``tables.cells_frame`` / ``steps.compare`` frames), beside the
    paper's difference for the same cell, and whether our interval excludes 0."""
    from jlml_lib.results.tables import table_cells  # tables imports this module

    rows = []
    for n, frame in frames.items():
        cells = {(c.row, c.column): c for c in table_cells(n)}
        full = {c.column: c.paper for c in cells.values() if c.is_full_model}
        for _, r in frame.iterrows():
            c = cells[(r["row"], r["column"])]
            if c.is_full_model or "vs_full" not in r or pd.isna(r["vs_full"]):
                continue
            d = Interval(r["vs_full"], r["vs_full_low"], r["vs_full_high"])
            rows.append({"table": n, "row": r["row"], "column": r["column"],
                         "ours − full JLML": format_interval(d.estimate, d, scale=1.0, signed=True),
                         "paper − full JLML": round(c.paper - full[c.column], 1),
                         "excludes 0": bool(d.low > 0 or d.high < 0)})
    return pd.DataFrame(rows, columns=["table", "row", "column", "ours − full JLML", "paper − full JLML",
                                       "excludes 0"])


def paper_marks(frames: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Every real-data cell with an interval: ours [low, high] and whether the paper's number lies
    inside it (synthetic cells are never compared with the paper and are left out)."""
    rows = []
    for n, frame in frames.items():
        for _, r in frame.iterrows():
            if r.get("paper_in_interval"):
                rows.append({"table": n, "row": r["row"], "column": r["column"], "paper": r["paper"],
                             "ours [95% interval]": format_interval(r["ours"], Interval(r["ours"], r["low"], r["high"]),
                                                                    scale=1.0),
                             "paper is": r["paper_in_interval"] + " our interval"})
    return pd.DataFrame(rows, columns=["table", "row", "column", "paper", "ours [95% interval]", "paper is"])
