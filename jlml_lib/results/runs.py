"""Reading finished runs: a run folder's record, log, summary and CMC curves.

The folder layout is :class:`jlml_lib.paths.RunDir`'s; the record schema is
:mod:`jlml_lib.results.records`'. Notebooks and figures read runs through these functions only.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from jlml_lib.paths import JOINT, RunDir
from jlml_lib.results.records import read_metrics
from jlml_lib.results.tables import Record, scan_records


def read_record(run_dir: str | os.PathLike, feature: str | None = None) -> dict[str, Any]:
    """The run's ``metrics.json`` (joint feature) or its ``eval-<feature>/metrics.json``, validated."""
    return read_metrics(RunDir(run_dir).eval_dir(feature or JOINT))


def read_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's ``log.jsonl`` as a DataFrame (one row per logged iteration; empty when absent)."""
    path = RunDir(run_dir).log
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return pd.DataFrame(rows)


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's ``summary.json`` (wall time, images/s, ...), or ``{}`` before the run has finished."""
    path = RunDir(run_dir).summary
    return json.loads(path.read_text()) if path.exists() else {}


def split_curves(run_dir: str | os.PathLike, feature: str = JOINT) -> dict[str, list[float]]:
    """The CMC of every split of a multi-split run (its ``split-NN`` folders), keyed by folder name."""
    return {split.path.name: read_record(split, feature)["metrics"]["cmc"] for split in RunDir(run_dir).splits()}


def records_under(*run_dirs: str | os.PathLike) -> list[Record]:
    """Every valid record below these folders (the runs a notebook trained)."""
    return [rec for d in run_dirs for rec in scan_records(d)[0]]


def cmc_curves(runs_root: str | os.PathLike) -> dict[str, list[float]]:
    """Every CMC stored in a record under ``runs_root`` (notebook 09), oldest first, labelled
    "<dataset> <query type> <feature> (<real|synthetic>, <run id tail>)"."""
    curves: dict[str, list[float]] = {}
    for rec in sorted(scan_records(runs_root)[0], key=lambda r: r["created"]):
        for key, value in rec["_flat"].items():
            if key.rsplit(".", 1)[-1] != "cmc" or not isinstance(value, list) or not value:
                continue
            label = (f"{rec['dataset']} {key[:-4] or ''} {rec['variant']['feature']} "
                     f"({rec['source']}, {rec['run_id'][-8:]})")
            curves[label] = value
    return curves
