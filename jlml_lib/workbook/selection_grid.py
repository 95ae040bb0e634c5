"""Does selective feature learning select? The feature layer × SFL grid of 08's Table 12 section.

Short runs on the smoke profile, one per (feature layer, SFL on/off, λ, seed), each measured by
:mod:`jlml_lib.selection` on the statistic each equation acts on — Eq. (1): the sparsity of W_G's
input-column norms; Eq. (2): the sparsity *inside* W_L's (unit, stripe) groups, beside the balance
*across* a unit's stripes that Eq. (2) keeps high — and, when evaluated, by Rank-1 / mAP. Used by ``notebooks/08_ablations.ipynb`` (a reduced grid under nbval,
the full one under ``jlml workbook``) and by ``benchmarks/sfl_selection.py`` (the same grid from a
shell). Runs are reused when asked again with the same settings, so an interrupted grid continues.

λ here is Eq. (5)'s weight of the two penalties: the paper's 5e-4 (:data:`PAPER`) and a raised
pair (:data:`RAISED`) that lets a run of a few hundred iterations show the mechanism. Every run of
the grid is trained with ``study="selection"`` (and a raised λ records ``lambda="custom"``), its
own record variant, so these short runs never fill a table cell of the paper's runs.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from jlml_lib import selection
from jlml_lib.engine.checkpoint import load_model
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError
from jlml_lib.io import write_json
from jlml_lib.losses import LAMBDA
from jlml_lib.paths import RunDir
from jlml_lib.train import run

RAISED = (0.05, 0.005)   # λ_global, λ_local large enough to show the mechanism in 120 smoke iterations
PAPER = (LAMBDA, LAMBDA)  # §2.2 after Eq. (5)
#: the statistics shown by default (selection.summary's keys): what Eq. (1) and Eq. (2) act on, then the
#: largest norms (how far W shrank). The across-group ones (wl_group_l1_hoyer, wl_stripes_90_*) stay in
#: every row but are not shown: Eq. (2) does not make them grow (jlml_lib.selection's docstring)
SHOWN = (*selection.EQ1_KEYS, *selection.EQ2_KEYS, "wg_col_l2_max", "wl_group_l1_max")
#: the on/off ratios shown by default: one statistic per equation, the balance Eq. (2) keeps, Rank-1
EFFECTS = ("wg_col_l2_hoyer", "wl_within_group_hoyer_mean", "wl_stripe_balance_mean", "rank1")
RECORD = "selection.json"  # beside each run's own files: its row, trace and settings
KEYS = ["lambda_global", "lambda_local", "feature_layer", "sfl"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of the grid (a seed is added per run)."""

    feature_layer: str
    sfl: bool
    lambda_global: float
    lambda_local: float

    @property
    def name(self) -> str:
        if not self.sfl:  # λ has no effect without SFL
            return f"{self.feature_layer}-sfl_off"
        return f"{self.feature_layer}-sfl_on-lg{self.lambda_global:g}-ll{self.lambda_local:g}"


def cells(layers: Sequence[str], lambdas: Sequence[tuple[float, float]]) -> list[Cell]:
    """SFL on and off for every feature layer under every λ (the off cells repeat: trained once)."""
    return [Cell(layer, sfl, lg, ll) for lg, ll in lambdas for layer in layers for sfl in (True, False)]


