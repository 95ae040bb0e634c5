"""rank_metrics_from_features against the dense path it replaces, rank_metrics(pairwise_distances(...)),
which tests/test_evaluation.py checks against the MATLAB logic: generated problems with exact ties
(integer-valued features: every distance exact), junk, distractors, both AP modes (hypothesis);
chunk sizes that divide nothing; both product precisions (float32, the default, and float64: the
result must not depend on it); the error bound itself; memory; bad input."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jlml_lib import distances as dist
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import pairwise_distances, rank_metrics, rank_metrics_from_features


def assert_equal_results(res, ref):
    """The contract: identical CMC and first ranks, mAP (and every per-query AP) to 1e-9, and the rest."""
    np.testing.assert_array_equal(res.cmc, ref.cmc)
    np.testing.assert_array_equal(res.first_rank, ref.first_rank)
    assert abs(res.mAP - ref.mAP) <= 1e-9
    np.testing.assert_allclose(res.query_ap, ref.query_ap, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.query_inp, ref.query_inp, rtol=0, atol=1e-9)
    assert (res.num_queries, res.ap, res.query_key) == (ref.num_queries, ref.ap, ref.query_key)
    assert (res.mINP is None) == (ref.mINP is None)
    if ref.mINP is not None:
        assert abs(res.mINP - ref.mINP) <= 1e-9


def both(qf, gf, qp, gp, qc, gc, **kw):
    """(streamed, dense) results, or the errors they raise (which must be the same)."""
    dense_kw = {k: v for k, v in kw.items() if k not in ("chunk", "gallery_chunk", "precision")}
    try:
        ref = rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc, **dense_kw)
    except DataError as e:
        with pytest.raises(DataError, match="none of the"):
            rank_metrics_from_features(qf, gf, qp, gp, qc, gc, **kw)
        assert "none of the" in str(e)
        return None, None
    return rank_metrics_from_features(qf, gf, qp, gp, qc, gc, **kw), ref


@st.composite
def problems(draw):
    nq, ng, d = draw(st.integers(1, 7)), draw(st.integers(1, 30)), draw(st.integers(1, 5))
    npid = draw(st.integers(1, 4))
    pid, cam = st.integers(-1, npid), st.integers(0, 2)  # -1 junk, 0 distractors, 1.. identities
    ints = st.lists(st.integers(-2, 2), min_size=d, max_size=d)  # small integers: many exact ties
    qf = np.array(draw(st.lists(ints, min_size=nq, max_size=nq)), dtype=np.float32)
    gf = np.array(draw(st.lists(ints, min_size=ng, max_size=ng)), dtype=np.float32)
    # every distance stays exact in float64; with 3e6 the float32 products are not (the band's work)
    scale = draw(st.sampled_from([1.0, 0.5, 2.0**-20, 3.0e6]))
    sizes = ((pid, nq), (pid, ng), (cam, nq), (cam, ng))
    labels = [np.array(draw(st.lists(x, min_size=n, max_size=n))) for x, n in sizes]
    return qf * scale, gf * scale, *labels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(["official", "standard"]), st.integers(1, 5), st.integers(1, 9),
       st.sampled_from(["float64", "float32"]))
def test_equals_dense_path_with_exact_ties(prob, ap, chunk, gallery_chunk, precision):
    res, ref = both(*prob, ap=ap, max_rank=12, chunk=chunk, gallery_chunk=gallery_chunk, precision=precision)
    if ref is not None:
        assert_equal_results(res, ref)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("seed", range(4))
def test_equals_dense_path_on_float_features(seed, precision):
    # a Market-1501-like composition (junk -1, distractors 0, several images per id and camera),
    # features with a common offset (like ReLU outputs) and clustered by identity, float32 and float64
    rng = np.random.default_rng(seed)
    nq, ng, d = 37, 611, [7, 64, 300, 1030][seed]
    gp = np.concatenate([rng.integers(1, 40, ng - 60), np.zeros(30, int), -np.ones(30, int)])
    gc, qp, qc = rng.integers(0, 6, ng), rng.integers(1, 40, nq), rng.integers(0, 6, nq)
    centres = rng.normal(size=(41, d)) + 3.0
    qf = centres[qp] + rng.normal(size=(nq, d)) * [0.1, 1.0, 3.0, 0.5][seed]
    gf = centres[np.abs(gp)] + rng.normal(size=(ng, d)) * [0.1, 1.0, 3.0, 0.5][seed]
    if seed % 2:
        qf, gf = torch.from_numpy(qf.astype(np.float32)), torch.from_numpy(gf.astype(np.float32))
    for ap in ("official", "standard"):
        res, ref = both(qf, gf, qp, gp, qc, gc, ap=ap, chunk=10, gallery_chunk=97, precision=precision)
        assert_equal_results(res, ref)
        assert_equal_results(rank_metrics_from_features(qf, gf, qp, gp, qc, gc, ap=ap), ref)  # default blocks


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_every_decision_through_the_exact_path(monkeypatch, precision):
    # a bound a million times too wide sends nearly every image to the float64 comparison: the
    # bookkeeping of the bands (counts below a band, exact counts inside) must still add up
    rng = np.random.default_rng(7)
    qf, gf = rng.normal(size=(23, 16)), rng.normal(size=(301, 16))
    qp, gp = rng.integers(1, 9, 23), rng.integers(-1, 9, 301)
    qc, gc = rng.integers(0, 3, 23), rng.integers(0, 3, 301)
    ref = rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc)
    wide = dist.Scaled.tolerance
    monkeypatch.setattr(dist.Scaled, "tolerance", lambda self, *a: wide(self, *a) * 1e6)
    assert_equal_results(rank_metrics_from_features(qf, gf, qp, gp, qc, gc, chunk=4, gallery_chunk=50,
                                                    precision=precision), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("raw", [np.float32, np.float64])
@pytest.mark.parametrize("offset, spread, dim",
                         [(0.0, 1.0, 1024), (100.0, 0.01, 512), (1e-3, 1e-6, 33), (-7e4, 3e2, 2048)])
def test_error_bound_holds(offset, spread, dim, raw, dtype):
    # |s2 · d²_float64 - (|x|² + A)| <= tolerance for every pair, A from the split products in dtype
    rng = np.random.default_rng(int(dim))
    q = (offset + spread * rng.standard_normal((40, dim))).astype(raw)
    g = (offset + spread * rng.standard_normal((500, dim))).astype(raw)
    g[:5] = q[:5]  # identical pairs: distance 0
    sc = dist.Scaled.of(g, q, dtype=dtype)
    xq, xn = sc.cast(q)
    yg, yn = sc.cast(g)
    assert xq.dtype == yg.dtype == dtype
    acc, tmp = torch.empty((40, dist._TILE), dtype=dtype), torch.empty((40, dist._TILE), dtype=dtype)
    a = dist.products(xq, yg, torch.empty((40, 500), dtype=dtype), acc, tmp)
    y2 = torch.from_numpy((yn * yn).astype(np.float64)).to(dtype)
    a = torch.add(y2, a, alpha=-2).numpy().astype(np.float64)
    qn, gn = dist.sq_norms(q), dist.sq_norms(g)
    exact = dist.sq_dists(q, g, np.repeat(np.arange(40), 500), np.tile(np.arange(500), 40), qn, gn).reshape(40, 500)
    err = np.abs(exact * sc.s2 - (xn[:, None] ** 2 + a))
    tol = sc.tolerance(xn[:, None], yn[None, :], np.sqrt(qn)[:, None], np.sqrt(gn)[None, :])
    assert np.all(err <= tol)
    assert np.all(tol < 1e-3 * (xn[:, None] + yn[None, :]) ** 2)  # and it is not vacuous
    if dtype == torch.float64:  # never wider than float32's (what remains is sq_dists' own rounding)
        f32 = dataclasses.replace(sc, dtype=torch.float32)
        assert np.all(tol <= f32.tolerance(xn[:, None], yn[None, :], np.sqrt(qn)[:, None], np.sqrt(gn)[None, :]))


def test_sq_dists_is_the_float64_distance_and_batch_independent():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 1000)).astype(np.float32), rng.normal(size=(50, 1000)).astype(np.float32)
    ia, ib = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    na, nb = dist.sq_norms(a), dist.sq_norms(b)
    full = dist.sq_dists(a, b, ia, ib, na, nb)
    np.testing.assert_allclose(np.sqrt(full), pairwise_distances(a, b)[ia, ib], rtol=1e-12)
    parts = np.concatenate([dist.sq_dists(a, b, ia[s : s + 37], ib[s : s + 37], na, nb, step=5)
                            for s in range(0, 400, 37)])
    np.testing.assert_array_equal(parts, full)  # one pair, one value: exact ties stay ties
    np.testing.assert_array_equal(dist.sq_dists(a.astype(np.float64), b, ia, ib, na, nb), full)


def test_holds_only_blocks_not_the_matrix():
    # numpy's allocations are traced: far below the 300 × 20,000 float64 matrix (48 MB) the dense path needs
    rng = np.random.default_rng(2)
    qf, gf = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(20000, 8)).astype(np.float32)
    qp, gp = rng.integers(1, 200, 300), rng.integers(-1, 200, 20000)
    qc, gc = rng.integers(0, 4, 300), rng.integers(0, 4, 20000)
    tracemalloc.start()
    try:
        rank_metrics_from_features(qf, gf, qp, gp, qc, gc, chunk=32, gallery_chunk=1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 20000 * 8 / 4


# --------------------------------------------------------------------------- bad input
QP, GP, QC, GC = [1, 2], [1, 2, 3], [0, 0], [1, 1, 1]
QF, GF = np.zeros((2, 4)), np.ones((3, 4))


@pytest.mark.parametrize(
    "q, g, labels, match",
    [
        (QF, np.ones((3, 5)), None, "q_feats are 4-D but g_feats are 5-D"),
        (np.zeros(4), GF, None, "q_feats must be 2-D"),
        (QF, np.array([["a"] * 4] * 3), None, "g_feats must be a numeric array"),
        (QF, np.where(np.eye(3, 4) > 0, np.nan, 1.0), None, r"g_feats holds NaN at \[row 0, column 0\]"),
        (torch.tensor([[0.0, 0, 0, 0], [0, 0, float("inf"), 0]]), GF, None,
         r"q_feats holds an infinite value at \[row 1, column 2\]"),
        (QF, GF, ([1, 2, 3], GP, QC, GC), "q_pids has 3 entries but q_feats has 2 rows"),
        (QF, GF, (QP, GP, QC, [1, 1]), "g_camids has 2 entries but g_feats has 3 rows"),
        (np.zeros((0, 4)), GF, ([], GP, [], GC), "query set is empty"),
        (np.zeros((2, 0)), np.zeros((3, 0)), None, "0 dimensions"),
    ],
)
def test_bad_input_is_named(q, g, labels, match):
    with pytest.raises(DataError, match=match):
        rank_metrics_from_features(q, g, *(labels or (QP, GP, QC, GC)))


@pytest.mark.parametrize(
    "opts, match",
    [
        (dict(ap="interpolated"), "ap must be one of"),
        (dict(max_rank=0), "max_rank"),
        (dict(chunk=0), "chunk must be a positive integer"),
        (dict(gallery_chunk=2.5), "gallery_chunk must be a positive integer"),
        (dict(precision="float16"), r"precision must be one of \[.float64., .float32.\]"),
        (dict(rerank={"k1": 0}), "k1 must be an integer >= 1"),
        (dict(rerank={"k2": -1}), "k2 must be an integer >= 1"),
        (dict(rerank={"lambda_value": 1.5}), r"lambda_value must be a number in \[0, 1\]"),
        (dict(rerank={"lambda_value": -0.1}), "lambda_value"),
        (dict(rerank={"k3": 2}), r"unknown option\(s\) \['k3'\]"),
        (dict(rerank="yes"), "rerank must be None, True or a mapping"),
    ],
)
def test_bad_options_are_named(opts, match):
    with pytest.raises(ConfigError, match=match):
        rank_metrics_from_features(QF, GF, QP, GP, QC, GC, **opts)
