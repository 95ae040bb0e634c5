"""CMC and mAP exactly as the re-id benchmarks define them (design §5; paper §3, "Evaluation Protocol").

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

Speed: no sort of the gallery. Only the ranks of the good images matter: for a chunk of queries,
a monotone bucketing of the distances (a few linear passes) and a histogram count the non-junk
images ranked before each good image, and only the few images that share a bucket with a good
image are compared exactly (see ``_before_by_buckets``). No Python loop over queries; memory is
``O(chunk × gallery)``. The result is identical, bit for bit in CMC and to float rounding in AP,
to the per-query MATLAB logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from jlml_lib.errors import ConfigError, DataError

AP_MODES = ("official", "standard")

__all__ = ["AP_MODES", "RankMetrics", "rank_metrics", "pairwise_distances"]


@dataclass(frozen=True)
class RankMetrics:
    """Result of :func:`rank_metrics`.

    ``cmc``: fractions in [0, 1], length ``max_rank``; ``mAP``: fraction; ``num_queries``: queries
    counted (all of them for ``ap="official"``, those with a good match for ``"standard"``);
    ``ap``: the AP convention used. ``query_ap`` (per query, ``NaN`` where not counted) and
    ``first_rank`` (1-based non-junk rank of the first good image, 0 when there is none) are
    there for diagnostics and plots.
    """

    cmc: np.ndarray
    mAP: float
    num_queries: int
    ap: str
    query_ap: np.ndarray = field(repr=False)
    first_rank: np.ndarray = field(repr=False)

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ConfigError(f"rank {k} is outside 1..{len(self.cmc)} (max_rank); pass a larger max_rank")
        return float(self.cmc[k - 1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``ap``, ``cmc`` (list), ``rank1/5/10/20`` (where available), ``mAP``, ``num_queries``."""
        out: dict[str, Any] = {"ap": self.ap, "cmc": [float(v) for v in self.cmc]}
        for k in (1, 5, 10, 20):
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
        out["mAP"] = float(self.mAP)
        out["num_queries"] = int(self.num_queries)
        return out


# --------------------------------------------------------------------------- input checking
def _labels(name: str, values: Any, n: int | None) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"rank_metrics: {name} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"rank_metrics: {name} must hold integer ids, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise DataError(
            f"rank_metrics: {name} has {arr.shape[0]} entries but distmat has {n} "
            f"{'rows (queries)' if name.startswith('q_') else 'columns (gallery images)'}; "
            "distmat must be queries × gallery"
        )
    return arr.astype(np.int64, copy=False)


def _distances(distmat: Any) -> torch.Tensor:
    """A 2-D CPU float tensor sharing memory with ``distmat`` where possible (no copy of numpy input)."""
    if isinstance(distmat, torch.Tensor):
        d = distmat.detach().cpu()
    else:
        arr = np.asarray(distmat)
        if arr.dtype == object:
            raise DataError("rank_metrics: distmat must be a numeric array (queries × gallery)")
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


