"""CMC, mAP and mINP exactly as the re-id benchmarks define them (design §5, §5a; paper §3, "Evaluation Protocol").

Rules (official Market-1501 evaluation, Zheng et al. ICCV 2015; ``evaluation.m`` and
``compute_AP.m`` of the Market-1501 / IDE baseline MATLAB code):

* for a query, *good* gallery images have the same pid and another camera;
* *junk* images are those with the same pid and the same camera, and every image whose pid is in
  ``junk_pids`` (Market-1501's ``-1_*`` boxes); junk is skipped without advancing the rank;
* everything else, pid ``0`` distractors included, is an ordinary negative;
* the ranking is ``sort(dist, 'ascend')``; MATLAB's ``sort`` is stable, so **ties in distance are
  broken by gallery order** (the earlier gallery image ranks first). We do the same.

Two AP conventions (``ap=``):

``"official"``
    ``compute_AP.m``: walk the ranking, skipping junk; at the non-junk position ``r`` (1-based)
    with ``h`` good hits so far, ``recall = h/ngood`` and ``precision = h/r``; accumulate
    ``ap += (recall - old_recall) * (old_precision + precision) / 2`` starting from
    ``old_recall = 0``, ``old_precision = 1``. A query with no good image gives ``NaN`` there and
    ``evaluation.m`` sets it to 0 (``ap(isnan(ap)) = 0``) and keeps the query in both the mean AP
    and the CMC (which is all zeros for it). ``num_queries`` is therefore every query.
    (Degenerate case kept exactly as MATLAB does it: if the query's own pid is in ``junk_pids``,
    its "good" images are also junk; they mark the CMC at the position the next non-junk image
    would take, but never count as AP hits.)
``"standard"``
    Non-interpolated AP, the mean of the precision at each good hit (torchreid's
    ``eval_market1501`` / fast-reid), with the junk rules above (torchreid drops only same-pid
    same-camera images; the ``junk_pids`` rule is the official one). Queries with no good match
    are skipped, and ``num_queries`` counts the others.

CMC: the first good image at non-junk rank ``r`` counts as a match at every rank ``>= r``
(``cmc(n-njunk:end) = 1``); ``cmc[k-1]`` is the fraction of counted queries matched within rank
``k``. Ranks beyond the gallery size repeat the last value, so the array always has
``max_rank`` entries.

mINP (beyond the paper; Ye et al., "Deep Learning for Person Re-identification", TPAMI 2021,
§4.1): per query, the number of non-junk good images over the non-junk rank of the *last* one
(how much of the list an operator must read to find them all); the mean over the queries that
have one, in both AP modes.

Speed: no sort of the gallery. Only the ranks of the good images matter: for a chunk of queries,
a monotone bucketing of the distances (a few linear passes) and a histogram count the non-junk
images ranked before each good image, and only the few images that share a bucket with a good
image are compared exactly (see ``count_before``). No Python loop over queries; memory is
``O(chunk × gallery)``. The result is identical, bit for bit in CMC and to float rounding in AP,
to the per-query MATLAB logic.

From features (:func:`rank_metrics_from_features`): the same counts without the query × gallery
matrix. Distances come in ``chunk × gallery_chunk`` blocks of float32 (or float64) products
(:mod:`jlml_lib.distances`) whose rounding error has a proven bound; the bands of the bucketing
above are widened by that bound, so an image outside a good image's band ranks before or after it
for certain, and only the images inside are recomputed per pair in float64 and compared exactly.
Float32 products are about twice as fast as float64 ones, but their bound is wide enough to send
tens (clustered features) to hundreds (noise) of images per query to that recomputation; with
float64 products (``precision="float64"``) the band holds hardly any image but exact ties. The
result is that of ``rank_metrics`` on float64 Euclidean distances, ties broken by gallery order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from jlml_lib import distances as dist
from jlml_lib.distances import pairwise_distances
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.ranks import PRECISIONS, DenseRanker, Layout, stream

AP_MODES = ("official", "standard")

__all__ = ["AP_MODES", "RankMetrics", "rank_metrics", "rank_metrics_from_features", "pairwise_distances",
           "query_key"]


@dataclass(frozen=True)
class RankMetrics:
    """Result of :func:`rank_metrics` / :func:`rank_metrics_from_features`.

    ``cmc``: fractions in [0, 1], length ``max_rank``; ``mAP``: fraction; ``num_queries``: queries
    counted (all of them for ``ap="official"``, those with a good match for ``"standard"``);
    ``ap``: the AP convention used. ``query_ap`` (per query, ``NaN`` where not counted) and
    ``first_rank`` (1-based non-junk rank of the first good image, 0 when there is none) are
    there for diagnostics, plots and bootstrap intervals. Optional (``None`` in results built
    before they existed): ``mINP`` (module doc) with ``query_inp`` per query (``NaN`` for a query
    without a non-junk good image), and ``query_key`` (:func:`query_key` of the query list, so that
    two results over the same queries can be paired).
    """

    cmc: np.ndarray
    mAP: float
    num_queries: int
    ap: str
    query_ap: np.ndarray = field(repr=False)
    first_rank: np.ndarray = field(repr=False)
    mINP: float | None = None
    query_inp: np.ndarray | None = field(default=None, repr=False)
    query_key: str | None = None

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ConfigError(f"rank {k} is outside 1..{len(self.cmc)} (max_rank); pass a larger max_rank")
        return float(self.cmc[k - 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``ap``, ``cmc`` (list), ``rank1/5/10/20`` (where available), ``mAP``,
        ``num_queries``, and ``mINP`` / ``query_key`` when present (readers must not require them)."""
        out: dict[str, Any] = {"ap": self.ap, "cmc": [float(v) for v in self.cmc]}
        for k in (1, 5, 10, 20):
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
        out["mAP"] = float(self.mAP)
        if self.mINP is not None:
            out["mINP"] = float(self.mINP)
        out["num_queries"] = int(self.num_queries)
        if self.query_key is not None:
            out["query_key"] = self.query_key
        return out


