"""Notebook support: what the workbook's notebooks call and `jlml workbook`, which runs them.

    runner       `jlml workbook`: the notebooks in order through papermill, then the tables
    launch       a training run as a subprocess (`python -m jlml_lib.train` or torchrun)
    reuse        a run's fingerprint: a finished run with the same one is reused, any other set aside
    progress     each notebook's measured time and the remaining time of a workbook run
    selection_grid  08's feature layer × SFL grid (Table 12's mechanism)
    steps        the notebooks' steps: open a dataset, train a chain stage, compare with the
                 paper, ranked lists, the ablation variants, table updates
    notebook     parameter checking (read from the notebook's own parameters cell), paths, banner
    environment  what 00_setup reports: software, devices, datasets
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`jlml workbook` (kept here: ``jlml_lib.workbook.main`` was its entry point)."""
    # imported on call: the runner pulls in papermill, which notebooks importing steps never need
    from jlml_lib.workbook.runner import main as run_workbook

    return run_workbook(argv)
