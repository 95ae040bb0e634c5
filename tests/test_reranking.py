"""k_reciprocal against the authors' re-ranking (Zhong et al. CVPR 2017) as torchreid 0.2.5 ships it,
written out below step by step on dense N × N arrays; the streamed ranking against the matrix;
the neighbour search with its float32 bound widened; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from jlml_lib import distances as dist
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import pairwise_distances, rank_metrics, rank_metrics_from_features
from jlml_lib.reranking import RERANK_DEFAULTS, k_reciprocal, rerank_options


# --------------------------------------------------------------------------- the reference
def authors_re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """torchreid 0.2.5 ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)``, the same
    operations in the same dtypes (float32 after squaring), with plain loops and dense matrices."""
    full = np.block([[q_q, q_g], [q_g.T, g_g]])
    sq = np.power(full, 2).astype(np.float32)
    d = np.transpose(1.0 * sq / np.max(sq, axis=0))  # column i over its maximum, then transposed
    order = np.argsort(d)  # numpy's default (non-stable) sort, as the reference
    n, nq = len(full), len(q_g)

    def reciprocal(i, k):
        """The images among i's k+1 nearest that have i among their own k+1 nearest, in rank order."""
        top = order[i, : k + 1]
        return top[np.array([i in order[j, : k + 1] for j in top], dtype=bool)]

    v = np.zeros((n, n), dtype=np.float32)
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        members = np.unique(expanded)
        w = np.exp(-d[i, members])
        v[i, members] = 1.0 * w / np.sum(w)
    if k2 != 1:
        v = np.stack([np.mean(v[order[i, :k2], :], axis=0) for i in range(n)]).astype(np.float32)
    jaccard = np.zeros((nq, n), dtype=np.float32)
    for i in range(nq):
        s = np.zeros(n, dtype=np.float32)
        for col in np.flatnonzero(v[i] != 0):
            rows = np.flatnonzero(v[:, col] != 0)
            s[rows] = s[rows] + np.minimum(v[i, col], v[rows, col])
        jaccard[i] = 1 - s / (2.0 - s)
    final = jaccard * (1 - lambda_value) + d[:nq] * lambda_value
    return final[:, nq:]


def reference(q, g, *, k1, k2, lambda_value):
    """The authors' function called as the contract says: with plain Euclidean distances."""
    ref = authors_re_ranking(pairwise_distances(q, g), pairwise_distances(q, q), pairwise_distances(g, g), k1=k1, k2=k2,
                             lambda_value=lambda_value)
    # tie-free where it matters: the reference's argsort leaves the order of equal values
    # unspecified, and only each row's nearest max(k1 + 1, k2) are used
    sq = np.power(pairwise_distances(np.concatenate([q, g]), np.concatenate([q, g])), 2).astype(np.float32)
    head = np.sort(np.transpose(sq / sq.max(axis=0)), axis=1)[:, : max(k1 + 1, k2) + 1]
    assert np.all(np.diff(head, axis=1) > 0), "the test problem has tied distances among the nearest"
    return ref


