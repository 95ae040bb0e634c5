"""Does selective feature learning select? feature layer × SFL on/off × λ × seeds (issue 11).

The grid of 08_ablations' Table 12 section (:mod:`jlml_lib.workbook.selection_grid`) from a
shell: short runs on the synthetic smoke profile, measured on the statistic each equation acts on
(:mod:`jlml_lib.selection`): Eq. (1) the sparsity of W_G's input-column norms; Eq. (2) the sparsity
inside W_L's (unit, stripe) groups beside the balance across a unit's stripes; optionally Rank-1 /
mAP. Prints mean ± std over seeds per cell and the on/off ratios, and writes every row (all
statistics, the older across-group ones included) to ``OUT/selection_runs.csv``.

    OMP_NUM_THREADS=1 python benchmarks/sfl_selection.py --out runs/sfl-selection --evaluate   # 2×2 × 3 seeds, both λ
    python benchmarks/sfl_selection.py --out /tmp/sfl --seeds 0 --iterations 20 --lambdas 0.05:0.005   # smoke

Runs are kept in ``OUT/<cell>-s<seed>/`` and reused when the script is run again, so an
interrupted grid continues where it stopped; a run recorded before the Eq. (2) statistics existed
is measured again from its saved model, not retrained. A run with SFL off does not depend on λ: it is
trained once and shown under every λ. ``--trace-every N`` also records the statistics every N
iterations (how fast the selection happens).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from jlml_lib.errors import ConfigError
from jlml_lib.io import write_text
from jlml_lib.model import FEATURE_LAYERS
from jlml_lib.workbook.selection_grid import PAPER, RAISED, effects, grid, table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder of the runs (reused when run again)")
    p.add_argument("--seeds", default="0,1,2", help="comma list (default 0,1,2)")
    p.add_argument("--layers", default=",".join(FEATURE_LAYERS), help=f"comma list of {FEATURE_LAYERS}")
    p.add_argument("--lambdas", default=f"{RAISED[0]}:{RAISED[1]},{PAPER[0]}:{PAPER[1]}",
                   help="comma list of λ_global:λ_local (default: the raised and the paper's)")
    p.add_argument("--iterations", type=int, help="override the smoke profile's 120")
    p.add_argument("--evaluate", action="store_true", help="also evaluate (Rank-1 / mAP, joint feature)")
    p.add_argument("--trace-every", type=int, default=0, help="record the statistics every N iterations")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more TrainConfig settings for every run")
    a = p.parse_args(argv)
    lambdas = [tuple(float(v) for v in pair.split(":")) for pair in a.lambdas.split(",")]
    try:
        rows = grid(a.out, layers=a.layers.split(","), lambdas=lambdas, seeds=[int(s) for s in a.seeds.split(",")],
                    iterations=a.iterations, evaluate=a.evaluate, trace_every=a.trace_every, extra=a.overrides,
                    log=lambda line: print(line, file=sys.stderr, flush=True))
    except ConfigError as exc:
        print(f"sfl_selection: {exc}", file=sys.stderr)
        return 2
    write_text(a.out / "selection_runs.csv", pd.DataFrame(rows).to_csv(index=False))
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table(rows).to_string(index=False))
        print()
        print(effects(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
