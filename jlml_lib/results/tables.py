"""Paper | ours | Δ | source tables, regenerated from the runs' ``metrics.json`` (design §8).

``build_tables(runs_root, out_dir)`` reads every ``runs_root/**/metrics.json``
(:mod:`jlml_lib.results.records` defines the schema) and writes, for each paper table
2, 5–13, ``table<N>.csv`` and ``table<N>.md`` listing the cells our code can reproduce (JLML's
rows; every row of Tables 2 and 13) with the paper's value, ours, Δ = ours − paper and the
source of ours. Δ is given for real data only (design §8): beside the paper, a number measured
on the synthetic stand-in checks the code path, and a difference to the paper would mean nothing.
``index.md`` lists every record and what it filled. Competitor rows stay in ``results/paper/``.
Nothing here is typed by hand: a cell with no matching record says "no run".

Cell rules: when several records fill a cell the newest (``created``) wins and the source says
"newest of N" — except that a record averaging more splits (``extra.aggregated_over``) wins over
one averaging fewer. Accuracies are stored as fractions and shown in %. Synthetic numbers carry
"synthetic" in their source: they exercise the code path and are not a reproduction.

Uncertainty (issue 12, :mod:`jlml_lib.results.intervals`): a cell whose record carries an interval
reads ``84.2 [82.9, 85.4]`` — the cluster bootstrap over test identities for a single evaluation
(Market-1501, CUHK03 new), the split-stratified bootstrap for a mean over splits (CUHK03 classic,
VIPeR, GRID); a note under each table says which. Tables 9–12 add each ablation's difference to the
full model's cell of the same column with its paired interval (both runs' ``queries.npz``, the
same identities resampled for both). For real data the Δ cell says whether the paper's number lies
inside our interval. Records written before intervals existed fill their cells without one.

Starting point (issue 19, :mod:`jlml_lib.provenance`): the source says where the run's model started
("from ImageNet (real, pretrain)", "from scratch"; "start unknown" for a record written before starts
were recorded). A real result that is not the paper's experiment -- a profile other than Table 4's,
or a model that did not start as §3 says (ImageNet → CUHK03/Market-1501; ImageNet → CUHK03+Market-1501
→ VIPeR/GRID), or whose start is not recorded -- says why in its source and ``recipe`` column and
never gets the inside/outside mark; its Δ reads "(not the paper's recipe)" when the start is known.

The command line ``jlml tables`` is :mod:`jlml_lib.results.cli`.
"""
from __future__ import annotations

import datetime as _dt
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from jlml_lib.errors import DataError
from jlml_lib.io import write_text
from jlml_lib.paths import METRICS, is_set_aside
from jlml_lib.provenance import NOT_RECIPE, record_start, recipe_gap, start_label
from jlml_lib.results import intervals as ci
from jlml_lib.results.paper import load_paper_table, paper_jlml
from jlml_lib.results.records import DEFAULT_VARIANT, SOURCES, STATS_KEYS, flatten_metrics, read_metrics
from jlml_lib.uncertainty import Interval

RESULT_TABLES: tuple[int, ...] = (2, 5, 6, 7, 8, 9, 10, 11, 12, 13)
CAPTIONS = {
    2: "Settings of person re-id datasets",
    5: "CUHK03 evaluation (classic protocol, single-shot)",
    6: "Market-1501 evaluation",
    7: "VIPeR evaluation",
    8: "GRID evaluation",
    9: "Complementary benefits of global and local features (Market-1501)",
    10: "Importance of branch independence (Market-1501)",
    11: "Benefits from shared low-level features (Market-1501)",
    12: "Effects of selective feature learning (Market-1501)",
    13: "Model size and complexity",
}
# paper column -> metric key in a record (accuracies are fractions there)
CMC_KEYS = {"R1": "rank1", "R5": "rank5", "R10": "rank10", "R20": "rank20"}
MARKET_KEYS = {"SQ_R1": "single_query.rank1", "SQ_mAP": "single_query.mAP",
               "MQ_R1": "multi_query.rank1", "MQ_mAP": "multi_query.mAP"}
