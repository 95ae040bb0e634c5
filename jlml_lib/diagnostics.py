"""Where a trained re-id model fails: the analyses of notebook 10 (beyond the paper's tables).

All of them work on query and gallery features with the Market-1501 rules of
:mod:`jlml_lib.evaluation` (a *positive* pair is the same person seen by another camera; the same
person in the same camera, and pid ``-1`` boxes, are junk and left out; everything else,
pid ``0`` distractors included, is a *negative*), on the paper's L2 distance (§2.3):

* :func:`pair_distances`: the distance of every positive and every negative (query, gallery)
  pair; :func:`roc_curve` and :func:`tpr_at_fpr` read the verification view off them (accept a
  pair when its distance is at most a threshold);
* :func:`camera_pair_rank1`: Rank-1 of the queries of camera *a* against the gallery of camera
  *b* only, for every *a* ≠ *b*;
* :func:`worst_queries`: the queries with the lowest AP, and :func:`ranked_gallery`: what a
  query sees first (junk skipped);
* :func:`run_features` / :func:`branch_metrics`: a run's model re-extracted from its checkpoint,
  and Rank-1 / mAP / mINP of its global, local and joint features (Table 9's view of one run),
  beside what the run recorded (:func:`recorded`); :func:`run_data` / :func:`check_data`: the data
  it was trained on, so that it is diagnosed on its own test set.

Ranking itself is always :func:`jlml_lib.evaluation.rank_metrics_from_features`; nothing here
re-implements CMC, AP or mINP.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from jlml_lib.data import build_loader
from jlml_lib.distances import pairwise_distances
from jlml_lib.engine.checkpoint import load_model
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import RankMetrics, rank_metrics_from_features
from jlml_lib.features import extract_features
from jlml_lib.model import FEATURE_KINDS
from jlml_lib.paths import METRICS, RunDir
from jlml_lib.results.runs import read_record

__all__ = ["PairDistances", "pair_distances", "roc_curve", "roc_auc", "tpr_at_fpr", "FPR_POINTS",
           "camera_pair_rank1", "camera_label", "worst_queries", "ranked_gallery", "query_table",
           "MARKET_RULES", "run_data", "check_data", "recorded", "RunFeatures", "run_features", "split_joint",
           "branch_metrics"]

#: the false-positive rates at which the verification view is read (issue 14)
FPR_POINTS = (1e-2, 1e-3)


# ---------------------------------------------------------------- positive and negative pairs
@dataclass(frozen=True)
class PairDistances:
    """L2 distances of the positive and of the negative (query, gallery) pairs (float32, unsorted)."""

    positive: np.ndarray
    negative: np.ndarray


def _labels(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} entries but there are {n} feature rows; "
                        "pass one pid and one camera per feature row")
    return arr.astype(np.int64)


def pair_distances(q_feats: Any, g_feats: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, *,
                   junk_pids: Iterable[int] = (-1,), chunk: int = 512) -> PairDistances:
    """Every (query, gallery) distance, split into positives and negatives by the Market-1501 rules.

    Positive: same pid, another camera, pid not in ``junk_pids``. Negative: another pid, not in
    ``junk_pids``. Same pid and same camera is junk and left out, as the evaluation skips it.
    Distances are :func:`jlml_lib.distances.pairwise_distances` (float64), computed ``chunk``
    queries at a time and kept as float32 (4 bytes a pair: the real Market-1501's 66 M negative
    pairs take 265 MB).
    """
    qf = q_feats if isinstance(q_feats, torch.Tensor) else torch.as_tensor(np.asarray(q_feats))
    gf = g_feats if isinstance(g_feats, torch.Tensor) else torch.as_tensor(np.asarray(g_feats))
    qp, qc = _labels("q_pids", q_pids, len(qf)), _labels("q_camids", q_camids, len(qf))
    gp, gc = _labels("g_pids", g_pids, len(gf)), _labels("g_camids", g_camids, len(gf))
    g_junk = np.isin(gp, np.asarray(list(junk_pids), dtype=np.int64))
    pos, neg = [], []
    for s in range(0, len(qf), chunk):
        d = pairwise_distances(qf[s:s + chunk], gf).astype(np.float32)
        same = qp[s:s + chunk, None] == gp[None, :]
        other_cam = qc[s:s + chunk, None] != gc[None, :]
        pos.append(d[same & other_cam & ~g_junk])
        neg.append(d[~same & ~g_junk])
    out = PairDistances(np.concatenate(pos), np.concatenate(neg))
    if not len(out.positive) or not len(out.negative):
        raise DataError(f"pair_distances: {len(out.positive)} positive and {len(out.negative)} negative pairs; "
                        "both kinds are needed (query and gallery must come from the same test split)")
    return out


def roc_curve(pairs: PairDistances) -> tuple[np.ndarray, np.ndarray]:
    """The exact ROC of "accept a pair when distance ≤ t": ``(fpr, tpr)`` from (0, 0) to (1, 1).

    The curve only rises at a positive's distance, so it is evaluated just below and at each
    distinct positive distance (a staircase; a positive and a negative at the same distance
    give a diagonal step): exact, with as many points as positives, however many negatives.
    """
    pos, neg = np.sort(pairs.positive), np.sort(pairs.negative)
    t = np.unique(pos)
    below = np.searchsorted(pos, t, "left") / len(pos), np.searchsorted(neg, t, "left") / len(neg)
    at = np.searchsorted(pos, t, "right") / len(pos), np.searchsorted(neg, t, "right") / len(neg)
    tpr = np.concatenate([[0.0], np.stack([below[0], at[0]], 1).ravel(), [1.0]])
    fpr = np.concatenate([[0.0], np.stack([below[1], at[1]], 1).ravel(), [1.0]])
    return fpr, tpr


def roc_auc(pairs: PairDistances) -> float:
    """Area under :func:`roc_curve`: the probability that a positive pair is closer than a
    negative one (ties count one half)."""
    fpr, tpr = roc_curve(pairs)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(pairs: PairDistances, fpr: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``fpr``.

    With ``n`` negatives at most ``k = floor(fpr · n)`` of them may be accepted, so the threshold
    stays below the (k+1)-th smallest negative distance: TPR = the fraction of positives strictly
    closer than it (1 when ``k`` reaches ``n``). When ``fpr · n < 1`` this is the TPR at FPR 0.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"tpr_at_fpr: fpr must be in [0, 1], got {fpr}")
    neg = np.sort(pairs.negative)
    k = int(np.floor(fpr * len(neg) + 1e-9))  # 1e-9: 0.07 · 100 is 7.000000000000001 in floats
    if k >= len(neg):
        return 1.0
    return float(np.mean(pairs.positive < neg[k]))


# ---------------------------------------------------------------- camera pairs
def camera_label(camid: int) -> str:
    """Cameras are numbered from 1 in the datasets' file names (camids are 0-based)."""
    return f"cam {int(camid) + 1}"