def run_one(cell: Cell, seed: int, out: Path, *, iterations: int | None, evaluate: bool,
            trace_every: int = 0, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or reuse) one run under ``out`` and return its row: the cell (its λ, also when an
    SFL-off run trained under another λ is reused), the seed, the statistics, and Rank-1/mAP when
    evaluated. ``extra``: more ``key=value`` settings."""
    run_dir = RunDir(Path(out) / f"{cell.name}-s{seed}")
    record = run_dir.path / RECORD
    if record.exists():
        saved = json.loads(record.read_text())
        # None = the smoke profile's length: a run of another length is never taken for it
        want = {"iterations": make_config("smoke").iterations if iterations is None else int(iterations),
                "extra": list(extra)}
        have = {"iterations": saved["row"]["iterations"], "extra": saved.get("extra", list(extra))}
        if want != have:
            raise ConfigError(f"{run_dir.path} was trained with {have}, this grid asks for {want}; "
                              "choose another folder for other settings.")
        if missing := [k for k in (*selection.EQ1_KEYS, *selection.EQ2_KEYS) if k not in saved["row"]]:
            # a run recorded before these statistics existed (issue 18): measure its saved model again
            model, _ = load_model(run_dir.final)
            saved["row"].update(selection.summary(model))
            write_json(record, saved)
        if saved.get("evaluated") or not evaluate:
            return {**saved["row"], "lambda_global": cell.lambda_global, "lambda_local": cell.lambda_local}
    overrides = [f"seed={seed}", f"feature_layer={cell.feature_layer}", f"sfl={str(cell.sfl).lower()}",
                 f"lambda_global={cell.lambda_global}", f"lambda_local={cell.lambda_local}",
                 f"evaluate={str(evaluate).lower()}", "progress=false", "study=selection", *extra]
    cfg = make_config("smoke", overrides, **({} if iterations is None else {"iterations": iterations}))
    trace: list[dict[str, Any]] = []

    def on_iteration(done: int, model) -> None:
        if trace_every and done % trace_every == 0:
            trace.append({"iteration": done, **selection.summary(model)})

    t0 = time.perf_counter()
    summary = run(cfg, run_dir.path, resume=run_dir.final.exists(), on_iteration=on_iteration)
    model, _ = load_model(run_dir.final)
    row: dict[str, Any] = {**dataclasses.asdict(cell), "seed": seed, "iterations": cfg.iterations,
                           **selection.summary(model), "wall_s": time.perf_counter() - t0}
    metrics = next(iter(summary.get("metrics", {}).values()), None)
    if metrics:
        row.update(rank1=metrics["rank1"], mAP=metrics["mAP"])
    write_json(record, {"row": row, "trace": trace, "evaluated": bool(metrics), "extra": list(extra)})
    return row


def grid(out: str | Path, *, layers: Sequence[str], lambdas: Sequence[tuple[float, float]],
         seeds: Iterable[int], iterations: int | None = None, evaluate: bool = True, trace_every: int = 0,
         extra: Sequence[str] = (), log: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Every run of the grid (trained or reused), one row each, with the λ of the cell it stands in
    (an SFL-off run is listed under every λ)."""
    rows = []
    for cell in cells(layers, lambdas):
        for seed in seeds:
            row = run_one(cell, seed, Path(out), iterations=iterations, evaluate=evaluate,
                          trace_every=trace_every, extra=extra)
            rows.append(row)
            if log:
                log(f"{cell.name} seed {seed}: " + ", ".join(f"{k}={row[k]:.4f}" for k in SHOWN[:4] if k in row))
    return rows


def table(rows: list[dict[str, Any]], cols: Sequence[str] = SHOWN) -> pd.DataFrame:
    """Mean ± std over seeds per (λ, feature layer, SFL) cell, as text, and ``n`` (seeds)."""
    df = pd.DataFrame(rows)
    cols = [c for c in (*cols, "rank1", "mAP") if c in df]
    g = df.groupby(KEYS)[cols]
    mean, std = g.mean(), g.std(ddof=1)
    out = mean.map(lambda v: f"{v:.4f}").astype(str) + " ± " + std.fillna(0).map(lambda v: f"{v:.4f}")
    out["n"] = g.size()
    return out.reset_index()


def effects(rows: list[dict[str, Any]], keys: Sequence[str] = EFFECTS) -> pd.DataFrame:
    """Per λ and feature layer: the seed-mean of each statistic with SFL off and on, and on / off.

    Eq. (1) working: ``wg_col_l2_hoyer`` on/off well above 1. Eq. (2) working:
    ``wl_within_group_hoyer_mean`` on/off above 1 *and* ``wl_stripe_balance_mean`` on/off near 1 or
    above (every stripe stays in use). Statistics absent from the rows (old records) are skipped."""
    df = pd.DataFrame(rows)
    keys = [k for k in keys if k in df]
    mean = df.groupby(KEYS)[keys].mean()
    out = []
    for (lg, ll, layer), sub in mean.groupby(level=[0, 1, 2]):
        by = sub.droplevel([0, 1, 2])
        if True not in by.index or False not in by.index:
            continue
        for k in keys:
            off, on = float(by.loc[False, k]), float(by.loc[True, k])
            out.append({"lambda_global": lg, "lambda_local": ll, "feature_layer": layer, "statistic": k,
                        "sfl_off": off, "sfl_on": on, "on/off": on / off if off else np.nan})
    return pd.DataFrame(out)


class Weights(NamedTuple):
    """The arrays of :func:`jlml_lib.results.plots.plot_selection_norms` (``plot_selection_norms(*w)``)."""

    groups: np.ndarray   # W_L's (unit, stripe) group ℓ1 norms, units in their own order (balance across stripes)
    columns: np.ndarray  # W_G's input-column ℓ2 norms, largest first (Eq. 1)
    within: np.ndarray   # W_L's Hoyer sparsity inside each (unit, stripe) group (Eq. 2)


def weights(out: str | Path, cell: Cell, seed: int) -> Weights:
    """What 08's pictures show for one trained run (:func:`jlml_lib.results.plots.plot_selection_norms`)."""
    run_dir = RunDir(Path(out) / f"{cell.name}-s{seed}")
    if not run_dir.final.exists():
        raise ConfigError(f"{run_dir.final} does not exist: run the grid for {cell.name}, seed {seed} first.")
    model, _ = load_model(run_dir.final)
    return Weights(selection.unit_stripe_norms(model), selection.sorted_column_norms(model),
                   selection.unit_stripe_hoyer(model))
