"""Does selective feature learning select? feature layer × SFL on/off × λ × seeds (issue 11).

Trains short runs on the synthetic smoke profile and measures what Eqs. (1)–(2) did to W_G and
W_L (:mod:`jlml_lib.selection`), optionally with the re-id evaluation (Rank-1 / mAP). Prints
mean ± std over seeds per cell and writes every row to ``OUT/selection_runs.csv``.

    OMP_NUM_THREADS=1 python benchmarks/sfl_selection.py --out runs/sfl-selection          # 2×2 × 3 seeds, both λ
    python benchmarks/sfl_selection.py --out /tmp/sfl --seeds 0 --iterations 20 --lambdas 0.05:0.005   # smoke

Runs are kept in ``OUT/<cell>-s<seed>/`` (``selection.json`` next to the run's own files) and
reused when the script is run again, so an interrupted grid continues where it stopped. A run
with SFL off does not depend on λ: it is trained once and shown under every λ. ``--trace-every
N`` also records the statistics every N iterations (how fast the selection happens).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from jlml_lib import selection
from jlml_lib.engine.checkpoint import load_model
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError
from jlml_lib.io import write_json, write_text
from jlml_lib.losses import LAMBDA
from jlml_lib.model import FEATURE_LAYERS
from jlml_lib.paths import RunDir
from jlml_lib.train import run

RAISED = (0.05, 0.005)   # λ_global, λ_local large enough to show the mechanism in 300 smoke iterations
PAPER = (LAMBDA, LAMBDA)  # §2.2 after Eq. (5)
SHOWN = ("wg_col_l2_hoyer", "wg_col_frac_below_1pct", "wl_group_l1_hoyer", "wl_stripes_90_mean",
         "wl_within_group_hoyer_mean", "wg_col_l2_max", "wl_group_l1_max")


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
    return [Cell(layer, sfl, lg, ll) for lg, ll in lambdas for layer in layers for sfl in (True, False)]


def run_one(cell: Cell, seed: int, out: Path, *, iterations: int | None, evaluate: bool,
            trace_every: int = 0, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Train (or reuse) one run and return its row: the cell, the seed, the statistics, Rank-1/mAP."""
    run_dir = RunDir(out / f"{cell.name}-s{seed}")
    record = run_dir.path / "selection.json"
    if record.exists():
        saved = json.loads(record.read_text())
        want = {"iterations": iterations or saved["row"]["iterations"], "extra": list(extra)}
        have = {"iterations": saved["row"]["iterations"], "extra": saved.get("extra", list(extra))}
        if want != have:
            raise ConfigError(f"{run_dir.path} was trained with {have}, this grid asks for {want}; "
                              "choose another --out for other settings.")
        if saved.get("evaluated") or not evaluate:
            return saved["row"]
    overrides = [f"seed={seed}", f"feature_layer={cell.feature_layer}", f"sfl={str(cell.sfl).lower()}",
                 f"lambda_global={cell.lambda_global}", f"lambda_local={cell.lambda_local}",
                 f"evaluate={str(evaluate).lower()}", "progress=false", *extra]
    fields = {} if iterations is None else {"iterations": iterations}
    cfg = make_config("smoke", overrides, **fields)
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


def table(rows: list[dict[str, Any]], cols: Sequence[str] = SHOWN) -> pd.DataFrame:
    """Mean ± std over seeds per (λ, feature layer, SFL) cell; SFL-off rows repeated under every λ."""
    df = pd.DataFrame(rows)
    cols = [c for c in (*cols, "rank1", "mAP") if c in df]
    keys = ["lambda_global", "lambda_local", "feature_layer", "sfl"]
    g = df.groupby(keys)[cols]
    mean, std = g.mean(), g.std(ddof=1)
    out = mean.map(lambda v: f"{v:.4f}").astype(str) + " ± " + std.fillna(0).map(lambda v: f"{v:.4f}")
    out["n"] = g.size()
    return out.reset_index()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder of the runs (reused when run again)")
    p.add_argument("--seeds", default="0,1,2", help="comma list (default 0,1,2)")
    p.add_argument("--layers", default=",".join(FEATURE_LAYERS), help=f"comma list of {FEATURE_LAYERS}")
    p.add_argument("--lambdas", default=f"{RAISED[0]}:{RAISED[1]},{PAPER[0]}:{PAPER[1]}",
                   help="comma list of λ_global:λ_local (default: the raised and the paper's)")
    p.add_argument("--iterations", type=int, help="override the smoke profile's 300")
    p.add_argument("--evaluate", action="store_true", help="also evaluate (Rank-1 / mAP, joint feature)")
    p.add_argument("--trace-every", type=int, default=0, help="record the statistics every N iterations")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more TrainConfig settings for every run")
    a = p.parse_args(argv)
    lambdas = [tuple(float(v) for v in pair.split(":")) for pair in a.lambdas.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    grid = cells(a.layers.split(","), lambdas)
    rows = []
    for cell in grid:
        for seed in seeds:
            try:
                row = run_one(cell, seed, a.out, iterations=a.iterations, evaluate=a.evaluate,
                              trace_every=a.trace_every, extra=a.overrides)
            except ConfigError as exc:
                print(f"sfl_selection: {exc}", file=sys.stderr)
                return 2
            rows.append({**row, "lambda_global": cell.lambda_global, "lambda_local": cell.lambda_local})
            print(f"{cell.name} seed {seed}: " + ", ".join(f"{k}={row[k]:.4f}" for k in SHOWN[:5]),
                  file=sys.stderr, flush=True)
    write_text(a.out / "selection_runs.csv", pd.DataFrame(rows).to_csv(index=False))
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