#: the ablation tables: each row is also compared with the full model's row (paired interval)
ABLATION_TABLES = (9, 10, 11, 12)
#: the Δ cell's mark for real data: does the paper's number lie inside our interval?
INSIDE, OUTSIDE = "inside", "outside"
#: the ``recipe`` column of a real result that started as Table 4 and §3 say (else the reason it did not)
RECIPE_OK = "paper's recipe"

Record = dict[str, Any]


@dataclass
class Cell:
    """One reproducible number of a paper table and the rule that finds ours."""

    table: int
    row: str
    column: str
    paper: float
    kind: str
    match: Callable[[Record], bool]
    metric: str
    scale: float = 100.0  # stored value × scale = the table's unit
    unit: str = "%"
    ours: float | None = None
    record: Record | None = None
    n_runs: int = 0
    candidates: list[Record] = field(default_factory=list)
    variant: dict[str, Any] | None = None  # Tables 9-12: the row's switches (the full model's = defaults)
    interval: Interval | None = None  # ours' interval, in the table's unit (issue 12)
    method: str | None = None  # its intervals.METHOD_TEXT key
    vs_full: Interval | None = None  # Tables 9-12: ours − the full model's cell, paired interval

    @property
    def is_full_model(self) -> bool:
        return self.variant is not None and {**DEFAULT_VARIANT, **self.variant} == DEFAULT_VARIANT


# ---------------------------------------------------------------- record matching
def canonical_dataset(name: str) -> str:
    """Spelling-tolerant dataset name: "Market-1501" -> "market1501", "cuhk03_labelled" -> "cuhk03-labeled"."""
    n = str(name).strip().lower().replace("_", "-").replace("labelled", "labeled")
    return {"market-1501": "market1501", "market": "market1501"}.get(n, n)


def _evaluation(dataset: str, variant: dict[str, Any] | None = None,
                protocol_word: str | None = None) -> Callable[[Record], bool]:
    want = {**DEFAULT_VARIANT, **(variant or {})}

    def match(rec: Record) -> bool:
        return (rec["kind"] == "evaluation" and canonical_dataset(rec["dataset"]) == dataset
                and rec["variant"] == want
                # e.g. Table 5 is CUHK03's classic protocol ("cuhk03-classic"), never "cuhk03-new"
                and (protocol_word is None or protocol_word in str(rec["protocol"]).lower()))
    return match


def _stats(dataset_key: str) -> Callable[[Record], bool]:
    def match(rec: Record) -> bool:
        # a CUHK03 stats record may be written per annotation; both count for the one Table 2 row
        return rec["kind"] == "dataset_stats" and canonical_dataset(rec["dataset"]).split("-")[0] == dataset_key
    return match


def _complexity(rec: Record) -> bool:
    return rec["kind"] == "complexity"


