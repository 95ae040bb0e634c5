"""The steps the experiment notebooks (03–08) take, one call each: open a dataset, train the
CUHK03+Market-1501 stage of a chain, compare a run with the paper, show ranked lists, list the
ablation variants, rebuild the tables. Kept here so tests can reach them.

Training itself runs as a subprocess (:mod:`jlml_lib.workbook.launch`); reading a finished run is
:mod:`jlml_lib.results.runs`; figures are :mod:`jlml_lib.results.plots`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from jlml_lib.data import ReidDataset, build_loader, load_dataset, resolve_root
from jlml_lib.data.combined import COMBINED
from jlml_lib.diagnostics import ranked_gallery
from jlml_lib.engine.checkpoint import load_model
from jlml_lib.errors import ConfigError
from jlml_lib.evaluation import pairwise_distances
from jlml_lib.features import extract_features
from jlml_lib.paths import JOINT, METRICS, REID_PRETRAINING_STAGE, RUNS, TABLES, RunDir, in_repo
from jlml_lib.results.records import read_metrics
from jlml_lib.results.plots import plot_ranked_lists
from jlml_lib.results.runs import records_under
from jlml_lib.results.tables import build_tables, cells_frame, fill, table_cells
from jlml_lib.workbook.launch import train
from jlml_lib.workbook.notebook import PROFILES, synthetic_banner

#: Tables 9–12: the switches of each variant trained on Market-1501 (every other setting as JLML).
#: Table 9 needs no extra model: it evaluates the full model's global, local and joint features.
ABLATIONS: dict[str, dict[str, Any]] = {
    "jlml": {},                              # the full model (Tables 9–12's reference rows)
    "uniloss": {"head": "uni"},              # Table 10
    "no_shared_conv1": {"shared_conv1": False},  # Table 11
    "no_sfl": {"sfl": False},                # Table 12
}
#: the settings each experiment notebook adds to its training runs (besides device and seed), one
#: owner for the notebooks and the preflight that rehearses them: 04 trains the classic protocol
#: (Table 5; one run per kind of image, ``data.images``), 05 also records re-ranked results (beyond
#: the paper), 08 evaluates every variant's joint, global and local features (Table 9)
RUN_SETTINGS: dict[str, dict[str, Any]] = {
    "04_cuhk03": {"data.protocol": "classic"},
    "05_market": {"eval_rerank": True},
    "08_ablations": {"eval_features": "joint,global,local"},
}


# ---------------------------------------------------------------- data and settings
def open_dataset(name: str, data_root: str | None = None, **options: Any) -> ReidDataset:
    """The user's copy (``data_root``) or the synthetic stand-in, loaded; a banner if synthetic.

    A ``data_root`` that does not hold the dataset raises (never a silent fall-back).
    """
    root, source = resolve_root(name, data_root)
    ds = load_dataset(name, root, **options)
    synthetic_banner(source, f"the {name} images and every number below")
    return ds


def train_profile(profile: str, *, pretraining: bool = False) -> str:
    """The training profile for a notebook's ``profile`` parameter: ``paper`` means Table 4's
    "Train" row, or its "Pre-train" row for ImageNet pre-training; ``smoke`` is the quick CPU run."""
    if profile not in PROFILES:
        raise ConfigError(f"profile must be 'smoke' (quick CPU run) or 'paper' (Table 4), not {profile!r}")
    return "pretrain" if pretraining and profile == "paper" else profile


def default_splits(profile: str, splits: str | None) -> str:
    """Which splits to train: all of them for the paper's protocol, the first one for a smoke run."""
    if splits is not None:
        return str(splits)
    return "all" if profile == "paper" else "0"


def inference_device(device: str) -> str:
    """The device for the notebook's own inference (ranked lists): the notebook's ``device``
    parameter, with "auto" (the training's choice) taken as the CPU."""
    return "cpu" if device == "auto" else device