# --------------------------------------------------------------------------- the ranking core
def _specials(
    dc: torch.Tensor,
    q_start: np.ndarray,
    q_len: np.ndarray,
    q_cam: np.ndarray,
    g_order: np.ndarray,
    g_cam: np.ndarray,
    g_junk: np.ndarray,
    official: bool,
) -> dict[str, np.ndarray]:
    """Same-pid gallery images of each query ("specials"), sorted by (distance, gallery index).

    Only these can be good or same-camera junk, so all per-query bookkeeping happens on these
    small ``B × K`` arrays. The "markers" are the good images whose ranks decide AP and CMC (all
    good images for ``official``; the non-junk ones for ``standard``), in ranking order.
    """
    b = dc.shape[0]
    ks = max(int(q_len.max(initial=0)), 1)
    col = np.arange(ks)
    valid = col[None, :] < q_len[:, None]
    # g_order lists the gallery grouped by pid, ascending gallery index within a pid, so each row
    # of p is ascending and a stable sort by distance yields (distance, index) order.
    p = g_order[np.where(valid, q_start[:, None] + col[None, :], 0)]
    d = dc.gather(1, torch.from_numpy(p)).numpy().copy()  # dc's dtype: bit-identical thresholds
    d[~valid] = np.inf  # distances are checked finite, so padding sorts last
    same_cam = g_cam[p] == q_cam[:, None]
    gjunk = g_junk[p]
    good = valid & ~same_cam
    nonjunk = good & ~gjunk  # same pid: non-junk <=> other camera and pid not in junk_pids
    kept = valid & ~gjunk  # among the counted (pid not in junk_pids) gallery columns
    marker = good if official else nonjunk
    so = np.argsort(d, axis=1, kind="stable")
    sd, sp, smark, skept, snj = (np.take_along_axis(x, so, axis=1) for x in (d, p, marker, kept, nonjunk))
    km = max(int(smark.sum(1).max(initial=0)), 1)
    posm = np.argsort(~smark, axis=1, kind="stable")[:, :km]  # where the markers sit, in order
    tvalid = np.take_along_axis(smark, posm, axis=1)
    zero = np.zeros((b, 1), dtype=np.int64)
    cnj = np.concatenate([zero, np.cumsum(snj, axis=1)], axis=1)  # exclusive prefix counts
    ckept = np.concatenate([zero, np.cumsum(skept, axis=1)], axis=1)
    return {
        "t": np.where(tvalid, np.take_along_axis(sd, posm, axis=1), np.inf).astype(d.dtype),
        "tidx": np.take_along_axis(sp, posm, axis=1),
        "tvalid": tvalid,
        "thit": np.take_along_axis(snj, posm, axis=1) & tvalid,
        "ngood": good.sum(1) if official else smark.sum(1),
        # specials ranked before each marker: the non-junk ones (they count), and those among the
        # counted columns (the gallery-wide count includes them and must not)
        "special_before": np.take_along_axis(cnj, posm, axis=1),
        "kept_before": np.take_along_axis(ckept, posm, axis=1),
    }


_NUM_BUCKETS = 4096


def _before_by_buckets(
    dk: torch.Tensor, kept_cols: np.ndarray, s: dict[str, np.ndarray], fbuf: torch.Tensor, ibuf: torch.Tensor
) -> np.ndarray:
    """Non-junk gallery images ranked before each marker, without sorting the gallery.

    ``dk``: distances to the gallery columns ``kept_cols`` (pids not in ``junk_pids``). Each
    distance goes to one of ``M + 1`` buckets, ``trunc(clamp((d - a) * c, 0, M))`` with a per-row
    ``a, c`` spanning the markers' distances. Each step is one correctly rounded IEEE operation, so
    the map is monotone and gives equal distances equal buckets; the markers go through the same
    operations in the same dtype. An image in a lower bucket than a marker's therefore ranks before
    it, one in a higher bucket after it, and only the few images sharing a marker's bucket need the
    exact comparison: distance, then gallery index (the stable-sort tie rule). Cost: a handful of
    linear passes over the chunk (a sort, or even ``torch.searchsorted``, is ~10-100x slower).
    """
    t, tv, tidx = s["t"], s["tvalid"], s["tidx"]
    b, km = t.shape
    dt = dk.numpy().dtype
    m = _NUM_BUCKETS
    has = tv.any(1)
    with np.errstate(all="ignore"):
        lo = np.where(has, np.min(np.where(tv, t, np.inf), axis=1), 0.0).astype(np.float64)
        hi = np.where(has, np.max(np.where(tv, t, -np.inf), axis=1), 0.0).astype(np.float64)
        span = hi - lo
        span = np.where(np.isfinite(span) & (span > 0), span, np.maximum(np.abs(lo), 1.0))
        width = span / (m - 4)  # markers land in buckets 2..M-2; the end buckets take the rest
        a = (lo - 2.0 * width).astype(dt)[:, None]
        c = (1.0 / width).astype(dt)[:, None]
    bad = ~(np.isfinite(a) & np.isfinite(c) & (c > 0))
    a[bad], c[bad] = 0, 1  # any monotone map keeps the result exact; a poor one is only slower
    with np.errstate(all="ignore"):
        tb = np.clip((t - a) * c, 0, m)  # exactly the torch ops below, in the same dtype
    tb = np.where(tv, tb, 0).astype(np.int64)

    f = torch.sub(dk, torch.from_numpy(a), out=fbuf)
    f.mul_(torch.from_numpy(c)).clamp_(0, m)
    idx = ibuf.copy_(f)  # float -> int truncates, = floor for values >= 0
    nb = m + 1
    idx += torch.arange(b, dtype=idx.dtype).unsqueeze(1) * nb
    flat = idx.numpy().reshape(-1)  # numpy's bincount / take / flatnonzero beat torch's on CPU here
    hist = np.bincount(flat, minlength=b * nb).reshape(b, nb)
    below = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(hist, axis=1)], axis=1)
    count = np.take_along_axis(below, tb, axis=1)  # images in lower buckets than each marker

    # images sharing a bucket with one of their row's markers: exact comparison
    shared = np.zeros(b * nb, dtype=bool)
    shared[(tb + np.arange(b)[:, None] * nb)[tv]] = True
    pos = np.flatnonzero(shared[flat])
    if len(pos):
        r, col = np.divmod(pos, dk.shape[1])
        v = dk.numpy().reshape(-1)[pos][:, None]
        g = kept_cols[col][:, None]
        e_bucket = (flat[pos] - r * nb)[:, None]
        tr = t[r]
        before = (v < tr) | ((v == tr) & (g < tidx[r]))
        extra = np.zeros((b, km), dtype=np.int64)
        np.add.at(extra, r, (before & (tb[r] == e_bucket) & tv[r]).astype(np.int64))
        count += extra
    return count - s["kept_before"] + s["special_before"]