def table_cells(n: int) -> list[Cell]:
    """The cells of Table ``n`` that a run can fill, with the paper's values."""
    df = load_paper_table(n)
    cells: list[Cell] = []
    if n == 2:
        for _, r in df.iterrows():
            for col in STATS_KEYS:  # Table 2's columns are the dataset_stats record's keys
                cells.append(Cell(2, r["dataset"], col, float(r[col]), "dataset_stats",
                                  _stats(r["dataset_key"]), col, 1.0, "count"))
    elif n == 5:
        for key, paper in paper_jlml(5).items():
            annotation, col = key.split(".")
            ds = "cuhk03-labeled" if annotation == "labelled" else "cuhk03-detected"
            cells.append(Cell(5, f"JLML ({annotation})", col, paper, "evaluation",
                              _evaluation(ds, protocol_word="classic"), CMC_KEYS[col]))
    elif n in (6, 7, 8):
        ds, keys = {6: ("market1501", MARKET_KEYS), 7: ("viper", CMC_KEYS), 8: ("grid", CMC_KEYS)}[n]
        for col, paper in paper_jlml(n).items():
            cells.append(Cell(n, "JLML", col, paper, "evaluation", _evaluation(ds), keys[col]))
    elif n in (9, 10, 11, 12):
        switches = {9: ("feature",), 10: ("loss", "feature"), 11: ("shared_conv1",), 12: ("sfl",)}[n]
        for _, r in df.iterrows():
            variant = {s: (bool(r[s]) if s in ("shared_conv1", "sfl") else r[s]) for s in switches}
            label = f"{r['loss_label']} / {r['label']}" if n == 10 else r["label"]
            for col, key in MARKET_KEYS.items():
                cells.append(Cell(n, label, col, float(r[col]), "evaluation",
                                  _evaluation("market1501", variant), key, variant=variant))
    elif n == 13:
        for _, r in df.iterrows():
            cells.append(Cell(13, r["model"], "flops", float(r["flops"]), "complexity", _complexity,
                              f"{r['model_key']}.flops", 1.0, "FLOPs"))
            cells.append(Cell(13, r["model"], "params_million", float(r["params_million"]), "complexity",
                              _complexity, f"{r['model_key']}.params", 1e-6, "million"))
    else:
        raise DataError(f"Table {n} has no reproducible cells; result tables: {RESULT_TABLES}.")
    return cells


def _created(rec: Record) -> _dt.datetime:
    try:
        ts = _dt.datetime.fromisoformat(str(rec["created"]))
    except ValueError:
        return _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return ts if ts.tzinfo else ts.replace(tzinfo=_dt.timezone.utc)


def _splits(rec: Record) -> int:
    """How many splits a record averages (``extra.aggregated_over``; 1 when absent)."""
    try:
        return max(1, int(rec.get("extra", {}).get("aggregated_over", 1)))
    except (TypeError, ValueError):
        return 1


def metric_value(rec: Record, key: str) -> float | None:
    """``key`` of a record's metrics, or ``key.mean`` when a split aggregate nests mean/std."""
    for k in (key, f"{key}.mean"):
        value = rec["_flat"].get(k)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def fill(cells: list[Cell], records: list[Record]) -> list[Cell]:
    """Give each cell the newest record that matches it and holds its metric.

    A record averaging more splits (``extra.aggregated_over``) beats one averaging fewer: the
    paper reports means over splits (Tables 5, 7, 8), so a later single-split smoke run must not
    replace a 20-split mean. Among equals the newest wins.
    """
    for cell in cells:
        cands = []
        for rec in records:
            if cell.match(rec) and metric_value(rec, cell.metric) is not None:
                cands.append(rec)
        cands.sort(key=lambda r: (_splits(r), _created(r)))
        cell.candidates, cell.n_runs = cands, len(cands)
        if cands:
            cell.record = cands[-1]
            cell.ours = metric_value(cell.record, cell.metric) * cell.scale
            iv = ci.record_interval(cell.record, cell.metric) if cell.kind == "evaluation" else None
            if iv is not None:
                cell.interval = Interval(*(v * cell.scale for v in iv))
                cell.method = ci.record_method(cell.record)
    _pair_with_full_model(cells)
    return cells


def _pair_with_full_model(cells: list[Cell]) -> None:
    """Tables 9-12: each filled ablation cell minus the full model's cell of the same column, with the
    paired interval of the two records' per-query results (when both have them, on the same queries)."""
    full = {c.column: c for c in cells if c.is_full_model and c.record is not None}
    for c in cells:
        ref = full.get(c.column)
        if c.variant is None or c.is_full_model or c.record is None or ref is None:
            continue
        d = ci.paired_difference(c.record, ref.record, c.metric)
        if d is not None:
            c.vs_full = Interval(*(v * c.scale for v in d))


