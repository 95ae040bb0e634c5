"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017), exact, in bounded memory. Beyond the JLML paper: every re-id toolkit ships
it and readers expect it beside Table 6.

The result equals the authors' Python ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2,
lambda_value)`` as copied in torchreid 0.2.5 (``torchreid/utils/rerank.py``) called with
Euclidean distances (:func:`jlml_lib.distances.pairwise_distances`). That code, for the
N = queries + gallery images:

1. squares the distances, casts them to float32 and divides each column by its maximum (the
   matrix is symmetric, so row ``i`` is divided by the largest squared distance from ``i``);
2. ranks every row (``argsort``) and takes the k-reciprocal neighbours
   ``R(i) = {j in top(k1+1)(i): i in top(k1+1)(j)}``, adds ``R(c)`` with ``k1/2`` (``np.around``)
   for each ``c`` in ``R(i)`` that shares more than 2/3 of it with ``R(i)``, and sets
   ``V[i, j] = exp(-dist[i, j])``, normalised over the expanded set;
3. replaces ``V[i]`` by the mean of ``V`` over the top-``k2`` of ``i`` when ``k2 != 1``;
4. Jaccard distance ``1 - s / (2 - s)`` with ``s = sum_l min(V[i, l], V[j, l])``, and returns
   ``(1 - lambda) * jaccard + lambda * dist`` for queries × gallery.

Here every set is sparse: the neighbour lists are exact top-k from certified float32 products
(:mod:`jlml_lib.distances`: a candidate set that provably contains the true top-k, re-ranked on
float64 distances), ``V`` is a sparse matrix and the Jaccard sums run over its columns, so memory
is ``O(N · k1 · k2)`` plus one ``chunk × gallery`` block, never N × N. Ties: the reference sorts
with numpy's non-stable ``argsort``, whose order among equal float32 values is unspecified; here
equal values are ordered by index (queries first, then gallery, in input order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from jlml_lib import distances as dist
from jlml_lib.errors import ConfigError, DataError

RERANK_DEFAULTS: dict[str, Any] = {"k1": 20, "k2": 6, "lambda_value": 0.3}  # Zhong et al. §4.1 (Market-1501)

__all__ = ["RERANK_DEFAULTS", "k_reciprocal", "rerank_options"]

_BLOCK_ELEMENTS = 1 << 23  # rows × N of one neighbour-search block (32 MB of float32)


def rerank_options(rerank: Mapping[str, Any] | bool | None = True) -> dict[str, Any]:
    """``k1``, ``k2``, ``lambda_value`` from ``True`` (the defaults) or a mapping of overrides, checked."""
    if rerank is True or rerank is None:
        opts = dict(RERANK_DEFAULTS)
    elif isinstance(rerank, Mapping):
        unknown = sorted(set(rerank) - set(RERANK_DEFAULTS))
        if unknown:
            raise ConfigError(f"rerank: unknown option(s) {unknown}; known: {sorted(RERANK_DEFAULTS)}")
        opts = {**RERANK_DEFAULTS, **rerank}
    else:
        raise ConfigError(f"rerank must be None, True or a mapping of {sorted(RERANK_DEFAULTS)}, got {rerank!r}")
    for k in ("k1", "k2"):
        v = opts[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"rerank: {k} must be an integer >= 1, got {v!r}")
    lam = opts["lambda_value"]
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer)) or not 0.0 <= lam <= 1.0:
        raise ConfigError(f"rerank: lambda_value must be a number in [0, 1] (the weight of the original distance), "
                          f"got {lam!r}")
    return {"k1": int(opts["k1"]), "k2": int(opts["k2"]), "lambda_value": float(lam)}


def k_reciprocal(q_feats: Any, g_feats: Any, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 chunk: int | None = None) -> np.ndarray:
    """The k-reciprocal re-ranked distance, queries × gallery, as a float32 numpy array (module doc).

    Equal (to float32 rounding, ~1e-6) to torchreid 0.2.5's ``re_ranking`` on the Euclidean
    distances of ``q_feats`` (Q × D) and ``g_feats`` (G × D). The output is the full Q × G matrix;
    at MSMT17 size use ``rank_metrics_from_features(..., rerank={...})``, which ranks it a block of
    queries at a time and never holds it. ``chunk``: queries per block (default: as many as keep a
    block near 16M entries, at most 256, which is also what the streamed ranking uses by default).
    """
    opts = rerank_options({"k1": k1, "k2": k2, "lambda_value": lambda_value})
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1):
        raise ConfigError(f"k_reciprocal: chunk must be a positive integer, got {chunk!r}")
    qf, gf = dist.feature_pair(q_feats, g_feats, "k_reciprocal")
    rr = _Reranker(qf, gf, **opts)
    chunk = rr.rows_per_block if chunk is None else chunk
    out = np.empty((len(qf), len(gf)), dtype=np.float32)
    for c0 in range(0, len(qf), chunk):
        out[c0 : c0 + chunk] = rr.block(np.arange(c0, min(c0 + chunk, len(qf))))
    return out