def _before_by_sort(
    dc: torch.Tensor, qp: np.ndarray, qc: np.ndarray, gp: np.ndarray, gc: np.ndarray, g_junk: np.ndarray, tidx: np.ndarray
) -> np.ndarray:
    """The same counts from a stable sort of each row: a second, independent path (``_method="sort"``)."""
    order = torch.sort(dc, dim=1, stable=True).indices.numpy()
    nonjunk = ~(g_junk[None, :] | ((gp[None, :] == qp[:, None]) & (gc[None, :] == qc[:, None])))
    snj = np.take_along_axis(nonjunk, order, axis=1)
    excl = np.cumsum(snj, axis=1) - snj  # non-junk images strictly before each position
    inv = np.empty_like(order)
    np.put_along_axis(inv, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return np.take_along_axis(excl, np.take_along_axis(inv, tidx, axis=1), axis=1)


def _ap_and_first(before: np.ndarray, s: dict[str, np.ndarray], official: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: AP, first good rank (0 = none) and whether it is counted."""
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
            ap = np.cumsum(term, axis=1)[:, -1] / ngood
            counted = ngood > 0
            ap = np.where(counted, ap, np.nan)
    first = np.where(tv[:, 0], rank[:, 0], 0)
    return ap, first, counted


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
    """CMC and mAP of a query × gallery distance matrix under the Market-1501 rules (module doc).

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
    if ap not in AP_MODES:
        raise ConfigError(f"rank_metrics: ap must be one of {AP_MODES}, got {ap!r}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ConfigError(f"rank_metrics: max_rank must be a positive integer, got {max_rank!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ConfigError(f"rank_metrics: chunk must be a positive integer, got {chunk!r}")
    if _method not in ("buckets", "sort"):
        raise ConfigError(f"rank_metrics: unknown _method {_method!r}")
    d = _distances(distmat)
    nq, ng = d.shape
    qp = _labels("q_pids", q_pids, nq)
    gp = _labels("g_pids", g_pids, ng)
    qc = _labels("q_camids", q_camids, nq)
    gc = _labels("g_camids", g_camids, ng)
    if nq == 0:
        raise DataError("rank_metrics: the query set is empty (distmat has 0 rows)")
    if ng == 0:
        raise DataError("rank_metrics: the gallery is empty (distmat has 0 columns)")
    official = ap == "official"
    junk = np.asarray(list(junk_pids), dtype=np.int64)
    g_junk = np.isin(gp, junk)
    keep = np.flatnonzero(~g_junk)
    keep_t = torch.from_numpy(keep) if len(keep) < ng else None

    # Gallery grouped by pid (CSR): each query's same-pid images without a query × gallery scan.
    g_order = np.argsort(gp, kind="stable")
    upids, start, counts = np.unique(gp[g_order], return_index=True, return_counts=True)
    loc = np.clip(np.searchsorted(upids, qp), 0, len(upids) - 1)
    found = upids[loc] == qp
    q_start = np.where(found, start[loc], 0)
    q_len = np.where(found, counts[loc], 0)

    # Similar numbers of same-pid images per chunk keep the padded threshold lists short.
    q_order = np.argsort(q_len, kind="stable")
    query_ap = np.full(nq, np.nan)
    first_rank = np.zeros(nq, dtype=np.int64)
    counted = np.zeros(nq, dtype=bool)
    n_good = np.zeros(nq, dtype=np.int64)
    _check_finite(d)
    # Buffers reused across chunks: fresh multi-MB allocations (page faults) cost as much as the work.
    cb = min(chunk, nq)
    rows_buf = torch.empty((cb, ng), dtype=d.dtype)
    keep_buf = torch.empty((cb, len(keep)), dtype=d.dtype) if keep_t is not None else None
    f_buf = torch.empty((cb, len(keep)), dtype=d.dtype)
    i_buf = torch.empty((cb, len(keep)), dtype=torch.int64)
    for c0 in range(0, nq, chunk):
        rows = q_order[c0 : c0 + chunk]
        b = len(rows)
        dc = torch.index_select(d, 0, torch.from_numpy(rows), out=rows_buf[:b])
        s = _specials(dc, q_start[rows], q_len[rows], qc[rows], g_order, gc, g_junk, official)
        if _method == "sort":
            before = _before_by_sort(dc, qp[rows], qc[rows], gp, gc, g_junk, s["tidx"])
        else:
            dk = dc if keep_buf is None else torch.index_select(dc, 1, keep_t, out=keep_buf[:b])
            before = _before_by_buckets(dk, keep, s, f_buf[:b], i_buf[:b])
        a, f, cnt = _ap_and_first(before, s, official)
        query_ap[rows], first_rank[rows], counted[rows] = a, f, cnt
        n_good[rows] = s["ngood"]

    n_counted = int(counted.sum())
    if not np.any(n_good):
        raise DataError(
            f"rank_metrics: none of the {nq} queries has a good match in the gallery (same pid, another camera"
            f"{'' if official else ', not junk'}); check that query and gallery come from the same test split "
            "and that camera ids are right"
        )
    hits = first_rank[counted]
    hist = np.bincount(np.clip(hits, 0, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
    cmc = np.cumsum(hist) / n_counted
    return RankMetrics(
        cmc=cmc,
        mAP=float(np.mean(query_ap[counted])),
        num_queries=n_counted,
        ap=ap,
        query_ap=query_ap,
        first_rank=first_rank,
    )


def pairwise_distances(
    q: Any, g: Any, *, chunk: int = 1024, dtype: torch.dtype = torch.float64, device: Any = None
) -> np.ndarray:
    """Euclidean (L2) distances between the rows of ``q`` (N×D) and ``g`` (M×D), as an N×M numpy array.

    The paper matches with the L2 distance on the 1,024-D joint feature (§2.3). Computed as
    ``sqrt(max(|q|² + |g|² - 2 q·g, 0))`` in ``dtype`` (float64 by default, like MATLAB's
    ``pdist2``, so cancellation does not reorder near-ties), ``chunk`` query rows at a time, on
    ``device`` (default: the features' device).
    """
    qt = q if isinstance(q, torch.Tensor) else torch.as_tensor(np.asarray(q))
    gt = g if isinstance(g, torch.Tensor) else torch.as_tensor(np.asarray(g))
    if qt.ndim != 2 or gt.ndim != 2:
        raise DataError(f"pairwise_distances: features must be 2-D (N×D), got {tuple(qt.shape)} and {tuple(gt.shape)}")
    if qt.shape[1] != gt.shape[1]:
        raise DataError(
            f"pairwise_distances: query features are {qt.shape[1]}-D but gallery features are {gt.shape[1]}-D; "
            "extract both with the same model and kind"
        )
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"pairwise_distances: chunk must be a positive integer, got {chunk!r}")
    dev = torch.device(device) if device is not None else qt.device
    qt = qt.detach().to(dev, dtype)
    gt = gt.detach().to(dev, dtype)
    g2 = (gt * gt).sum(1)
    out = np.empty((qt.shape[0], gt.shape[0]), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    for s in range(0, qt.shape[0], chunk):
        qc = qt[s : s + chunk]
        d2 = (qc * qc).sum(1, keepdim=True) + g2.unsqueeze(0) - 2.0 * (qc @ gt.T)
        out[s : s + chunk] = d2.clamp_min_(0).sqrt_().cpu().numpy()
    return out