# ---------------------------------------------------------------- formatting
def recipe(rec: Record | None) -> str:
    """The ``recipe`` column: "" (synthetic data, or no recipe to follow), :data:`RECIPE_OK`, or why a
    real result is not the paper's experiment (:func:`jlml_lib.provenance.recipe_gap`)."""
    if rec is None or rec["kind"] != "evaluation" or rec["source"] != "real":
        return ""
    return recipe_gap(rec) or RECIPE_OK


def source_label(rec: Record, n_runs: int = 1, newest: bool = True) -> str:
    """E.g. "synthetic · run 20250101T000000Z-1a2b3c4d · profile smoke · cpu · from scratch (newest of 3)",
    "real · run ... · profile paper · cuda · from ImageNet (real, pretrain)"; a real result off the
    paper's recipe adds why (":data:`jlml_lib.provenance.NOT_RECIPE`: no ImageNet start")."""
    label = f"{rec['source']} · run {rec['run_id']} · profile {rec.get('profile') or '-'} · {rec['device']}"
    if rec["kind"] == "evaluation":  # a trained model's result: where it started, and if that is the recipe
        label += f" · {start_label(record_start(rec))}"
        if recipe(rec) not in ("", RECIPE_OK):
            label += f" · {recipe(rec)}"
    if _splits(rec) > 1:
        label += f" · mean of {_splits(rec)} splits"
    if n_runs > 1:
        label += f" (newest of {n_runs})" if newest else f" (most splits of {n_runs}; newer runs average fewer)"
    return label


def source_data(label: str) -> str:
    """"real" / "synthetic" from a :func:`source_label` (or "" for "no run")."""
    word = str(label).split(" ", 1)[0]
    return word if word in SOURCES else ""


