"""Where each good image ranks: the counting core of :mod:`jlml_lib.evaluation`.

For a chunk of queries, only the ranks of the good images matter (CMC and AP are functions of
them): per query, how many non-junk gallery images come before each good image, ties broken by
gallery index. :class:`DenseRanker` counts them on rows of a distance matrix; :func:`stream` on
blocks of distances made from features, never holding the query × gallery matrix. Both count with
the bucketing of :func:`count_before` (no sort of the gallery); :func:`before_by_sort` is the
independent sort-based path that tests compare with. ``evaluation`` turns the counts into metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from jlml_lib import distances as dist

if TYPE_CHECKING:  # the per-query accumulator the rankers fill (evaluation imports this module)
    from jlml_lib.evaluation import _PerQuery

#: the streamed path's products (the result is the same: only the share of pairs recomputed differs)
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class Layout:
    """The label bookkeeping both paths share: who is junk, and each query's same-pid images."""

    qp: np.ndarray
    gp: np.ndarray
    qc: np.ndarray
    gc: np.ndarray
    official: bool
    g_junk: np.ndarray  # gallery images whose pid is in junk_pids
    keep: np.ndarray  # the other gallery columns
    g_order: np.ndarray  # gallery grouped by pid, ascending index within a pid (CSR)
    q_start: np.ndarray
    q_len: np.ndarray
    q_order: np.ndarray  # queries by number of same-pid images: short padded lists per chunk


def special_index(lay: Layout, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gallery indices ``p`` (b × K, padded) of each query's same-pid images, and which are real."""
    q_len = lay.q_len[rows]
    col = np.arange(max(int(q_len.max(initial=0)), 1))
    valid = col[None, :] < q_len[:, None]
    return lay.g_order[np.where(valid, lay.q_start[rows][:, None] + col[None, :], 0)], valid


# --------------------------------------------------------------------------- the ranking core
def specials(d: np.ndarray, p: np.ndarray, valid: np.ndarray, rows: np.ndarray, lay: Layout) -> dict[str, np.ndarray]:
    """Same-pid gallery images of each query ("specials"), sorted by (distance, gallery index).

    ``d``: their distances (b × K, any padding). Only these can be good or same-camera junk, so all
    per-query bookkeeping happens on these small ``B × K`` arrays. The "markers" are the good
    images whose ranks decide AP and CMC (all good images for ``official``; the non-junk ones for
    ``standard``), in ranking order.
    """
    b = d.shape[0]
    d = d.copy()
    d[~valid] = np.inf  # distances are checked finite, so padding sorts last
    same_cam = lay.gc[p] == lay.qc[rows][:, None]
    gjunk = lay.g_junk[p]
    good = valid & ~same_cam
    nonjunk = good & ~gjunk  # same pid: non-junk <=> other camera and pid not in junk_pids
    kept = valid & ~gjunk  # among the counted (pid not in junk_pids) gallery columns
    marker = good if lay.official else nonjunk
    # each row of p is ascending (g_order), so a stable sort by distance yields (distance, index) order
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
        "ngood": good.sum(1) if lay.official else smark.sum(1),
        # specials ranked before each marker: the non-junk ones (they count), and those among the
        # counted columns (the gallery-wide count includes them and must not)
        "special_before": np.take_along_axis(cnj, posm, axis=1),
        "kept_before": np.take_along_axis(ckept, posm, axis=1),
    }


NUM_BUCKETS = 4096