def features(seed, nq, ng, dim, clustered=False):
    rng = np.random.default_rng(seed)
    if not clustered:
        return rng.normal(size=(nq, dim)).astype(np.float32), rng.normal(size=(ng, dim)).astype(np.float32)
    centres = rng.normal(size=(max(nq // 2, 1), dim)) * 2
    q = centres[rng.integers(0, len(centres), nq)] + rng.normal(size=(nq, dim))
    g = centres[rng.integers(0, len(centres), ng)] + rng.normal(size=(ng, dim))
    return q.astype(np.float32), g.astype(np.float32)


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize(
    "seed, nq, ng, dim, k1, k2, lam, clustered",
    [
        (0, 5, 30, 4, 3, 1, 0.3, False),  # small, k2 = 1 (no query expansion)
        (1, 10, 60, 8, 5, 3, 0.3, True),
        (2, 7, 50, 3, 4, 2, 0.5, False),
        (3, 3, 10, 2, 20, 6, 0.3, False),  # k1 + 1 > N: every list is the whole set
        (4, 8, 40, 5, 6, 1, 0.0, True),  # Jaccard only
        (5, 8, 40, 5, 6, 4, 1.0, False),  # original distance only
        (6, 25, 180, 16, 20, 6, 0.3, True),  # mid-size, the paper's settings
        (7, 40, 300, 32, 20, 6, 0.3, False),
        (8, 30, 250, 64, 9, 1, 0.3, True),
    ],
)
def test_equals_the_authors_re_ranking(seed, nq, ng, dim, k1, k2, lam, clustered):
    q, g = features(seed, nq, ng, dim, clustered)
    ref = reference(q, g, k1=k1, k2=k2, lambda_value=lam)
    out = k_reciprocal(q, g, k1=k1, k2=k2, lambda_value=lam, chunk=7)
    assert out.dtype == np.float32 and out.shape == (nq, ng)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_torchreid_itself_where_installed():
    rerank = pytest.importorskip("torchreid.utils.rerank")
    q, g = features(11, 12, 90, 10, clustered=True)
    ref = rerank.re_ranking(pairwise_distances(q, g), pairwise_distances(q, q), pairwise_distances(g, g), k1=20, k2=6,
                            lambda_value=0.3)
    np.testing.assert_allclose(k_reciprocal(q, g), ref, rtol=0, atol=1e-5)


def test_lambda_one_is_the_normalised_squared_distance():
    # independent of the neighbour machinery: d² over the largest d² from the query (gallery and queries)
    q, g = features(12, 6, 40, 5)
    x = np.concatenate([q, g])
    sq = pairwise_distances(q, x) ** 2
    expected = sq[:, len(q):] / sq.max(axis=1, keepdims=True)
    np.testing.assert_allclose(k_reciprocal(q, g, lambda_value=1.0), expected, rtol=2e-6, atol=0)


def test_neighbour_search_does_not_depend_on_the_bound(monkeypatch):
    # a million times wider float32 bound: many more candidates, re-ranked on float64, same lists
    q, g = features(13, 20, 150, 12, clustered=True)
    plain = k_reciprocal(q, g, k1=10, k2=3)
    wide = dist.Scaled.tolerance
    monkeypatch.setattr(dist.Scaled, "tolerance", lambda self, *a: wide(self, *a) * 1e6)
    np.testing.assert_array_equal(k_reciprocal(q, g, k1=10, k2=3), plain)


@pytest.mark.parametrize("ap", ["official", "standard"])
def test_streamed_ranking_equals_ranking_the_matrix(ap):
    rng = np.random.default_rng(14)
    q, g = features(14, 23, 170, 8, clustered=True)
    qp, gp = rng.integers(1, 8, 23), rng.integers(-1, 8, 170)
    qc, gc = rng.integers(0, 3, 23), rng.integers(0, 3, 170)
    opts = {"k1": 12, "k2": 4, "lambda_value": 0.3}
    dense = rank_metrics(k_reciprocal(q, g, **opts, chunk=5), qp, gp, qc, gc, ap=ap)
    streamed = rank_metrics_from_features(q, g, qp, gp, qc, gc, ap=ap, rerank=opts, chunk=5)
    np.testing.assert_array_equal(streamed.cmc, dense.cmc)
    np.testing.assert_array_equal(streamed.first_rank, dense.first_rank)
    assert streamed.mAP == dense.mAP and streamed.mINP == dense.mINP and streamed.query_key == dense.query_key
    plain = rank_metrics_from_features(q, g, qp, gp, qc, gc, ap=ap)
    assert not np.array_equal(plain.query_ap, streamed.query_ap)  # re-ranking did change something


def test_options():
    assert rerank_options(True) == RERANK_DEFAULTS == {"k1": 20, "k2": 6, "lambda_value": 0.3}
    assert rerank_options({"k1": 5}) == {"k1": 5, "k2": 6, "lambda_value": 0.3}


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(k1=0), "k1 must be an integer >= 1"),
        (dict(k1=2.5), "k1 must be an integer >= 1"),
        (dict(k2=0), "k2 must be an integer >= 1"),
        (dict(lambda_value=1.01), r"lambda_value must be a number in \[0, 1\]"),
        (dict(lambda_value=-1), "lambda_value"),
        (dict(lambda_value=float("nan")), "lambda_value"),
        (dict(chunk=0), "chunk must be a positive integer"),
    ],
)
def test_bad_options_are_named(kw, match):
    q, g = features(15, 3, 10, 2)
    with pytest.raises(ConfigError, match=match):
        k_reciprocal(q, g, **kw)


def test_bad_features_are_named():
    q, g = features(16, 3, 10, 2)
    with pytest.raises(DataError, match="q_feats are 2-D but g_feats are 3-D"):
        k_reciprocal(q, np.ones((10, 3)))
    g[4, 1] = np.nan
    with pytest.raises(DataError, match=r"g_feats holds NaN at \[row 4, column 1\]"):
        k_reciprocal(q, g)
    with pytest.raises(DataError, match="must not be empty"):
        k_reciprocal(q[:0], np.ones((10, 2)))
    with pytest.raises(DataError, match="all query and gallery features are identical"):
        k_reciprocal(np.ones((2, 3)), np.ones((4, 3)))
