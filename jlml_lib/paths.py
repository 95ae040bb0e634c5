"""Where things are: the repository root and every file and folder name of a run.

One owner for the run-folder layout. A run folder (``jlml train --out DIR``) holds::

    config.json            the TrainConfig and the data source (written first)
    log.jsonl              one line per ``log_every`` iterations
    checkpoints/last.pt    resumable, atomic (``--resume``)
    checkpoints/final.pt   the trained weights (``--init`` of the next stage, inference)
    summary.json           training facts (wall time, images/s, metrics of every feature kind)
    metrics.json           the joint feature's record (``jlml_lib.results.records``)
    queries.npz            beside every evaluation's metrics.json: what each query scored
                           (``jlml_lib.results.queries``; intervals and paired differences)
    eval-<kind>/           the records of the other feature kinds (global, local)
    eval-<kind>-rerank/    k-reciprocal re-ranked evaluations (``eval_rerank=true``; beyond the paper)
    split-NN/              one run per split (``--splits``); DIR/metrics.json is their aggregate
    seed-NN/               one run per seed (``--seeds``), each possibly with splits; DIR/metrics.json
                           is the seed aggregate (its own variant: never a split aggregate's cell)
    fingerprint.json       what shaped a run launched from a notebook (options, data, --init hash,
                           code), written after it succeeded; ``jlml_lib.workbook.reuse``

A run that a notebook would replace is moved aside to ``DIR.previous-<UTC time>`` (:data:`SET_ASIDE`),
never deleted (``jlml_lib.workbook.launch``).

Everything else imports these names instead of spelling them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: the checkout (or source tree) this package was imported from
REPO_ROOT = Path(__file__).resolve().parents[1]
#: where the notebooks and `jlml workbook` put their runs (relative to the repository root)
RUNS = "runs"
#: the CUHK03+Market-1501 stage that 06 (VIPeR) and 07 (GRID) share (§3 "Implementation")
REID_PRETRAINING_STAGE = "runs/cuhk03+market1501"
#: the ImageNet pre-training run of 03, whose final checkpoint starts 04-08
IMAGENET_STAGE = "runs/03_imagenet_pretraining"
#: where 01 leaves its Table 2 records (one dataset_stats record per dataset)
DATA_STATS = "runs/01_data_preparation"
#: the workbook's notebooks, their executed copies (`jlml workbook`), the paper's transcribed
#: tables and the regenerated paper-vs-ours tables (`jlml tables`), relative to the root
NOTEBOOKS = "notebooks"
EXECUTED = "results/executed"
PAPER = "results/paper"
TABLES = "results/tables"
#: the quick synthetic run as the repository shows it (committed; jlml_lib.workbook.publish)
PUBLISHED = "results/synthetic-run"
#: beside the executed copies: the last measured time of each notebook (`jlml workbook`'s ETA)
TIMINGS = "timings.json"

#: `jlml evaluate`'s records when no --out is given, one folder per model and test set (issue 20)
EVALUATIONS = "runs/evaluations"
#: the folder under $JLML_CACHE (jlml_lib.data.base.cache_dir) of the features `jlml evaluate`
#: extracted, one file per model hash and image list (issue 20)
FEATURE_CACHE = "features"

CONFIG = "config.json"
LOG = "log.jsonl"
SUMMARY = "summary.json"
METRICS = "metrics.json"
QUERIES = "queries.npz"  # per-query results beside a metrics.json (issue 12)
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
FINAL = "final.pt"
JOINT = "joint"  # the feature kind recorded in the run folder itself (§2.3)
FINGERPRINT = "fingerprint.json"
#: a run folder set aside instead of deleted is renamed DIR + SET_ASIDE + UTC time
SET_ASIDE = ".previous-"


def repo_root() -> Path:
    return REPO_ROOT


def is_set_aside(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in a run folder set aside by a re-run (``DIR.previous-<time>``): kept
    for the user, not a current result."""
    return any(SET_ASIDE in part for part in Path(path).parts)


def in_repo(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else relative to the repository root (not the working folder:
    JupyterLab, papermill and nbval each start kernels in a different one)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


@dataclass(frozen=True)
class RunDir:
    """The files of one run folder; ``RunDir(path).final`` etc. Nothing is created here."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def queries(self) -> Path:
        return self.path / QUERIES

    @property
    def fingerprint(self) -> Path:
        return self.path / FINGERPRINT

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def final(self) -> Path:
        return self.checkpoints / FINAL

    def eval_dir(self, kind: str, rerank: bool = False) -> Path:
        """Where feature kind ``kind``'s metrics.json goes: joint in the run folder, others in
        ``eval-<kind>/``; a re-ranked evaluation (``eval_rerank``) in ``eval-<kind>-rerank/``."""
        if rerank:
            return self.path / f"eval-{kind}-rerank"
        return self.path if kind == JOINT else self.path / f"eval-{kind}"

    def eval_dirs(self) -> list[Path]:
        """The run's ``eval-<kind>[-rerank]/`` folders that exist (not its splits or seeds)."""
        return [p for p in sorted(self.path.glob("eval-*")) if p.is_dir()]

    def split(self, k: int) -> "RunDir":
        return RunDir(self.path / f"split-{int(k):02d}")

    def seed(self, k: int) -> "RunDir":
        """One seed's run of a multi-seed run (``--seeds``)."""
        return RunDir(self.path / f"seed-{int(k):02d}")

    def seeds(self) -> list["RunDir"]:
        return [RunDir(p) for p in sorted(self.path.glob("seed-[0-9][0-9]")) if p.is_dir()]

    def splits(self) -> list["RunDir"]:
        """The split runs of a multi-split run, in split order (empty for a single run)."""
        return [RunDir(p) for p in sorted(self.path.glob("split-[0-9][0-9]")) if p.is_dir()]

    def first_run(self) -> "RunDir":
        """The run itself, or its first seed / split: where a single model's log and checkpoint are."""
        seeds = self.seeds()
        if seeds:
            return seeds[0].first_run()
        splits = self.splits()
        return splits[0] if splits else self