def camera_pair_rank1(q_feats: Any, g_feats: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, *,
                      junk_pids: Iterable[int] = (-1,)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank-1 of the queries of camera a against the gallery of camera b alone, for a ≠ b.

    Returns ``(rank1, queries)``: two cameras × cameras frames (rows: query camera, columns:
    gallery camera, labelled by :func:`camera_label`). ``rank1`` holds fractions over the queries
    of camera a that have a match in camera b (the others cannot be scored there; ``queries``
    counts the ones that can); the diagonal, and a pair with no such query, is NaN. Each cell is
    :func:`~jlml_lib.evaluation.rank_metrics_from_features` on the two subsets (``ap="standard"``:
    it counts exactly the queries with a non-junk match), junk rules as ever.
    """
    junk = list(junk_pids)
    qp, qc = _labels("q_pids", q_pids, len(q_feats)), _labels("q_camids", q_camids, len(q_feats))
    gp, gc = _labels("g_pids", g_pids, len(g_feats)), _labels("g_camids", g_camids, len(g_feats))
    cams = np.unique(np.concatenate([qc, gc]))
    labels = [camera_label(c) for c in cams]
    rank1 = pd.DataFrame(np.nan, index=pd.Index(labels, name="query camera"),
                         columns=pd.Index(labels, name="gallery camera"))
    queries = pd.DataFrame(0, index=rank1.index, columns=rank1.columns)
    for a, la in zip(cams, labels):
        qi = np.flatnonzero(qc == a)
        for b, lb in zip(cams, labels):
            gi = np.flatnonzero(gc == b)
            if a == b or not len(qi) or not len(gi):
                continue
            # a query can be scored here if camera b holds its person (b != a, so that is a match)
            if not np.isin(qp[qi], np.setdiff1d(gp[gi], junk)).any():
                continue
            m = rank_metrics_from_features(q_feats[qi], g_feats[gi], qp[qi], gp[gi], qc[qi], gc[gi],
                                           ap="standard", max_rank=1, junk_pids=junk)
            rank1.loc[la, lb], queries.loc[la, lb] = m.rank(1), m.num_queries
    return rank1, queries


# ---------------------------------------------------------------- single queries
def worst_queries(metrics: RankMetrics, n: int = 8) -> np.ndarray:
    """Indices of the ``n`` queries with the lowest AP, worst first (ties: query order).

    Only queries that have a non-junk match count: a query with nothing to find has AP 0 under
    the official rules but says nothing about the model.
    """
    if metrics.query_inp is None:
        raise ConfigError("worst_queries: this RankMetrics has no per-query mINP (built before it existed); "
                          "recompute it with jlml_lib.evaluation.rank_metrics")
    has_match = np.flatnonzero(np.isfinite(metrics.query_inp))
    order = np.argsort(metrics.query_ap[has_match], kind="stable")
    return has_match[order[:n]]


def ranked_gallery(dist: Any, q_pids: Any, q_camids: Any, g_pids: Any, g_camids: Any, top: int = 10, *,
                   junk_pids: Iterable[int] = (-1,)) -> list[np.ndarray]:
    """Per query (row of ``dist``, queries × gallery), the gallery indices of its ``top`` nearest
    images with junk skipped exactly as the evaluation skips it (pid in ``junk_pids``, or same
    person and same camera); ties in distance by gallery order, as the evaluation breaks them."""
    d = np.asarray(dist)
    qp, qc = _labels("q_pids", q_pids, d.shape[0]), _labels("q_camids", q_camids, d.shape[0])
    gp, gc = _labels("g_pids", g_pids, d.shape[1]), _labels("g_camids", g_camids, d.shape[1])
    g_junk = np.isin(gp, np.asarray(list(junk_pids), dtype=np.int64))
    out = []
    for row, p, c in zip(d, qp, qc):
        order = np.argsort(row, kind="stable")
        keep = ~(g_junk[order] | ((gp[order] == p) & (gc[order] == c)))
        out.append(order[keep][:top])
    return out


def query_table(metrics: RankMetrics, indices: Sequence[int], q_pids: Any, q_camids: Any) -> pd.DataFrame:
    """One row per chosen query: its pid, camera, AP, the non-junk rank of its first match and its
    INP (all from ``metrics``, the evaluation's own per-query results)."""
    idx = np.asarray(indices, dtype=np.int64)
    inp = metrics.query_inp[idx] if metrics.query_inp is not None else np.full(len(idx), np.nan)
    return pd.DataFrame({"query": idx, "pid": np.asarray(q_pids)[idx],
                         "camera": [camera_label(c) for c in np.asarray(q_camids)[idx]],
                         "AP (%)": 100 * metrics.query_ap[idx], "first match at rank": metrics.first_rank[idx],
                         "INP (%)": 100 * inp}).set_index("query")


# ---------------------------------------------------------------- the run and its data
#: test protocols with the Market-1501 rules (camera ids and junk as above)
MARKET_RULES = ("market1501", "cuhk03-new")


def _run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = RunDir(run_dir).first_run().config
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir}: cannot read the run's {path.name} ({exc}); is it a run folder of "
                          "`jlml train` (e.g. notebook 05's out_dir)?") from None