def _fmt(value: float | None, unit: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    sign = "+" if signed else ""
    if unit == "FLOPs":  # 1.54e9, as the paper prints 1.54×10^9
        mantissa, exp = f"{value:{sign}.2e}".split("e")
        return f"{mantissa}e{int(exp)}"
    if unit == "count":
        return f"{value:{sign},.0f}"
    if unit == "million":
        return f"{value:{sign}.2f}"
    return f"{value:{sign}.1f}"


def paper_mark(c: Cell) -> str:
    """:data:`INSIDE` / :data:`OUTSIDE`: whether the paper's number lies inside our interval -- for
    real data with an interval only ("" otherwise: a synthetic run is not compared with the paper),
    and only for the paper's recipe: a result from another start is not the paper's experiment."""
    if c.record is None or c.record["source"] != "real" or c.interval is None or math.isnan(c.paper):
        return ""
    if c.kind == "evaluation" and recipe(c.record) != RECIPE_OK:
        return ""
    return INSIDE if c.interval.low <= c.paper <= c.interval.high else OUTSIDE


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    rows = []
    paired = any(c.table in ABLATION_TABLES for c in cells)
    for c in cells:
        # rounding removes float noise (85.1 - 50.0 = 35.099999999999994) from the CSV;
        # no Δ for synthetic data (design §8): it is not a comparison with the paper
        real = c.record is not None and c.record["source"] == "real"
        delta = round(c.ours - c.paper, 9) if real and c.ours is not None and not math.isnan(c.paper) else None
        iv, vs = c.interval, c.vs_full
        extra = {"low": iv.low if iv else None, "high": iv.high if iv else None, "interval": c.method or "",
                 "paper_in_interval": paper_mark(c)}
        if paired:
            extra.update(vs_full=vs.estimate if vs else None, vs_full_low=vs.low if vs else None,
                         vs_full_high=vs.high if vs else None)
        rows.append({
            "table": c.table, "row": c.row, "column": c.column, "unit": c.unit, "paper": c.paper,
            "ours": c.ours, **extra, "delta": delta,
            "source": source_label(c.record, c.n_runs,
                                   newest=_created(c.record) == max(map(_created, c.candidates)))
            if c.record else "no run",
            "data": c.record["source"] if c.record else "",
            "recipe": recipe(c.record),
            "run_id": c.record["run_id"] if c.record else "", "n_runs": c.n_runs,
            "metric_key": c.metric,
        })
    return pd.DataFrame(rows)


def _with_interval(value: Any, low: Any, high: Any, unit: str, signed: bool = False) -> str:
    text = _fmt(value, unit, signed)
    if low is not None and high is not None and not pd.isna(low) and not pd.isna(high):
        text += f" [{_fmt(low, unit, signed)}, {_fmt(high, unit, signed)}]"
    return text


def interval_note(n: int, frame: pd.DataFrame) -> list[str]:
    """The lines under a table saying which interval its cells show (from the records that filled them)."""
    if n in (2, 13):
        return []
    used = [m for m in dict.fromkeys(frame.get("interval", pd.Series(dtype=str))) if m]
    filled = frame["ours"].notna()
    lines = [f"[low, high] beside ours: 95% interval (`{m}`): {ci.METHOD_TEXT.get(m, m)}." for m in used]
    if not used:
        lines.append("No record behind this table carries an interval yet (`jlml train` records one with every "
                     "evaluation).")
    elif (filled & (frame["interval"] == "")).any():
        lines.append("A number without [low, high] comes from a record written before intervals were recorded.")
    lines.append("The intervals cover the sampling of test identities, not training randomness (`jlml train "
                 "--seeds`) nor the choice of split. On real data the Δ cell says whether the paper's number "
                 f"lies {INSIDE} or {OUTSIDE} our interval.")
    if n in ABLATION_TABLES:
        lines.append("ours − full JLML: this row minus the full model's row of the same column, with the paired "
                     "bootstrap interval (the same test identities resampled for both runs); an interval that "
                     "excludes 0 is a difference query sampling does not explain.")
    return [part for line in lines for part in ("", line)]  # one paragraph each


def render_markdown(n: int, frame: pd.DataFrame) -> str:
    paired = n in ABLATION_TABLES
    lines = [f"# Table {n}: {CAPTIONS[n]}", "",
             "Generated by `jlml tables` from the runs' metrics.json — do not edit. "
             "paper = the paper's value (results/paper); ours = this code's value; Δ = ours − paper, "
             "given for real data only. "
             "A source marked **synthetic** comes from procedurally generated data: it checks the "
             "code path and is not a reproduction of the paper. The source also says where the run's model "
             "started; a real result whose profile or start is not the paper's (Table 4; §3: ImageNet → "
             "CUHK03/Market-1501, ImageNet → CUHK03+Market-1501 → VIPeR/GRID) is marked "
             f"**{NOT_RECIPE}** (or not verified, when its start was not recorded) and is not a reproduction "
             "of the paper's number either.", "",
             "| row | column | paper | ours | Δ |" + (" ours − full JLML |" if paired else "") + " source |",
             "|---|---|---:|---:|---:|" + ("---:|" if paired else "") + "---|"]
    for _, r in frame.iterrows():
        ours = "no run" if pd.isna(r["ours"]) else _with_interval(r["ours"], r.get("low"), r.get("high"), r["unit"])
        delta = "" if pd.isna(r["delta"]) else _fmt(r["delta"], r["unit"], signed=True)
        flag = str(r.get("recipe") or "")
        if delta and r.get("paper_in_interval"):
            delta += f" ({r['paper_in_interval']})"
        elif delta and flag.startswith(NOT_RECIPE):
            delta += f" ({NOT_RECIPE})"
        vs = ""
        if paired and not pd.isna(r.get("vs_full")):
            vs = _with_interval(r["vs_full"], r["vs_full_low"], r["vs_full_high"], r["unit"], signed=True)
        source = "" if r["source"] == "no run" else r["source"]
        if flag and flag != RECIPE_OK:
            source = source.replace(flag, f"**{flag}**")
        unit = {"%": " (%)", "million": " (M)"}.get(r["unit"], "")
        lines.append(f"| {r['row']} | {r['column']}{unit} | {_fmt(r['paper'], r['unit'])} | {ours} "
                     f"| {delta} |" + (f" {vs} |" if paired else "") + f" {source} |")
    lines += interval_note(n, frame)
    if n == 13:
        lines += ["", "FLOPs and parameter counting conventions: see each complexity record's "
                  "`extra.convention` (listed in index.md)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- scanning and writing
def scan_records(runs_root: str | Path) -> tuple[list[Record], list[tuple[Path, str]]]:
    """All valid records under ``runs_root`` and the (path, error) of the invalid ones."""
    records, bad = [], []
    root = Path(runs_root)
    for path in sorted(root.rglob(METRICS)) if root.is_dir() else []:
        if is_set_aside(path.relative_to(root)):  # a re-run's earlier copy, kept but never counted
            continue
        try:
            rec = read_metrics(path)
        except DataError as exc:
            warnings.warn(f"jlml tables: skipping {exc}", stacklevel=2)
            bad.append((path, str(exc)))
            continue
        rec["_path"] = path
        rec["_flat"] = flatten_metrics(rec["metrics"])
        records.append(rec)
    return records, bad


def _index(records: list[Record], bad: list[tuple[Path, str]], used: dict[str, list[str]],
           runs_root: Path) -> str:
    lines = ["# Runs found by `jlml tables`", "", f"Scanned `{runs_root}`: {len(records)} record(s), "
             f"{len(bad)} unreadable.", "",
             "| run_id | kind | dataset | protocol | variant | data | profile | device | start | commit | fills | path |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in sorted(records, key=_created):
        var = ", ".join(f"{k}={v}" for k, v in rec["variant"].items() if DEFAULT_VARIANT[k] != v) or "default"
        fills = ", ".join(used.get(rec["run_id"], [])) or "nothing (no table cell matches, or superseded)"
        commit = str(rec.get("git", {}).get("commit", "unknown"))[:10]
        if rec.get("git", {}).get("dirty"):
            commit += " (dirty)"
        conv = rec.get("extra", {}).get("convention")
        kind = rec["kind"] + (f" — {conv}" if conv else "")
        start = start_label(record_start(rec)) if rec["kind"] == "evaluation" else "-"
        if recipe(rec) not in ("", RECIPE_OK):
            start += f" ({recipe(rec)})"
        lines.append(f"| {rec['run_id']} | {kind} | {rec['dataset']} | {rec['protocol']} | {var} | "
                     f"{rec['source']} | {rec['profile']} | {rec['device']} | {start} | {commit} | {fills} | "
                     f"{rec['_path']} |")
    if bad:
        lines += ["", "## Unreadable records", ""] + [f"- `{p}`: {e}" for p, e in bad]
    return "\n".join(lines) + "\n"


def table_frames(runs_root: str | Path, tables: tuple[int, ...] = RESULT_TABLES) -> dict[int, pd.DataFrame]:
    """The cells frame of each result table, filled from the records under ``runs_root`` (the
    values ``build_tables`` writes, for figures)."""
    records, _ = scan_records(runs_root)
    return {n: cells_frame(fill(table_cells(n), records)) for n in tables}


def build_tables(runs_root: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``table<N>.csv``/``.md`` for N in 2, 5–13 and ``index.md``; return the paths."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    records, bad = scan_records(runs_root)
    written: list[Path] = []
    used: dict[str, list[str]] = {}
    for n in RESULT_TABLES:
        cells = fill(table_cells(n), records)
        for c in cells:
            if c.record is not None:
                tag = f"T{n}"
                if tag not in used.setdefault(c.record["run_id"], []):
                    used[c.record["run_id"]].append(tag)
        frame = cells_frame(cells)
        csv_path = out_dir / f"table{n}.csv"
        write_text(csv_path, frame.to_csv(index=False))
        written += [csv_path, write_text(out_dir / f"table{n}.md", render_markdown(n, frame))]
    written.append(write_text(out_dir / "index.md", _index(records, bad, used, runs_root)))
    return written