# ---------------------------------------------------------------- the CUHK03+Market-1501 stage
def reid_pretraining(out_dir: str | os.PathLike = REID_PRETRAINING_STAGE, *, init: str | None, profile: str,
                     cuhk03_root: str | None = None, market1501_root: str | None = None,
                     iterations: int | None = None, nproc: int = 1,
                     overrides: Mapping[str, Any] | None = None, schedule: str = "train") -> Path:
    """The ImageNet → CUHK03+Market-1501 stage of the VIPeR/GRID chain (§3 "Implementation").

    ``schedule``: which row of Table 4 a ``paper`` run of the stage follows — "train" (50K
    iterations, our choice: the paper does not say) or "pretrain" (300K); smoke runs are smoke.

    Returns its final checkpoint. 06 and 07 share the stage (``paths.REID_PRETRAINING_STAGE`` by
    default): a finished one is reused when its fingerprint matches — the same profile, options,
    data, start checkpoint bytes and code (:mod:`jlml_lib.workbook.reuse`); otherwise it is set
    aside and trained again (a smoke model is never reused for a paper run).
    """
    out_dir = in_repo(out_dir)
    final = RunDir(out_dir).final
    opts = dict(overrides or {})
    if cuhk03_root:
        opts["data.cuhk03_root"] = cuhk03_root
    if market1501_root:
        opts["data.market1501_root"] = market1501_root
    if schedule not in ("train", "pretrain"):
        raise ConfigError(f"schedule must be 'train' or 'pretrain' (Table 4's rows), not {schedule!r}")
    stage_profile = train_profile(profile, pretraining=schedule == "pretrain")
    # launch.train reuses a finished stage trained with the same options, data, start checkpoint
    # (its bytes) and code, and sets any other aside (jlml_lib.workbook.reuse): 07 reuses 06's
    train(COMBINED, out_dir, profile=stage_profile, init=init, iterations=iterations,
          nproc=nproc, overrides={**opts, "evaluate": False}, log_every_line=10)
    return final


# ---------------------------------------------------------------- results
def compare(table: int, *run_dirs: str | os.PathLike) -> pd.DataFrame:
    """Paper | ours with its 95% interval (low, high) | Δ | source for the cells of ``table`` that these runs
    fill (Δ for real data only, with whether the paper's number lies inside our interval); Tables
    9-12 add ours − the full model with its paired interval (``vs_full``, ``vs_full_low/high``)."""
    frame = cells_frame(fill(table_cells(table), records_under(*run_dirs)))
    paired = [c for c in ("vs_full", "vs_full_low", "vs_full_high") if c in frame]
    frame = frame[["row", "column", "paper", "ours", "low", "high", "delta", "paper_in_interval", *paired,
                   "source"]].rename(columns={"delta": "Δ", "paper_in_interval": "paper in CI"})
    return frame.round({c: 2 for c in ("ours", "low", "high", "Δ", *paired)})


def reranking_rows(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Market-1501 single- and multi-query Rank-1 / mAP (%) of a run, plain and after k-reciprocal
    re-ranking (``eval_rerank=true``): rows beside Table 6 that are beyond the paper."""
    rows = []
    for label, rerank in (("JLML (ours)", False), ("JLML + re-ranking (ours, beyond the paper)", True)):
        folder = RunDir(run_dir).eval_dir(JOINT, rerank=rerank)
        if not (folder / METRICS).exists():
            continue
        rec = read_metrics(folder)
        row = {"method": label, "source": rec["source"]}
        for query in ("single_query", "multi_query"):
            m = rec["metrics"].get(query)
            if m:
                tag = "SQ" if query == "single_query" else "MQ"
                row.update({f"{tag} R1": round(100 * m["rank1"], 2), f"{tag} mAP": round(100 * m["mAP"], 2)})
        if rerank:
            row["k1, k2, λ"] = ", ".join(str(v) for v in rec["metrics"]["single_query"]["rerank"].values())
        rows.append(row)
    return pd.DataFrame(rows)


def ranked_lists(run_dir: str | os.PathLike, ds: ReidDataset, *, n_queries: int = 4, top: int = 10,
                 device: str = "cpu", seed: int = 0) -> Figure:
    """``n_queries`` random queries and their top-``top`` gallery images under the run's final model
    (L2 on the joint feature). Junk (pid -1, or same person and same camera) is skipped exactly as
    the evaluation skips it (:func:`jlml_lib.diagnostics.ranked_gallery`)."""
    model, cfg = load_model(RunDir(run_dir).final, device)
    rng = np.random.default_rng(seed)
    q_idx = sorted(rng.choice(len(ds.query), size=min(n_queries, len(ds.query)), replace=False).tolist())
    queries = [ds.query[i] for i in q_idx]

    def feats(items):
        loader = build_loader(items, image_size=cfg.image_size, train=False, batch_size=cfg.eval_batch(device))
        return extract_features(model, loader, torch.device(device))[0]

    dist = np.asarray(pairwise_distances(feats(queries), feats(ds.gallery)))
    tops = ranked_gallery(dist, [p for _, p, _ in queries], [c for _, _, c in queries],
                          [p for _, p, _ in ds.gallery], [c for _, _, c in ds.gallery], top)
    return plot_ranked_lists(queries, [[ds.gallery[g] for g in t] for t in tops])


def update_tables(*tables: int, runs_dir: str | os.PathLike = RUNS,
                  tables_dir: str | os.PathLike = TABLES) -> list[Path]:
    """Rebuild ``results/tables/`` once from every run's metrics.json (`jlml tables`); return the
    Markdown files of ``tables`` (a notebook's own tables)."""
    out = in_repo(tables_dir)
    build_tables(in_repo(runs_dir), out)
    return [out / f"table{n}.md" for n in tables]