class _Reranker:
    """The sparse state of one re-ranking (neighbour lists, ``V``), and its query blocks."""

    def __init__(self, qf: np.ndarray, gf: np.ndarray, *, k1: int, k2: int, lambda_value: float) -> None:
        if len(qf) == 0 or len(gf) == 0:
            raise DataError("k_reciprocal: the query set and the gallery must not be empty")
        self.nq, self.ng = len(qf), len(gf)
        self.rows_per_block = max(1, min(256, (1 << 24) // self.ng))  # a query block's float64 scratch: 128 MB
        self.lam = lambda_value
        self.x = np.concatenate([qf, gf], dtype=np.float64)  # exact pairs gather from it
        self.n2 = dist.sq_norms(self.x)
        n = len(self.x)
        kk = min(max(k1 + 1, k2), n)
        self.fwd, self.rowmax = self._neighbours(kk)
        v = self._v(min(k1 + 1, n), min(int(np.around(k1 / 2.0)) + 1, n))
        if k2 != 1:  # the mean of V over each image's top-k2 (itself first)
            k2e = min(k2, n)
            m = sp.csr_matrix((np.ones(n * k2e, np.float32), self.fwd[:, :k2e].ravel(), np.arange(0, n * k2e + 1, k2e)),
                              shape=(n, n))
            v = (m @ v).tocsr()
            v.data = v.data / np.float32(k2e)
        v.sort_indices()
        self.v = v
        self.vg = v[self.nq :].tocsc()  # column l -> the gallery images with V[j, l] != 0
        self.vg.sort_indices()

    # ----------------------------------------------------------------- neighbour lists
    def _neighbours(self, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``kk`` lists (by (normalised float32 distance, index)) and each row's largest squared
        distance (float32), for every image, from certified float32 products."""
        x, n2 = self.x, self.n2
        n, d = x.shape
        sc = dist.Scaled.of(x)
        x32 = torch.empty((n, d), dtype=torch.float32)
        xn = np.empty(n)
        for s in range(0, n, 4096):
            y, xn[s : s + 4096] = sc.cast(x[s : s + 4096])
            x32[s : s + 4096] = y
        nx = xn * xn
        y2 = torch.from_numpy(nx.astype(np.float32))
        rn = np.sqrt(n2)
        b = max(1, min(n, _BLOCK_ELEMENTS // n))
        a_buf = torch.empty(b * n, dtype=torch.float32)
        acc, tmp = (torch.empty((b, dist._TILE), dtype=torch.float32) for _ in range(2))
        fwd = np.empty((n, kk), dtype=np.int64)
        rowmax = np.empty(n, dtype=np.float32)
        with dist.ieee_float32():
            for r0 in range(0, n, b):
                rows = np.arange(r0, min(r0 + b, n))
                k = len(rows)
                a = dist.products(x32[r0 : r0 + k], x32, a_buf[: k * n].view(k, n), acc, tmp)
                torch.add(y2, a, alpha=-2, out=a)  # ≈ s2 · d² - |x_i|²
                tol = sc.tolerance(xn[rows], xn.max(), rn[rows], rn.max())
                # the largest: any true maximum lies within 2 tol of the float32 one
                amax = a.max(1).values.numpy().astype(np.float64)
                far = a >= torch.from_numpy(dist.round_down32(amax - 2 * tol))[:, None]
                fr, fc = (t.numpy() for t in far.nonzero(as_tuple=True))
                sq = _squared(dist.sq_dists(x, x, rows[fr], fc, n2, n2))
                rowmax[rows] = np.maximum.reduceat(sq, np.searchsorted(fr, np.arange(k)))  # every row has one
                if not np.all(rowmax[rows] > 0):
                    raise DataError("k_reciprocal: all query and gallery features are identical; the re-ranked "
                                    "distance (normalised by each image's largest distance) is undefined")
                # the nearest: a candidate set holding the true top-kk with a margin that keeps the
                # float32 keys of those outside strictly larger (so index ties cannot reach in)
                kth = torch.topk(a, kk, dim=1, largest=False, sorted=True).values[:, -1].numpy().astype(np.float64)
                thr = ((kth + nx[rows] + tol) * (1 + 2.0**-20) + tol) - nx[rows]
                near = a <= torch.from_numpy(dist.round_up32(thr))[:, None]
                nr, nc = (t.numpy() for t in near.nonzero(as_tuple=True))
                key = _squared(dist.sq_dists(x, x, rows[nr], nc, n2, n2)) / rowmax[rows][nr]
                order = np.lexsort((nc, key, nr))
                first = np.searchsorted(nr[order], np.arange(k))
                fwd[rows] = nc[order][first[:, None] + np.arange(kk)[None, :]]
        return fwd, rowmax

    def _keys(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The reference's ``original_dist[i, j]``: float32 squared distance over row ``i``'s maximum."""
        return _squared(dist.sq_dists(self.x, self.x, i, j, self.n2, self.n2)) / self.rowmax[i]

    # ----------------------------------------------------------------- V
    def _v(self, k1e: int, h1: int, step: int = 2048) -> sp.csr_matrix:
        """``V`` of step 2 (module doc) as a sparse matrix."""
        fwd, n = self.fwd, len(self.fwd)
        f1, fh = fwd[:, :k1e], fwd[:, :h1]
        rec = np.empty((n, k1e), dtype=bool)
        rech = np.empty((n, h1), dtype=bool)
        for s in range(0, n, step):
            c = np.arange(s, min(s + step, n))
            rec[c] = (f1[f1[c]] == c[:, None, None]).any(-1)
            rech[c] = (fh[fh[c]] == c[:, None, None]).any(-1)
        rows, cols, vals = [], [], []
        for s in range(0, n, step):
            c = np.arange(s, min(s + step, n))
            r = np.where(rec[c], f1[c], -1)  # R(i), in rank order
            cand = f1[c]  # each candidate's own (k1/2)-reciprocal set
            rh = np.where(rech[cand], fh[cand], -1)
            lenh = rech[cand].sum(-1)
            inter = ((rh[..., None] == r[:, None, None, :]) & (rh[..., None] >= 0)).any(-1).sum(-1)
            take = rec[c] & (inter > 2.0 / 3 * lenh)  # the reference's test, in float64 as there
            members = np.concatenate([r, np.where(take[..., None], rh, -1).reshape(len(c), -1)], axis=1)
            members.sort(axis=1)
            uniq = (members >= 0) & np.concatenate(
                [np.ones((len(c), 1), bool), members[:, 1:] != members[:, :-1]], axis=1)
            ri, ci = np.nonzero(uniq)
            i, j = c[ri], members[ri, ci]
            w = np.exp(-self._keys(i, j))  # float32, as np.exp on the reference's float32 matrix
            padded = np.zeros(members.shape, dtype=np.float32)
            padded[ri, ci] = w
            total = padded.sum(1)  # float32 sums, as np.sum(weight)
            rows.append(i)
            cols.append(j)
            vals.append(w / total[ri])
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n),
                             dtype=np.float32)

    # ----------------------------------------------------------------- query blocks
    def block(self, rows: np.ndarray) -> np.ndarray:
        """Re-ranked distances (float32) of queries ``rows`` to the whole gallery."""
        nq, ng, b = self.nq, self.ng, len(rows)
        # original distance: pairwise_distances' formula in float64, squared, float32, normalised
        q = torch.from_numpy(self.x[rows])
        g = torch.from_numpy(self.x[nq:])
        d2 = torch.from_numpy(self.n2[rows])[:, None] + torch.from_numpy(self.n2[nq:])[None, :]
        d2.sub_(torch.mm(q, g.T), alpha=2.0).clamp_min_(0).sqrt_()
        orig = d2.mul_(d2).numpy().astype(np.float32)
        orig /= self.rowmax[rows][:, None]
        # Jaccard: s[i, j] = sum over l of min(V[i, l], V[j, l]), through the columns of V
        vq = self.v[rows]
        cp, cr, cv = self.vg.indptr, self.vg.indices, self.vg.data
        lens = cp[vq.indices + 1] - cp[vq.indices]
        nz_row = np.repeat(np.arange(b), np.diff(vq.indptr))
        rep = np.repeat(np.arange(len(vq.indices)), lens)
        pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens) + cp[vq.indices][rep]
        wmin = np.minimum(vq.data[rep], cv[pos])
        s = np.bincount(nz_row[rep] * ng + cr[pos], weights=wmin, minlength=b * ng).reshape(b, ng).astype(np.float32)
        jaccard = 1 - s / (2.0 - s)
        return jaccard * (1 - self.lam) + orig * self.lam


def _squared(d2: np.ndarray) -> np.ndarray:
    """The reference's float32 squared distance: ``np.power(sqrt(d2), 2).astype(float32)``."""
    d = np.sqrt(d2)
    return (d * d).astype(np.float32)
