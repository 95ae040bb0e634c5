"""The paper's Tables 1 and 13 beside our counts (notebooks/02_model.ipynb), and Table 13's record.

The counting itself (parameters, MACs, output sizes, and the conventions) is
:mod:`jlml_lib.complexity`; this module only puts it beside ``results/paper/table{1,13}.csv`` and
writes the ``complexity`` metrics.json that fills Table 13 in ``jlml tables``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from jlml_lib.complexity import CONVENTION, layer_output_sizes, table13_measured
from jlml_lib.model import JLML, jlml_resnet39
from jlml_lib.results.paper import load_paper_table
from jlml_lib.results.records import write_complexity


def table1(model: JLML | None = None, input_size: tuple[int, int] = (224, 224)) -> pd.DataFrame:
    """Table 1 (results/paper/table1.csv) with the output sizes measured on our model."""
    paper = load_paper_table(1)
    sizes = layer_output_sizes(model if model is not None else jlml_resnet39(1000), input_size)
    prefix = {"shared": "", "global": "G: ", "local": "L: "}

    def measured(row) -> str:
        hw = (1, 1) if row.layer == "fc" else sizes.get(f"{prefix[row.branch]}{row.layer}")
        return "" if hw is None else f"{hw[0]}×{hw[1]}"

    def printed(row) -> str:
        return "" if pd.isna(row.output_h) else f"{int(row.output_h)}×{int(row.output_w)}"

    out = pd.DataFrame({
        "layer": paper.layer, "branch": paper.branch, "kernel / widths": paper.kernel_widths,
        "blocks": paper.blocks,
        "paper output": paper.apply(printed, axis=1),
        "measured output": paper.apply(measured, axis=1),
    })
    # Table 1 prints no size on the pooling row (it is implied by conv2_x): nothing to compare there
    out["match"] = [(p == m) if p else None for p, m in zip(out["paper output"], out["measured output"])]
    return out


def table13(input_size: tuple[int, int] = (224, 224)) -> pd.DataFrame:
    """Table 13: the paper's row beside ours for every model, with our MACs and FLOPs (= 2×MACs)."""
    paper = load_paper_table(13).set_index("model_key")
    rows = []
    for cost in table13_measured(input_size):
        p = paper.loc[cost.key]
        rows.append({
            "model": p["model"],
            "paper FLOPs": float(p["flops"]), "our MACs": cost.macs, "our FLOPs (2×MACs)": cost.flops,
            "paper params (M)": float(p["params_million"]), "our params (M)": round(cost.params / 1e6, 2),
            "paper depth": int(p["depth"]), "our depth": cost.depth,
            "streams": cost.streams,
        })
    return pd.DataFrame(rows)


def write_complexity_record(out_dir: str | os.PathLike, input_size: tuple[int, int] = (224, 224)) -> Path:
    """Measure every Table 13 row and write it as a ``complexity`` metrics.json (for `jlml tables`)."""
    start = time.perf_counter()
    costs = table13_measured(input_size)
    models = {c.key: {"flops": c.macs, "flops_2mac": c.flops, "params": c.params, "depth": c.depth,
                      "streams": c.streams} for c in costs}
    return write_complexity(out_dir, models=models, convention=CONVENTION,
                            config={"input_size": list(input_size)}, wall_time_s=time.perf_counter() - start)