def run_data(run_dir: str | os.PathLike) -> dict[str, str]:
    """What the run was trained and evaluated on, from its config.json: ``dataset``, ``source``
    (real / synthetic) and ``root`` (open it to diagnose the run on its own test set)."""
    parts = _run_config(run_dir).get("components") or []
    if len(parts) != 1:
        raise ConfigError(f"{run_dir}: trained on {len(parts)} datasets; the diagnostics need a run evaluated on "
                          "one test set, e.g. 05's Market-1501 run")
    return dict(parts[0])


def check_data(run_dir: str | os.PathLike, ds: Any) -> None:
    """Refuse to diagnose a run on another dataset or source than it was trained on, or on a test
    protocol without the Market-1501 rules (camera pairs and junk mean nothing there)."""
    trained = run_data(run_dir)
    if ds.name != trained["dataset"] or ds.source != trained["source"]:
        raise ConfigError(f"{run_dir} was trained on {trained['source']} {trained['dataset']} ({trained['root']}), "
                          f"not on {ds.source} {ds.name} ({ds.root}): train it on this data first (notebook 05 "
                          "with the same data_root), or leave data_root=None to use the run's own data")
    if ds.protocol not in MARKET_RULES:
        raise ConfigError(f"{ds.name}: test protocol {ds.protocol!r}; the diagnostics follow the Market-1501 rules "
                          f"({', '.join(MARKET_RULES)})")


