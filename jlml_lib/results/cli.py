"""The results commands: ``jlml tables`` and ``jlml complexity`` (each ``(argv) -> exit status``).

    jlml tables [--runs DIR] [--out DIR]   regenerate results/tables/ from the runs' metrics.json
    jlml complexity [--size H W]           print Table 1's output sizes and Table 13's counts

The logic they drive is :mod:`jlml_lib.results.tables` and :mod:`jlml_lib.complexity`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jlml_lib.complexity import layer_output_sizes, table13_measured
from jlml_lib.model import jlml_resnet39
from jlml_lib.paths import REPO_ROOT, RUNS, TABLES
from jlml_lib.results.tables import build_tables


def tables(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jlml tables", description="Paper | ours | Δ | source tables, regenerated from the runs' metrics.json.")
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / RUNS,
                        help=f"folder searched recursively for metrics.json (default: {RUNS}/)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / TABLES,
                        help=f"where the tables are written (default: {TABLES}/)")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"jlml tables: {args.runs} does not exist; every cell will say 'no run'.", file=sys.stderr)
    paths = build_tables(args.runs, args.out)
    print(f"jlml tables: wrote {len(paths)} files to {args.out}")
    return 0


def complexity(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jlml complexity", description="Model size and cost: Table 1's output sizes and Table 13's "
                                            "parameters and FLOPs.")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    args = parser.parse_args(argv)
    size = tuple(args.size)
    print(f"Table 1 output sizes at {size[0]}×{size[1]} (H×W):")
    for key, (h, w) in layer_output_sizes(jlml_resnet39(1000), size).items():
        print(f"  {key:<12} {h}×{w}")
    print("\nTable 13 (parameters without the final classifier; MACs and FLOPs = 2×MACs):")
    print(f"  {'model':<14} {'params (M)':>10} {'MACs':>10} {'FLOPs':>10} {'depth':>5} {'streams':>7}")
    for c in table13_measured(size):
        print(f"  {c.name:<14} {c.params / 1e6:>10.2f} {c.macs:>10.3g} {c.flops:>10.3g} {c.depth:>5} {c.streams:>7}")
    return 0

