"""Per-dataset test protocols on top of :func:`jlml_lib.evaluation.rank_metrics_from_features` (paper §3, Table 2).

Each protocol has a ``*_features`` function that works on precomputed features (the seam the
tests use, and what a notebook uses to re-score saved features); :func:`evaluate` extracts the
features of a model for one :class:`~jlml_lib.data.ReidDataset` split and dispatches on
``dataset.protocol``. :func:`aggregate` averages per-split results (mean and standard deviation).

Protocols (choices the paper leaves open are stated here and recorded in every result):

``market1501`` (Zheng et al. 2015)
    Single query: every query against the whole ``bounding_box_test`` gallery, official rules
    (junk = same pid and camera, and pid -1; pid 0 distractors are negatives). Multi-query (when
    ``extras["gt_bbox"]`` is present): the query feature is the **mean** of the ``gt_bbox``
    features with the query's pid and camera (the official code's mean pooling); a query with no
    such box keeps its own feature (counted in ``mq_fallbacks``).
``cuhk03-classic`` (Li et al. 2014; the paper's Table 5)
    Single-shot: the queries are all view-1 images of the split's 100 test ids; in each of
    ``num_draws`` = 10 seeded draws the gallery is **one random image per test id** among its
    images from a camera none of that id's queries uses (view 2); CMC and mAP are averaged over
    the draws (their spread is kept as ``*_std``). One direction only (view 1 → view 2), as
    open-reid/torchreid do. The 20 splits are averaged by :func:`aggregate`.
``cuhk03-new`` (Zhong et al. 2017)
    The 767/700 split with the Market-1501 rules (single query).
``viper``, ``grid``
    Single-shot CMC: VIPeR cam_a probes against the cam_b gallery of the split's 316 test ids;
    GRID the 125 test probes against the 125 matching gallery images plus the 775 pid-0
    distractors (ordinary negatives). The true match counts wherever it is, so camera ids play no
    part (the classic protocol; for VIPeR query and gallery cameras differ anyway). Splits are
    averaged by :func:`aggregate`.

Distances: L2 on the chosen feature (``kind``, default the 1,024-D joint feature, §2.3), ranked
from the features in blocks (:func:`~jlml_lib.evaluation.rank_metrics_from_features`: the result
of the dense matrix without it). ``rerank``: ``None`` (the paper's plain distances) or k-reciprocal
re-ranking options (:func:`jlml_lib.reranking.rerank_options`; beyond the paper), recorded in the
result as ``rerank``; for CUHK03-classic it re-ranks within each drawn gallery.

Per-query results (issue 12): every ``*_features`` result also carries, under the private key
:data:`QUERIES_KEY`, a :class:`~jlml_lib.results.queries.QueryResults` per *section* -- named
after where its means sit in the result: ``"top"`` (VIPeR, GRID, CUHK03; CUHK03-classic's holds
its gallery draws), ``"single_query"`` / ``"multi_query"`` (Market-1501, whose top-level numbers
are the single-query ones). They are not JSON: :func:`pop_queries` takes them out (the training
engine writes them to ``queries.npz`` beside ``metrics.json``), :func:`evaluate` returns its
result without them unless asked, and :func:`aggregate` ignores them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import AP_MODES, rank_metrics_from_features
from jlml_lib.reranking import rerank_options
from jlml_lib.results.queries import TOP_SECTION, QueryResults

PROTOCOLS = ("market1501", "cuhk03-classic", "cuhk03-new", "viper", "grid")
CLASSIC_DRAWS = 10  # Li et al. 2014 single-shot: 10 random gallery draws per split
#: the private key of a result under which its per-query results travel ({section: QueryResults})
QUERIES_KEY = "_queries"

FeatureSet = tuple[Any, Any, Any]  # (features N×D, pids, camids)

__all__ = [
    "PROTOCOLS",
    "CLASSIC_DRAWS",
    "market1501_features",
    "cuhk03_classic_features",
    "market_rules_features",
    "single_shot_features",
    "multi_query_features",
    "evaluate_features",
    "evaluate",
    "feature_sets",
    "describe",
    "aggregate",
    "QUERIES_KEY",
    "pop_queries",
]


def _unpack(name: str, fs: FeatureSet) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    try:
        f, p, c = fs
    except (TypeError, ValueError):
        raise DataError(f"{name}: expected a (features, pids, camids) triple") from None
    f = f if isinstance(f, torch.Tensor) else torch.as_tensor(np.asarray(f))
    p = np.asarray(p, dtype=np.int64).reshape(-1)
    c = np.asarray(c, dtype=np.int64).reshape(-1)
    if f.ndim != 2 or not (f.shape[0] == len(p) == len(c)):
        raise DataError(
            f"{name}: features {tuple(f.shape)} must be N×D with N = len(pids) = len(camids) "
            f"(got {len(p)} pids, {len(c)} camids)"
        )
    if f.shape[0] == 0:
        raise DataError(f"{name}: no images (empty list); check the dataset split")
    return f, p, c


def _result(protocol: str, m, rerank: Any = None, **extra: Any) -> dict[str, Any]:
    out = {"protocol": protocol}
    out.update(m.to_dict())
    if rerank is not None:
        out["rerank"] = rerank_options(rerank)
    out.update(extra)
    return out


def _rerank(rerank: Any) -> Any:
    """``None`` or the checked options (an error here, before any work)."""
    return None if rerank is None or rerank is False else rerank_options(rerank)


def market_rules_features(
    protocol: str, query: FeatureSet, gallery: FeatureSet, *, ap: str = "official", max_rank: int = 50,
    rerank: Any = None,
) -> dict[str, Any]:
    """Every query against the whole gallery with the Market-1501 rules (single query)."""
    qf, qp, qc = _unpack(f"{protocol} query", query)
    gf, gp, gc = _unpack(f"{protocol} gallery", gallery)
    rerank = _rerank(rerank)
    m = rank_metrics_from_features(qf, gf, qp, gp, qc, gc, ap=ap, max_rank=max_rank, rerank=rerank)
    out = _result(protocol, m, rerank, num_gallery=len(gp))
    out[QUERIES_KEY] = {TOP_SECTION: QueryResults.from_metrics(m, qp, qc, num_gallery=len(gp))}
    return out


def multi_query_features(query: FeatureSet, gt_bbox: FeatureSet) -> tuple[torch.Tensor, int]:
    """Multi-query features: each query's feature becomes the mean of the ``gt_bbox`` features
    with its pid and camera. Returns ``(features, fallbacks)``; a query with no such box keeps its
    own feature and counts as a fallback."""
    qf, qp, qc = _unpack("market1501 query", query)
    bf, bp, bc = _unpack("market1501 gt_bbox", gt_bbox)
    if bf.shape[1] != qf.shape[1]:
        raise DataError(f"market1501: gt_bbox features are {bf.shape[1]}-D, query features {qf.shape[1]}-D")
    # one integer key per (pid, camera): pid * span + (cam - cmin), monotone in (pid, cam)
    cmin = int(min(bc.min(), qc.min()))
    span = int(max(bc.max(), qc.max())) - cmin + 1
    bkey, qkey = bp * span + (bc - cmin), qp * span + (qc - cmin)
    keys, inv = np.unique(bkey, return_inverse=True)
    sums = torch.zeros((len(keys), bf.shape[1]), dtype=torch.float64)
    sums.index_add_(0, torch.from_numpy(inv.reshape(-1)), bf.detach().cpu().to(torch.float64))
    counts = np.bincount(inv.reshape(-1), minlength=len(keys))
    means = (sums / torch.from_numpy(counts).unsqueeze(1)).to(qf.dtype)
    loc = np.clip(np.searchsorted(keys, qkey), 0, len(keys) - 1)
    idx = np.where(keys[loc] == qkey, loc, -1)
    out = qf.detach().cpu().clone()
    has = idx >= 0
    if has.any():
        out[torch.from_numpy(np.flatnonzero(has))] = means[torch.from_numpy(idx[has])]
    return out, int((~has).sum())


def market1501_features(
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    ap: str = "official",
    max_rank: int = 50,
    gt_bbox: FeatureSet | None = None,
    rerank: Any = None,
) -> dict[str, Any]:
    """Market-1501 single query, and multi-query when ``gt_bbox`` features are given.

    Returns the single-query metrics at the top level (the paper's headline numbers) and as
    ``single_query``, and the multi-query ones as ``multi_query``.
    """
    sq = market_rules_features("market1501-single-query", query, gallery, ap=ap, max_rank=max_rank, rerank=rerank)
    queries = {"single_query": sq.pop(QUERIES_KEY)[TOP_SECTION]}
    out: dict[str, Any] = {k: v for k, v in sq.items() if k != "protocol"}
    out = {"protocol": "market1501", **out, "single_query": sq}
    if gt_bbox is not None and len(gt_bbox[1]) > 0:
        mqf, fallbacks = multi_query_features(query, gt_bbox)
        _, qp, qc = _unpack("market1501 query", query)
        mq = market_rules_features("market1501-multi-query", (mqf, qp, qc), gallery, ap=ap, max_rank=max_rank,
                                   rerank=rerank)
        queries["multi_query"] = mq.pop(QUERIES_KEY)[TOP_SECTION]
        mq["mq_fallbacks"] = fallbacks
        out["multi_query"] = mq
    out[QUERIES_KEY] = queries
    return out


def single_shot_features(
    protocol: str, query: FeatureSet, gallery: FeatureSet, *, ap: str = "official", max_rank: int = 50,
    rerank: Any = None,
) -> dict[str, Any]:
    """VIPeR / GRID single-shot CMC: every probe against the whole gallery, cameras ignored."""
    qf, qp, qc = _unpack(f"{protocol} query", query)
    gf, gp, _ = _unpack(f"{protocol} gallery", gallery)
    # distinct camera ids for the two sides: no same-camera junk, the true match always counts
    out = market_rules_features(f"{protocol}-single-shot", (qf, qp, np.zeros(len(qp), np.int64)),
                                (gf, gp, np.ones(len(gp), np.int64)), ap=ap, max_rank=max_rank, rerank=rerank)
    # keep the real query cameras on file; the query_key stays the one ranked (placeholder cameras)
    out[QUERIES_KEY][TOP_SECTION] = dataclasses.replace(out[QUERIES_KEY][TOP_SECTION], q_camids=qc)
    return out


def _single_shot_draw(gp: np.ndarray, gc: np.ndarray, qp: np.ndarray, qc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gallery indices of one draw: one random image per pid, from a camera none of its queries uses."""
    qkeys = set(zip(qp.tolist(), qc.tolist()))
    allowed = np.array([(p, c) not in qkeys for p, c in zip(gp.tolist(), gc.tolist())], dtype=bool)
    key = rng.random(len(gp))
    cand = np.flatnonzero(allowed)
    order = cand[np.lexsort((key[cand], gp[cand]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = gp[order][1:] != gp[order][:-1]
    return np.sort(order[first])


def cuhk03_classic_features(
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    ap: str = "official",
    max_rank: int = 50,
    num_draws: int = CLASSIC_DRAWS,
    seed: int = 0,
    rerank: Any = None,
) -> dict[str, Any]:
    """CUHK03 classic single-shot: ``num_draws`` seeded one-image-per-id galleries, averaged."""
    if not isinstance(num_draws, int) or num_draws < 1:
        raise ConfigError(f"cuhk03-classic: num_draws must be a positive integer, got {num_draws!r}")
    qf, qp, qc = _unpack("cuhk03 query", query)
    gf, gp, gc = _unpack("cuhk03 gallery", gallery)
    rerank = _rerank(rerank)
    rng = np.random.default_rng(seed)
    draws, ranked = [], []
    for _ in range(num_draws):
        sel = _single_shot_draw(gp, gc, qp, qc, rng)
        if len(sel) == 0:
            raise DataError("cuhk03-classic: no gallery image lies in a camera other than its queries'")
        m = rank_metrics_from_features(qf, gf[torch.from_numpy(sel)], qp, gp[sel], qc, gc[sel], ap=ap,
                                       max_rank=max_rank, rerank=rerank)
        draws.append(_result("cuhk03-classic-single-shot", m, rerank, num_gallery=len(sel)))
        ranked.append(m)
    out = aggregate(draws, over="draws")
    out["seed"] = int(seed)
    # every draw ranks the same queries (one image per id: the same gallery size): averaged per query later
    out[QUERIES_KEY] = {TOP_SECTION: QueryResults.from_draws(ranked, qp, qc, num_gallery=draws[0]["num_gallery"])}
    return out


def evaluate_features(
    protocol: str,
    query: FeatureSet,
    gallery: FeatureSet,
    *,
    ap: str = "official",
    max_rank: int = 50,
    seed: int = 0,
    gt_bbox: FeatureSet | None = None,
    num_draws: int = CLASSIC_DRAWS,
    rerank: Any = None,
) -> dict[str, Any]:
    """Dispatch on a ``ReidDataset.protocol`` name with precomputed ``(features, pids, camids)``."""
    if ap not in AP_MODES:
        raise ConfigError(f"ap must be one of {AP_MODES}, got {ap!r}")
    rerank = _rerank(rerank)
    if protocol == "market1501":
        return market1501_features(query, gallery, ap=ap, max_rank=max_rank, gt_bbox=gt_bbox, rerank=rerank)
    if protocol == "cuhk03-classic":
        return cuhk03_classic_features(query, gallery, ap=ap, max_rank=max_rank, num_draws=num_draws, seed=seed,
                                       rerank=rerank)
    if protocol == "cuhk03-new":
        return market_rules_features("cuhk03-new", query, gallery, ap=ap, max_rank=max_rank, rerank=rerank)
    if protocol in ("viper", "grid"):
        return single_shot_features(protocol, query, gallery, ap=ap, max_rank=max_rank, rerank=rerank)
    raise ConfigError(f"no test protocol for {protocol!r}; known: {PROTOCOLS}")


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    image_size: tuple[int, int],
    device: Any = "cpu",
    batch_size: int | None = None,
    kind: str = "joint",
    ap: str = "official",
    seed: int = 0,
    flip: bool = False,
    max_rank: int = 50,
    num_draws: int = CLASSIC_DRAWS,
    workers: int = 0,
    rerank: Any = None,
    queries: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on one split of ``dataset`` with the protocol ``dataset.protocol`` names.

    Returns a JSON-ready dict: ``protocol``, ``ap``, ``cmc`` (list), ``rank1/5/10/20``, ``mAP``,
    ``num_queries`` (plus ``single_query``/``multi_query`` for Market-1501 and the draw average
    for CUHK03-classic), and the settings used (``dataset``, ``split``, ``source``, ``kind``,
    ``flip``, and ``rerank`` when re-ranking was asked for). ``queries=True`` keeps the per-query
    results under :data:`QUERIES_KEY` (then it is JSON-ready after :func:`pop_queries`).
    """
    sets = feature_sets(model, dataset, image_size=image_size, device=device, batch_size=batch_size, kind=kind,
                        flip=flip, workers=workers)
    out = evaluate_features(dataset.protocol, sets["query"], sets["gallery"], ap=ap, max_rank=max_rank, seed=seed,
                            gt_bbox=sets["gt_bbox"], num_draws=num_draws, rerank=rerank)
    out = describe(out, dataset, kind=kind, flip=flip)
    if not queries:
        pop_queries(out)
    return out


def feature_sets(model: torch.nn.Module, dataset: Any, *, image_size: tuple[int, int], device: Any = "cpu",
                 batch_size: int | None = None, kind: str = "joint", flip: bool = False,
                 workers: int = 0) -> dict[str, FeatureSet | None]:
    """The ``(features, pids, camids)`` of the query, gallery and (Market-1501) ``gt_bbox`` images:
    extract once, then :func:`evaluate_features` as often as needed (e.g. plain and re-ranked).
    ``batch_size=None``: the device's :data:`jlml_lib.features.EVAL_BATCH`."""
    from jlml_lib.data import build_loader  # lazy: the data package pulls in PIL/h5py
    from jlml_lib.features import eval_batch, extract_features

    protocol = getattr(dataset, "protocol", None)
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"evaluate: dataset {getattr(dataset, 'name', '?')!r} has protocol {protocol!r}, which has no test "
            f"protocol; known: {PROTOCOLS}"
        )

    def feats(items: Sequence[tuple[str, int, int]], part: str) -> FeatureSet:
        if len(items) == 0:
            raise DataError(f"evaluate: the {part} list of {dataset.name!r} split {dataset.split} is empty")
        loader = build_loader(items, image_size=image_size, train=False,
                              batch_size=eval_batch(batch_size, device), workers=workers)
        return extract_features(model, loader, device, kind=kind, flip=flip)

    bbox = dataset.extras.get("gt_bbox") if protocol == "market1501" else None
    return {"query": feats(dataset.query, "query"), "gallery": feats(dataset.gallery, "gallery"),
            "gt_bbox": feats(bbox, "gt_bbox") if bbox else None}


def describe(result: dict[str, Any], dataset: Any, *, kind: str, flip: bool) -> dict[str, Any]:
    """``result`` with the settings that produced it (dataset, split, source, feature kind, flip)."""
    result.update(dataset=dataset.name, split=dataset.split, source=getattr(dataset, "source", None), kind=kind,
                  flip=bool(flip))
    if QUERIES_KEY in result:  # the per-query results name their feature kind too (queries.npz's "kind")
        result[QUERIES_KEY] = {s: dataclasses.replace(q, kind=kind) for s, q in result[QUERIES_KEY].items()}
    return result


def pop_queries(result: dict[str, Any]) -> dict[str, QueryResults]:
    """Take the per-query results out of a protocol's result (which is JSON-ready afterwards):
    ``{section: QueryResults}``, empty when it has none."""
    return dict(result.pop(QUERIES_KEY, None) or {})


# --------------------------------------------------------------------------- aggregation
_SETTINGS = ("protocol", "ap", "kind", "flip", "dataset", "source", "rerank")


def aggregate(results: Sequence[Mapping[str, Any]], *, over: str = "splits") -> dict[str, Any]:
    """Mean and standard deviation over splits (or draws) of per-split results.

    Scalars (``rank*``, ``mAP``, ...) give ``key`` (mean) and ``key_std``; ``cmc`` gives the mean
    curve and ``cmc_std``; nested dicts (Market-1501's ``single_query``/``multi_query``) are
    aggregated the same way. The standard deviation is the sample one (``ddof=1``; 0.0 for a
    single result). Inputs' own ``*_std`` (a CUHK03 split's spread over its draws) are replaced by
    the spread over the inputs. ``protocol``/``ap`` and other settings must agree across results.
    """
    results = list(results)
    if not results:
        raise DataError("aggregate: no results to aggregate")
    first = results[0]
    for r in results[1:]:
        for k in _SETTINGS:
            if r.get(k) != first.get(k):
                raise DataError(
                    f"aggregate: results disagree on {k!r} ({first.get(k)!r} vs {r.get(k)!r}); "
                    "only aggregate runs of the same protocol and settings"
                )
    n = len(results)
    out: dict[str, Any] = {k: first[k] for k in _SETTINGS if k in first}
    out[f"num_{over}"] = n
    for key, val in first.items():
        if key in _SETTINGS or key in ("split", "seed", "splits", QUERIES_KEY) or key.endswith("_std"):
            continue  # an input's own spread (e.g. over CUHK03 draws) gives way to the spread computed here;
            # per-query results are not averaged (jlml_lib.results.intervals reads them from queries.npz)
        if isinstance(val, Mapping):
            subs = [r.get(key) for r in results]
            if all(isinstance(s, Mapping) for s in subs):
                out[key] = aggregate(subs, over=over)
            continue
        vals = [r.get(key) for r in results]
        if key == "cmc":
            lens = {len(v) for v in vals}
            if len(lens) != 1:
                raise DataError(f"aggregate: CMC curves have different lengths {sorted(lens)}; use one max_rank")
            arr = np.asarray(vals, dtype=np.float64)
            out["cmc"] = arr.mean(0).tolist()
            out["cmc_std"] = (arr.std(0, ddof=1) if n > 1 else np.zeros(arr.shape[1])).tolist()
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            arr = np.asarray(vals, dtype=np.float64)
            out[key] = float(arr.mean())
            if not key.startswith("num_") and key != "mq_fallbacks":
                out[f"{key}_std"] = float(arr.std(ddof=1)) if n > 1 else 0.0
    splits = [r.get("split") for r in results]
    if any(s is not None for s in splits):
        out["splits"] = splits
    if any(isinstance(v, float) and math.isnan(v) for v in out.values()):
        raise DataError("aggregate: a metric is NaN; one of the results is incomplete")
    return out