def recorded(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The single-query metrics the run itself recorded, per feature kind that it evaluated."""
    run = RunDir(run_dir).first_run()
    out = {}
    for kind in FEATURE_KINDS:
        if (run.eval_dir(kind) / METRICS).exists():
            m = read_record(run.path, kind)["metrics"]
            out[kind] = m.get("single_query", m)
    return out


# ---------------------------------------------------------------- a run's features, per branch
def split_joint(joint: torch.Tensor, global_dim: int) -> dict[str, torch.Tensor]:
    """The joint feature is the global feature followed by the local one (§2.3; the model's
    ``features``): its columns give all three kinds from one extraction."""
    if not 0 < global_dim < joint.shape[1]:
        raise ConfigError(f"split_joint: global_dim={global_dim} must lie inside the {joint.shape[1]}-D joint feature")
    return {"joint": joint, "global": joint[:, :global_dim], "local": joint[:, global_dim:]}


@dataclass
class RunFeatures:
    """A run's model (from its final checkpoint), its config, and the query and gallery features
    of each kind (``FEATURE_KINDS``), extracted as the run's evaluation does."""

    model: torch.nn.Module
    cfg: Any
    query: dict[str, torch.Tensor]
    gallery: dict[str, torch.Tensor]
    q_pids: np.ndarray
    q_camids: np.ndarray
    g_pids: np.ndarray
    g_camids: np.ndarray

    def rank(self, kind: str = "joint", **options: Any) -> RankMetrics:
        """:func:`~jlml_lib.evaluation.rank_metrics_from_features` on feature ``kind`` (the run's AP mode)."""
        options.setdefault("ap", self.cfg.ap)
        return rank_metrics_from_features(self.query[kind], self.gallery[kind], self.q_pids, self.g_pids,
                                          self.q_camids, self.g_camids, **options)

    def labels(self) -> dict[str, np.ndarray]:
        return {"q_pids": self.q_pids, "g_pids": self.g_pids, "q_camids": self.q_camids, "g_camids": self.g_camids}


def run_features(run_dir: str | os.PathLike, ds: Any, device: str = "cpu") -> RunFeatures:
    """Load the run's final model and extract its query and gallery features once.

    Same settings as the run's evaluation (:mod:`jlml_lib.engine.evaluate`): its image size,
    flip averaging and L2 normalisation (both off in the paper); the global and local features
    are the two parts of the joint one (:func:`split_joint`), each normalised on its own when the
    run normalises, as the evaluation of that kind would.
    """
    final = RunDir(run_dir).first_run().final
    if not final.exists():
        raise ConfigError(f"{run_dir}: no trained model at {final}; train the run first (e.g. notebook 05)")
    model, cfg = load_model(final, device)
    gdim = int(model.global_fc_weight.shape[0])

    def feats(items: Sequence[tuple[str, int, int]]) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
        loader = build_loader(items, image_size=cfg.image_size, train=False, batch_size=cfg.eval_batch(device))
        joint, pids, cams = extract_features(model, loader, device, kind="joint", flip=cfg.eval_flip)
        kinds = split_joint(joint, gdim)
        if cfg.eval_normalize:
            kinds = {k: torch.nn.functional.normalize(v, dim=1) for k, v in kinds.items()}
        return kinds, pids, cams

    q, qp, qc = feats(ds.query)
    g, gp, gc = feats(ds.gallery)
    return RunFeatures(model, cfg, q, g, qp, qc, gp, gc)


def branch_metrics(rf: RunFeatures, recorded: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Rank-1, mAP and mINP (%) of each feature kind, single query; ``recorded``: the run's own
    ``{kind: single_query metrics}`` (from its metrics.json), shown beside as a cross-check."""
    rows = []
    for kind in FEATURE_KINDS:
        m = rf.rank(kind)
        row = {"feature": kind, "dims": int(rf.query[kind].shape[1]), "Rank-1": 100 * m.rank(1),
               "mAP": 100 * m.mAP, "mINP": 100 * m.mINP if m.mINP is not None else np.nan}
        if recorded is not None:
            rec = recorded.get(kind) or {}
            row["recorded Rank-1"] = 100 * rec["rank1"] if "rank1" in rec else np.nan
            row["recorded mAP"] = 100 * rec["mAP"] if "mAP" in rec else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("feature")