def query_key(q_pids: Any, q_camids: Any) -> str:
    """A short digest (16 hex digits) of the query pids and cameras, in order.

    Equal keys mean the same queries in the same order, so per-query results can be paired
    (issue 12's paired bootstrap); any change of pid, camera, order or count changes the key.
    """
    qp = np.ascontiguousarray(np.asarray(q_pids).reshape(-1), dtype="<i8")
    qc = np.ascontiguousarray(np.asarray(q_camids).reshape(-1), dtype="<i8")
    h = hashlib.sha256(b"jlml-queries-v1")
    h.update(len(qp).to_bytes(8, "little"))
    h.update(qp.tobytes())
    h.update(qc.tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- input checking
def _labels(name: str, values: Any, n: int | None, against: str = "distmat") -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"rank_metrics: {name} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"rank_metrics: {name} must hold integer ids, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        if against == "distmat":
            what = f"distmat has {n} {'rows (queries)' if name.startswith('q_') else 'columns (gallery images)'}"
            fix = "distmat must be queries × gallery"
        else:
            what = f"{name[0]}_feats has {n} rows"
            fix = "pass one pid and one camera per feature row"
        raise DataError(f"rank_metrics: {name} has {arr.shape[0]} entries but {what}; {fix}")
    return arr.astype(np.int64, copy=False)


def _distances(distmat: Any) -> torch.Tensor:
    """A 2-D CPU float tensor sharing memory with ``distmat`` where possible (no copy of numpy input)."""
    if isinstance(distmat, torch.Tensor):
        d = distmat.detach().cpu()
    else:
        arr = np.asarray(distmat)
        if arr.dtype.kind not in "biuf":  # strings, objects, complex: no distance order
            raise DataError(f"rank_metrics: distmat must be a numeric array (queries × gallery), got dtype "
                            f"{arr.dtype}; pass the distances as numbers (e.g. pairwise_distances(q, g))")
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        d = torch.from_numpy(np.ascontiguousarray(arr))
    if d.ndim != 2:
        raise DataError(f"rank_metrics: distmat must be 2-D (queries × gallery), got shape {tuple(d.shape)}")
    if d.dtype not in (torch.float32, torch.float64):
        # Integers are exact in float64 (|x| < 2**53), and half precision gains nothing from staying small.
        d = d.to(torch.float64)
    return d


def _check_finite(d: torch.Tensor) -> None:
    # One summing pass is enough when all is well: a NaN or inf anywhere makes the sum non-finite.
    if bool(torch.isfinite(d.sum())):
        return
    bad = (~torch.isfinite(d)).nonzero()
    if len(bad) == 0:  # the sum merely overflowed
        return
    i, j = int(bad[0, 0]), int(bad[0, 1])
    kind = "NaN" if np.isnan(float(d[i, j])) else "an infinite value"
    raise DataError(
        f"rank_metrics: distmat holds {kind} at [query {i}, gallery {j}] ({len(bad)} non-finite entries in all); "
        "distances must be finite (check the features for NaN/inf, e.g. a diverged model)"
    )


def _check_options(ap: str, max_rank: Any, chunk: Any, where: str) -> None:
    if ap not in AP_MODES:
        raise ConfigError(f"{where}: ap must be one of {AP_MODES}, got {ap!r}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ConfigError(f"{where}: max_rank must be a positive integer, got {max_rank!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"{where}: chunk must be a positive integer, got {chunk!r}")


# --------------------------------------------------------------------------- labels, once per problem
def _layout(q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any, nq: int, ng: int, junk_pids: Iterable[int],
            ap: str, against: str = "distmat") -> Layout:
    qp = _labels("q_pids", q_pids, nq, against)
    gp = _labels("g_pids", g_pids, ng, against)
    qc = _labels("q_camids", q_camids, nq, against)
    gc = _labels("g_camids", g_camids, ng, against)
    dense = against == "distmat"
    if nq == 0:
        raise DataError(f"rank_metrics: the query set is empty ({'distmat has 0 rows' if dense else 'q_feats has 0 rows'})")
    if ng == 0:
        raise DataError(f"rank_metrics: the gallery is empty ({'distmat has 0 columns' if dense else 'g_feats has 0 rows'})")
    g_junk = np.isin(gp, _labels("junk_pids", list(junk_pids), None))
    # Gallery grouped by pid (CSR): each query's same-pid images without a query × gallery scan.
    g_order = np.argsort(gp, kind="stable")
    upids, start, counts = np.unique(gp[g_order], return_index=True, return_counts=True)
    loc = np.clip(np.searchsorted(upids, qp), 0, len(upids) - 1)
    found = upids[loc] == qp
    q_len = np.where(found, counts[loc], 0)
    return Layout(qp, gp, qc, gc, ap == "official", g_junk, np.flatnonzero(~g_junk), g_order,
                   np.where(found, start[loc], 0), q_len, np.argsort(q_len, kind="stable"))


# --------------------------------------------------------------------------- per-query results
class _PerQuery:
    """Per-query results, filled chunk by chunk, and the final :class:`RankMetrics`."""

    def __init__(self, nq: int) -> None:
        self.ap = np.full(nq, np.nan)
        self.first = np.zeros(nq, dtype=np.int64)
        self.counted = np.zeros(nq, dtype=bool)
        self.ngood = np.zeros(nq, dtype=np.int64)
        self.inp = np.full(nq, np.nan)

    def add(self, rows: np.ndarray, before: np.ndarray, s: dict[str, np.ndarray], official: bool) -> None:
        tv, hit, ngood = s["tvalid"], s["thit"], s["ngood"].astype(np.int64)
        rank = before.astype(np.int64) + 1
        h = np.cumsum(hit, axis=1).astype(np.float64)  # good hits so far, this one included
        r = rank.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if official:
                ng = ngood[:, None].astype(np.float64)
                prec = h / r
                prev = np.where(rank > 1, (h - 1.0) / (r - 1.0), 1.0)
                # Same operations, in the same order, as compute_AP.m; positions that are not hits add
                # exactly 0 there (recall unchanged), so the sequential cumsum reproduces its sum.
                term = np.where(hit, (h / ng - (h - 1.0) / ng) * ((prev + prec) / 2.0), 0.0)
                ap = np.cumsum(term, axis=1)[:, -1]
                counted = np.ones(len(ngood), dtype=bool)
                ap = np.where(ngood > 0, ap, 0.0)  # evaluation.m: ap(isnan(ap)) = 0
            else:
                term = np.where(hit, h / r, 0.0)
                ap = np.cumsum(term, axis=1)[:, -1]
                counted = ngood > 0
                ap = np.where(counted, ap / ngood, np.nan)
            n_hit = hit.sum(1)
            last = np.max(np.where(hit, rank, 0), axis=1)
            inp = np.where(n_hit > 0, n_hit / last, np.nan)  # Ye et al.: |good| / rank of the hardest
        self.ap[rows], self.counted[rows], self.ngood[rows], self.inp[rows] = ap, counted, ngood, inp
        self.first[rows] = np.where(tv[:, 0], rank[:, 0], 0)

    def finish(self, lay: Layout, ap: str, max_rank: int) -> RankMetrics:
        nq = len(self.ap)
        if not np.any(self.ngood):
            raise DataError(
                f"rank_metrics: none of the {nq} queries has a good match in the gallery (same pid, another camera"
                f"{'' if lay.official else ', not junk'}); check that query and gallery come from the same test split "
                "and that camera ids are right"
            )
        n_counted = int(self.counted.sum())
        hits = self.first[self.counted]
        hist = np.bincount(np.clip(hits, 0, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
        has_inp = np.isfinite(self.inp)
        return RankMetrics(
            cmc=np.cumsum(hist) / n_counted,
            mAP=float(np.mean(self.ap[self.counted])),
            num_queries=n_counted,
            ap=ap,
            query_ap=self.ap,
            first_rank=self.first,
            mINP=float(np.mean(self.inp[has_inp])) if has_inp.any() else None,
            query_inp=self.inp,
            query_key=query_key(lay.qp, lay.qc),
        )


# --------------------------------------------------------------------------- public API
def rank_metrics(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    ap: str = "official",
    max_rank: int = 50,
    junk_pids: Iterable[int] = (-1,),
    chunk: int = 256,
    _method: str = "buckets",
) -> RankMetrics:
    """CMC, mAP and mINP of a query × gallery distance matrix under the Market-1501 rules (module doc).

    ``distmat[i, j]``: distance of query ``i`` to gallery image ``j`` (smaller = more similar;
    numpy or torch, float32/float64; integers are converted to float64). Ties are broken by
    gallery order (stable sort, as MATLAB's ``sort``). ``ap``: ``"official"`` (``compute_AP.m``
    trapezoid, queries without a good match count as 0) or ``"standard"`` (mean precision at the
    hits, such queries skipped). ``chunk``: queries processed at once (memory ~ ``chunk × gallery``).
    ``_method``: ``"buckets"`` (the fast path) or ``"sort"`` (a stable sort of every row; slower,
    kept as an independent cross-check for the tests).

    Raises ``DataError`` on shape mismatches, NaN/inf distances, an empty query set or gallery, or
    when no query has a good match; ``ConfigError`` on bad options.
    """
    _check_options(ap, max_rank, chunk, "rank_metrics")
    if _method not in ("buckets", "sort"):
        raise ConfigError(f"rank_metrics: unknown _method {_method!r}")
    d = _distances(distmat)
    nq, ng = d.shape
    lay = _layout(q_pids, g_pids, q_camids, g_camids, nq, ng, junk_pids, ap)
    _check_finite(d)
    out = _PerQuery(nq)
    ranker = DenseRanker(lay, min(chunk, nq), ng, d.dtype, _method)
    rows_buf = torch.empty((min(chunk, nq), ng), dtype=d.dtype)
    for c0 in range(0, nq, chunk):
        rows = lay.q_order[c0 : c0 + chunk]
        dc = torch.index_select(d, 0, torch.from_numpy(rows), out=rows_buf[: len(rows)])
        ranker.rank(dc, rows, out)
    return out.finish(lay, ap, max_rank)


def rank_metrics_from_features(
    q_feats: Any,
    g_feats: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    ap: str = "official",
    max_rank: int = 50,
    junk_pids: Iterable[int] = (-1,),
    rerank: Mapping[str, Any] | bool | None = None,
    chunk: int = 256,
    gallery_chunk: int = 16384,
    precision: str = "float32",
) -> RankMetrics:
    """``rank_metrics(pairwise_distances(q_feats, g_feats), ...)`` without the query × gallery matrix.

    ``q_feats`` (Q × D), ``g_feats`` (G × D): numpy or torch features (the paper's L2 distance on
    them, §2.3, float64 Euclidean, ties by gallery order). Distances are made and ranked in
    ``chunk × gallery_chunk`` blocks (module doc): memory ``O(features + chunk × gallery_chunk)``.
    Same :class:`RankMetrics` as the dense path: CMC and per-query first ranks identical and mAP
    to 1e-9, except where two distances that decide an order differ by less than ~1e-12
    relative (float64 rounding, which differs between any two ways of computing them).

    ``precision``: the products of the blocks, ``"float32"`` (default) or ``"float64"``; the result
    is the same either way (module doc), only the time differs (benchmarks/NOTES.md: float32 is
    faster on identity-clustered features, float64 on pure noise).

    ``rerank``: ``None``/``False`` (plain distances), ``True`` or a mapping of
    :func:`jlml_lib.reranking.k_reciprocal`'s options (``k1``, ``k2``, ``lambda_value``) to rank by
    the k-reciprocal re-ranked distance instead, i.e. the result of
    ``rank_metrics(k_reciprocal(q_feats, g_feats, **rerank), ...)`` (bit for bit, with the same
    ``chunk``), computed a block of queries at a time without any N × N or query × gallery matrix.
    """
    _check_options(ap, max_rank, chunk, "rank_metrics_from_features")
    if precision not in PRECISIONS:
        raise ConfigError(f"rank_metrics_from_features: precision must be one of {list(PRECISIONS)}, "
                          f"got {precision!r}")
    if isinstance(gallery_chunk, bool) or not isinstance(gallery_chunk, (int, np.integer)) or gallery_chunk < 1:
        raise ConfigError(f"rank_metrics_from_features: gallery_chunk must be a positive integer, "
                          f"got {gallery_chunk!r}")
    qf, gf = dist.feature_pair(q_feats, g_feats, "rank_metrics_from_features")
    lay = _layout(q_pids, g_pids, q_camids, g_camids, len(qf), len(gf), junk_pids, ap, against="features")
    out = _PerQuery(len(qf))
    if rerank is not None and rerank is not False:
        from jlml_lib.reranking import _Reranker, rerank_options  # lazy: reranking builds on this module

        rr = _Reranker(qf, gf, **rerank_options(rerank))
        step = min(chunk, rr.rows_per_block)
        ranker = DenseRanker(lay, min(step, len(qf)), len(gf), torch.float32)
        for c0 in range(0, len(qf), step):  # natural order: k_reciprocal's blocks, bit for bit
            rows = np.arange(c0, min(c0 + step, len(qf)))
            ranker.rank(torch.from_numpy(rr.block(rows)), rows, out)
    else:
        stream(lay, qf, gf, out, chunk, gallery_chunk, precision)
    return out.finish(lay, ap, max_rank)