def bucket_map(low: np.ndarray, high: np.ndarray, tv: np.ndarray, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per row ``a, c`` (dtype ``dt``, b × 1) of the monotone map ``trunc(clamp((x - a) * c, 0, M))``
    spreading the markers' bands ``low..high`` over buckets 2..M-2 (the end buckets take the rest)."""
    m = NUM_BUCKETS
    has = tv.any(1)
    with np.errstate(all="ignore"):
        lo = np.where(has, np.min(np.where(tv, low, np.inf), axis=1), 0.0).astype(np.float64)
        hi = np.where(has, np.max(np.where(tv, high, -np.inf), axis=1), 0.0).astype(np.float64)
        span = hi - lo
        span = np.where(np.isfinite(span) & (span > 0), span, np.maximum(np.abs(lo), 1.0))
        width = span / (m - 4)
        a = (lo - 2.0 * width).astype(dt)[:, None]
        c = (1.0 / width).astype(dt)[:, None]
    bad = ~(np.isfinite(a) & np.isfinite(c) & (c > 0))
    a[bad], c[bad] = 0, 1  # any monotone map keeps the result exact; a poor one is only slower
    return a, c


def bucket_of(x: np.ndarray, tv: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The bucket of each marker value ``x`` (dtype of ``a``): exactly the torch ops of ``count_before``."""
    with np.errstate(all="ignore"):
        b = np.clip((x.astype(a.dtype) - a) * c, 0, NUM_BUCKETS)
    return np.where(tv, b, 0).astype(np.int64)


def count_before(
    dk: torch.Tensor,
    kept_cols: np.ndarray,
    s: dict[str, np.ndarray],
    lo: np.ndarray,
    hi: np.ndarray,
    a: np.ndarray,
    c: np.ndarray,
    exact: Callable[[np.ndarray, np.ndarray], np.ndarray],
    fbuf: torch.Tensor,
    ibuf: torch.Tensor,
) -> np.ndarray:
    """Images of the block ``dk`` (values for gallery columns ``kept_cols``) ranked before each marker.

    Each value goes to one of ``M + 1`` buckets, ``trunc(clamp((v - a) * c, 0, M))``, per row ``a,
    c``. Each step is one correctly rounded IEEE operation, so the map is monotone. Images in a
    lower bucket than the marker's band ``lo..hi`` rank before it, those in a higher one after it;
    those inside it are compared exactly: ``exact(row, column)`` against the marker's ``t``, then
    gallery index (the stable-sort tie rule). For a distance matrix the band is the marker's own
    bucket and ``exact`` reads ``dk``; from features, ``dk`` holds float32 approximations, the band
    covers their error bound and ``exact`` recomputes in float64. Cost: a handful of linear passes
    over the block (a sort, or even ``torch.searchsorted``, is ~10-100x slower).
    """
    t, tv, tidx = s["t"], s["tvalid"], s["tidx"]
    b, km = t.shape
    m = NUM_BUCKETS
    nb = m + 1
    f = torch.sub(dk, torch.from_numpy(a), out=fbuf)
    f.mul_(torch.from_numpy(c)).clamp_(0, m)
    idx = ibuf.copy_(f)  # float -> int truncates, = floor for values >= 0
    idx += torch.arange(b, dtype=idx.dtype).unsqueeze(1) * nb
    flat = idx.numpy().reshape(-1)  # numpy's bincount / take / flatnonzero beat torch's on CPU here
    hist = np.bincount(flat, minlength=b * nb).reshape(b, nb)
    below = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(hist, axis=1)], axis=1)
    count = np.where(tv, np.take_along_axis(below, lo, axis=1), 0)  # images in lower buckets than the band

    # images inside one of their row's bands: exact comparison
    base = np.arange(b)[:, None] * nb
    edges = np.bincount((lo + base)[tv], minlength=b * nb + 1) - np.bincount((hi + 1 + base)[tv], minlength=b * nb + 1)
    inside = np.cumsum(edges[:-1]) > 0
    pos = np.flatnonzero(inside[flat])
    if len(pos):
        r, col = np.divmod(pos, dk.shape[1])
        v = exact(r, col)[:, None]
        g = kept_cols[col][:, None]
        e = (flat[pos] - r * nb)[:, None]
        tr, ti = t[r], tidx[r]
        before = (v < tr) | ((v == tr) & (g < ti))
        hit = before & (lo[r] <= e) & (e <= hi[r]) & tv[r] & (g != ti)
        extra = np.zeros((b, km), dtype=np.int64)
        np.add.at(extra, r, hit.astype(np.int64))
        count += extra
    return count


def before_by_buckets(
    dk: torch.Tensor, kept_cols: np.ndarray, s: dict[str, np.ndarray], fbuf: torch.Tensor, ibuf: torch.Tensor
) -> np.ndarray:
    """Non-junk gallery images ranked before each marker, from exact distances ``dk`` (no sort)."""
    t, tv = s["t"], s["tvalid"]
    a, c = bucket_map(t, t, tv, dk.numpy().dtype)
    tb = bucket_of(t, tv, a, c)
    flat_d = dk.numpy().reshape(-1)
    n = dk.shape[1]
    count = count_before(dk, kept_cols, s, tb, tb, a, c, lambda r, col: flat_d[r * n + col], fbuf, ibuf)
    return count - s["kept_before"] + s["special_before"]


def before_by_sort(dc: torch.Tensor, rows: np.ndarray, lay: Layout, tidx: np.ndarray) -> np.ndarray:
    """The same counts from a stable sort of each row: a second, independent path (``_method="sort"``)."""
    qp, qc, gp, gc = lay.qp[rows], lay.qc[rows], lay.gp, lay.gc
    order = torch.sort(dc, dim=1, stable=True).indices.numpy()
    nonjunk = ~(lay.g_junk[None, :] | ((gp[None, :] == qp[:, None]) & (gc[None, :] == qc[:, None])))
    snj = np.take_along_axis(nonjunk, order, axis=1)
    excl = np.cumsum(snj, axis=1) - snj  # non-junk images strictly before each position
    inv = np.empty_like(order)
    np.put_along_axis(inv, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return np.take_along_axis(excl, np.take_along_axis(inv, tidx, axis=1), axis=1)


class DenseRanker:
    """Ranks chunks of a distance matrix (query rows × all gallery columns) with reused buffers
    (fresh multi-MB allocations, i.e. page faults, cost as much as the work)."""

    def __init__(self, lay: Layout, rows: int, ng: int, dtype: torch.dtype, method: str = "buckets") -> None:
        self.lay, self.method = lay, method
        nk = len(lay.keep)
        self.keep_t = torch.from_numpy(lay.keep) if nk < ng else None
        self.keep_buf = torch.empty((rows, nk), dtype=dtype) if self.keep_t is not None else None
        self.f_buf = torch.empty((rows, nk), dtype=dtype)
        self.i_buf = torch.empty((rows, nk), dtype=torch.int64)

    def rank(self, dc: torch.Tensor, rows: np.ndarray, out: _PerQuery) -> None:
        lay, b = self.lay, dc.shape[0]
        p, valid = special_index(lay, rows)
        d = dc.gather(1, torch.from_numpy(p)).numpy()  # dc's dtype: bit-identical thresholds
        s = specials(d, p, valid, rows, lay)
        if self.method == "sort":
            before = before_by_sort(dc, rows, lay, s["tidx"])
        else:
            dk = dc if self.keep_t is None else torch.index_select(dc, 1, self.keep_t, out=self.keep_buf[:b])
            before = before_by_buckets(dk, lay.keep, s, self.f_buf[:b], self.i_buf[:b])
        out.add(rows, before, s, lay.official)


# --------------------------------------------------------------------------- the streamed path
@dataclass
class Chunk:
    """One chunk of queries in the streamed path: its markers and the counts so far."""

    rows: np.ndarray
    s: dict[str, np.ndarray]
    anchor: np.ndarray  # the markers' float64 squared distances in float32 units, minus |x|²
    count: np.ndarray


def flat_view(buf: torch.Tensor, k: int, n: int) -> torch.Tensor:
    return buf.view(-1)[: k * n].view(k, n)  # contiguous, whatever the block's width


def stream(lay: Layout, qf: np.ndarray, gf: np.ndarray, out: _PerQuery, chunk: int, gallery_chunk: int,
            precision: str) -> None:
    """The streamed ranking (``jlml_lib.evaluation`` module doc): gallery blocks outside, query chunks inside."""
    nq = len(qf)
    dt = PRECISIONS[precision]
    sc = dist.Scaled.of(gf, qf, dtype=dt)
    npdt = np.dtype(precision)  # the same type on the numpy side
    xq, xn = sc.cast(qf)
    nx = xn * xn
    q64 = qf.astype(np.float64)  # the rows every exact pair reads
    qn, gn = dist.sq_norms(q64), dist.sq_norms(gf)
    rq = np.sqrt(qn)
    chunks = []
    for c0 in range(0, nq, chunk):
        rows = lay.q_order[c0 : c0 + chunk]
        p, valid = special_index(lay, rows)
        d = np.full(p.shape, np.inf)
        d[valid] = dist.sq_dists(q64, gf, np.broadcast_to(rows[:, None], p.shape)[valid], p[valid], qn, gn)
        s = specials(d, p, valid, rows, lay)
        chunks.append(Chunk(rows, s, s["t"] * sc.s2 - nx[rows][:, None], np.zeros(s["t"].shape, dtype=np.int64)))
    keep = lay.keep
    gb = max(min(gallery_chunk, len(keep)), 1)
    b = min(chunk, nq)
    bufs = [torch.empty(b * gb, dtype=dt) for _ in range(2)]
    i_buf = torch.empty(b * gb, dtype=torch.int64)
    acc, tmp = (torch.empty((b, dist._TILE), dtype=dt) for _ in range(2))
    g64_buf = np.empty((gb, gf.shape[1]))
    y_buf = torch.empty(gb * gf.shape[1], dtype=dt)
    contiguous = len(keep) == len(gf)  # no junk-pid images: blocks are slices, no gather
    with dist.ieee_float32():
        for g0 in range(0, len(keep), gb):
            cols = keep[g0 : g0 + gb]
            n = len(cols)
            gblk = gf[g0 : g0 + n] if contiguous else gf[cols]
            g64 = g64_buf[:n]
            g64[...] = gblk  # once per block: the band's exact pairs gather from it
            g64n = gn[cols]
            yg, yn = sc.cast(gblk, y_buf)
            y2 = torch.from_numpy((yn * yn).astype(npdt))
            ymax, rgmax = float(yn.max()), float(np.sqrt(g64n.max()))
            for ch in chunks:
                k = len(ch.rows)
                # A = fl(|y|² - 2 x·y): one rounding after the products (the factor 2 is exact)
                a_blk = dist.products(xq[torch.from_numpy(ch.rows)], yg, flat_view(bufs[0], k, n), acc, tmp)
                torch.add(y2, a_blk, alpha=-2, out=a_blk)
                tol = sc.tolerance(xn[ch.rows], ymax, rq[ch.rows], rgmax)[:, None]
                tv = ch.s["tvalid"]
                low, high = dist.widen(ch.anchor - tol, ch.anchor + tol, npdt)
                a, c = bucket_map(low, high, tv, npdt)  # bands clear of the end buckets
                lo, hi = bucket_of(low, tv, a, c), bucket_of(high, tv, a, c)

                def exact(r: np.ndarray, col: np.ndarray, rows: np.ndarray = ch.rows) -> np.ndarray:
                    return dist.sq_dists(q64, g64, rows[r], col, qn, g64n)

                ch.count += count_before(a_blk, cols, ch.s, lo, hi, a, c, exact,
                                          flat_view(bufs[1], k, n), flat_view(i_buf, k, n))
    for ch in chunks:
        out.add(ch.rows, ch.count - ch.s["kept_before"] + ch.s["special_before"], ch.s, lay.official)
