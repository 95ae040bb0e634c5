"""rank_metrics against a deliberately plain per-query reference (the MATLAB logic, line by line),
hand-computed cases, random equivalence (hypothesis), and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import RankMetrics, pairwise_distances, query_key, rank_metrics


# --------------------------------------------------------------------------- plain reference
def _compute_ap_official(good, junk, index):
    """compute_AP.m (Market-1501 / IDE baseline), transcribed loop for loop (0-based here)."""
    cmc = np.zeros(len(index))
    ngood = len(good)
    old_recall, old_precision, ap = 0.0, 1.0, 0.0
    intersect_size, j, good_now, njunk = 0, 0, 0, 0
    for n in range(len(index)):
        flag = False
        if index[n] in good:
            cmc[n - njunk :] = 1  # MATLAB: cmc(n-njunk:end) = 1 with 1-based n
            flag = True
            good_now += 1
        if index[n] in junk:
            njunk += 1
            continue
        if flag:
            intersect_size += 1
        recall = intersect_size / ngood if ngood else float("nan")  # MATLAB: 0/0 = NaN
        precision = intersect_size / (j + 1)
        ap = ap + (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
        j += 1
        if good_now == ngood:
            break
    return ap, cmc


def reference(dist, qp, gp, qc, gc, ap="official", max_rank=50, junk_pids=(-1,)):
    """evaluation.m for "official"; torchreid's eval_market1501 loop (plus junk pids) for "standard"."""
    dist = np.asarray(dist, dtype=np.float64)
    nq, ng = dist.shape
    aps, cmcs = [], []
    for i in range(nq):
        index = list(np.argsort(dist[i], kind="stable"))  # MATLAB sort is stable
        good = {j for j in range(ng) if gp[j] == qp[i] and gc[j] != qc[i]}
        junk = {j for j in range(ng) if (gp[j] == qp[i] and gc[j] == qc[i]) or gp[j] in junk_pids}
        if ap == "official":
            a, cmc = _compute_ap_official(good, junk, index)
            aps.append(0.0 if np.isnan(a) else a)  # evaluation.m: ap(isnan(ap)) = 0
            cmcs.append(cmc)
        else:
            kept = [j for j in index if j not in junk]
            matches = np.array([j in good for j in kept], dtype=float)
            if not matches.any():
                continue  # torchreid: query skipped
            cmc = np.minimum(np.cumsum(matches), 1)
            prec = np.cumsum(matches) / np.arange(1, len(kept) + 1)
            aps.append(float((prec * matches).sum() / matches.sum()))
            cmcs.append(np.concatenate([cmc, np.full(ng - len(kept), cmc[-1])]))
    cmc = np.mean(cmcs, axis=0)
    cmc = np.concatenate([cmc, np.full(max(0, max_rank - ng), cmc[-1])])[:max_rank]
    return cmc, float(np.mean(aps)), len(aps)


def reference_inp(dist, qp, gp, qc, gc, junk_pids=(-1,)):
    """INP per query (Ye et al. TPAMI 2021; their ``eval_market1501``): in the ranking without junk,
    the number of good images over the 1-based position of the last one; NaN without one."""
    dist = np.asarray(dist, dtype=np.float64)
    out = []
    for i in range(dist.shape[0]):
        kept = [j for j in np.argsort(dist[i], kind="stable")
                if not ((gp[j] == qp[i] and gc[j] == qc[i]) or gp[j] in junk_pids)]
        hits = [n for n, j in enumerate(kept) if gp[j] == qp[i]]  # kept same-pid = other camera
        out.append(len(hits) / (hits[-1] + 1) if hits else np.nan)
    return np.array(out)


def assert_same(res, ref):
    cmc, mAP, n = ref
    np.testing.assert_allclose(res.cmc, cmc, rtol=0, atol=1e-12)
    assert abs(res.mAP - mAP) <= 1e-12
    assert res.num_queries == n


# --------------------------------------------------------------------------- hand-made cases
def _one(dists, gpids, gcams, qpid=1, qcam=0, **kw):
    d = np.asarray([dists], dtype=np.float64)
    return rank_metrics(d, [qpid], gpids, [qcam], gcams, **kw)


def test_junk_is_skipped_and_distractors_are_negatives():
    # query pid 1, cam 0. Sorted by distance: #3 (pid -1: junk), #0 (same pid+cam: junk), #1 (neg),
    # #2 (good), #4 (pid 0 distractor: neg), #5 (good). Non-junk ranks: neg 1, good 2, neg 3, good 4.
    # official: hit at r=2: (1/2-0)*(0/1 + 1/2)/2 = 1/8; hit at r=4: (1-1/2)*(1/3 + 2/4)/2 = 5/24
    #   -> AP = 1/8 + 5/24 = 1/3.   standard: (1/2 + 2/4)/2 = 1/2.   first match at rank 2.
    args = ([0.1, 0.2, 0.3, 0.05, 0.4, 0.5], [1, 2, 1, -1, 0, 1], [0, 1, 1, 1, 2, 2])
    off = _one(*args, max_rank=6)
    assert off.mAP == pytest.approx(1 / 3, abs=1e-15)
    np.testing.assert_array_equal(off.cmc, [0, 1, 1, 1, 1, 1])
    std = _one(*args, ap="standard", max_rank=6)
    assert std.mAP == pytest.approx(0.5, abs=1e-15)
    np.testing.assert_array_equal(std.cmc, [0, 1, 1, 1, 1, 1])
    # mINP: 2 good images, the last at non-junk rank 4 -> 2/4, in both modes
    assert off.mINP == 0.5 and std.mINP == 0.5


def test_ties_follow_gallery_order():
    # equal distances: the earlier gallery image ranks first (MATLAB's stable sort).
    # negative first -> good at rank 2: official (1-0)*(0/1 + 1/2)/2 = 1/4, standard 1/2.
    r = _one([1.0, 1.0], [2, 1], [1, 1], max_rank=2)
    assert r.mAP == pytest.approx(0.25, abs=1e-15)
    np.testing.assert_array_equal(r.cmc, [0, 1])
    assert _one([1.0, 1.0], [2, 1], [1, 1], ap="standard").mAP == pytest.approx(0.5, abs=1e-15)
    # good first -> rank 1: official (1-0)*(1 + 1)/2 = 1
    r = _one([1.0, 1.0], [1, 2], [1, 1], max_rank=2)
    assert r.mAP == 1.0
    np.testing.assert_array_equal(r.cmc, [1, 1])


def test_minp_by_hand():
    # q0 (pid 1, cam 0): ranking #0 good, #1 negative, #2 good, #3 pid -1 junk, #4 good -> non-junk
    #   ranks 1, 3, 4 -> INP 3/4. q1 (pid 2, cam 0): #3 junk, #1 same camera (junk), #0 negative,
    #   #2 negative, #4 negative -> no good image: left out of mINP (its AP counts as 0 officially).
    # q2 (pid 3, cam 1): its one good image (#1 below is pid 3, cam 0) at rank 1 -> INP 1.
    # mINP = (3/4 + 1) / 2 = 7/8.
    d = np.array([[0.1, 0.2, 0.3, 0.35, 0.4], [0.3, 0.2, 0.4, 0.1, 0.5], [0.9, 0.1, 0.5, 0.2, 0.3]])
    gp, gc = [1, 2, 1, -1, 1], [1, 0, 2, 1, 1]
    gp2 = [1, 3, 1, -1, 1]  # the same gallery but #1 is pid 3 for q2's sake
    r = rank_metrics(d, [1, 2, 3], gp2, [0, 0, 1], gc, max_rank=5)
    np.testing.assert_allclose(r.query_inp, [0.75, np.nan, 1.0])
    assert r.mINP == pytest.approx(7 / 8, abs=1e-15)
    assert rank_metrics(d, [1, 2, 3], gp2, [0, 0, 1], gc, ap="standard", max_rank=5).mINP == pytest.approx(7 / 8)
    # every good image first -> INP 1 for each query, whatever comes after
    r = rank_metrics(np.array([[0.1, 0.2, 0.9]]), [1], [1, 1, 2], [0], [1, 1, 1], max_rank=3)
    assert r.mINP == 1.0
    # the query whose pid is junk (MATLAB's degenerate case above) has no non-junk good image;
    # q1 (pid 5): negative #0 at 0.1, then its good #1 -> 1/2
    r = rank_metrics(np.array([[0.2, 0.1, 0.3], [0.1, 0.5, 0.9]]), [-1, 5], [7, 5, -1], [0, 0], [1, 1, 1], max_rank=3)
    np.testing.assert_allclose(r.query_inp, [np.nan, 0.5])
    assert r.mINP == 0.5


def test_query_key_pairs_identical_query_lists_only():
    d = np.array([[0.1, 0.5], [0.9, 0.2]])
    a = rank_metrics(d, [1, 3], [1, 3], [0, 0], [1, 1])
    b = rank_metrics(d[:, ::-1], [1, 3], [3, 1], [0, 0], [1, 1])  # another gallery, same queries
    assert a.query_key == b.query_key == query_key([1, 3], [0, 0]) and len(a.query_key) == 16
    others = {query_key([3, 1], [0, 0]), query_key([1, 3], [0, 1]), query_key([1, 3, 3], [0, 0, 0]),
              query_key([1], [0])}
    assert a.query_key not in others and len(others) == 4
    assert rank_metrics(d, [1, 3], [1, 3], [0, 0], [1, 1], ap="standard").query_key == a.query_key


def test_query_without_match_counts_as_zero_only_officially():
    # q0 matches at rank 1 (AP 1); q1 (pid 3) has only a same-camera image (junk) -> no good match.
    # official: mAP (1 + 0)/2, CMC@1 = 1/2, 2 queries; standard: q1 skipped -> 1, 1, 1 query.
    d = np.array([[0.1, 0.5], [0.9, 0.2]])
    args = (d, [1, 3], [1, 3], [0, 0], [1, 0])
    off = rank_metrics(*args, max_rank=2)
    assert (off.mAP, off.num_queries) == (0.5, 2)
    np.testing.assert_array_equal(off.cmc, [0.5, 0.5])
    assert off.query_ap[1] == 0.0 and off.first_rank[1] == 0
    std = rank_metrics(*args, ap="standard", max_rank=2)
    assert (std.mAP, std.num_queries) == (1.0, 1)
    np.testing.assert_array_equal(std.cmc, [1.0, 1.0])
    assert np.isnan(std.query_ap[1])


def test_all_junk_gallery_for_one_query():
    # q1's gallery images are all junk (its own camera, or pid -1): same outcome as "no match".
    d = np.array([[0.3, 0.1, 0.2], [0.3, 0.1, 0.2]])
    r = rank_metrics(d, [1, 2], [1, 2, -1], [0, 0], [1, 0, 1], max_rank=3)
    # q0: good #0 behind junk #2 (pid -1) and negative #1 -> rank 2: AP (0 + 1/2)/2 = 1/4
    assert r.mAP == pytest.approx((0.25 + 0.0) / 2, abs=1e-15)
    np.testing.assert_array_equal(r.cmc, [0, 0.5, 0.5])


def test_single_gallery_image_and_cmc_longer_than_gallery():
    # one good image: rank 1, AP (1-0)*(1+1)/2 = 1; CMC repeats its last value up to max_rank
    r = _one([0.7], [1], [3], max_rank=5)
    assert r.mAP == 1.0 and r.num_queries == 1
    np.testing.assert_array_equal(r.cmc, np.ones(5))


def test_distractors_only_before_the_match():
    # three pid-0 distractors, then the good image at rank 4:
    # official (1-0)*(0/3 + 1/4)/2 = 1/8; standard 1/4; CMC 0,0,0,1,1
    args = ([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1], [1, 1, 1, 1])
    r = _one(*args, max_rank=5)
    assert r.mAP == pytest.approx(1 / 8, abs=1e-15)
    np.testing.assert_array_equal(r.cmc, [0, 0, 0, 1, 1])
    assert _one(*args, ap="standard").mAP == pytest.approx(0.25, abs=1e-15)


def test_query_pid_in_junk_pids_is_kept_exactly_as_matlab():
    # query pid -1: its other-camera pid -1 images are "good" and junk at once. compute_AP.m marks
    # the CMC where the next non-junk image would be (rank 3 here: two negatives before it) but no
    # AP hit -> AP 0 (recall stays 0). Standard mode: no non-junk good image -> skipped.
    d = np.array([[0.2, 0.1, 0.3], [0.1, 0.5, 0.9]])
    args = (d, [-1, 5], [7, 5, -1], [0, 0], [1, 1, 1])
    r = rank_metrics(*args, max_rank=3)
    assert_same(r, reference(*args, max_rank=3))
    assert r.first_rank[0] == 3 and r.query_ap[0] == 0.0
    assert rank_metrics(*args, ap="standard", max_rank=3).num_queries == 1


def test_matches_reference_on_the_hand_cases_too():
    d = np.array([[0.1, 0.2, 0.3, 0.05, 0.4, 0.5], [0.3, 0.3, 0.1, 0.3, 0.2, 0.0]])
    args = (d, [1, 2], [1, 2, 1, -1, 0, 2], [0, 0], [0, 1, 1, 1, 2, 2])
    for ap in ("official", "standard"):
        assert_same(rank_metrics(*args, ap=ap, max_rank=8), reference(*args, ap=ap, max_rank=8))


# --------------------------------------------------------------------------- random equivalence
@st.composite
def problems(draw):
    nq = draw(st.integers(1, 6))
    ng = draw(st.integers(1, 25))
    npid = draw(st.integers(1, 4))
    pid = st.integers(-1, npid)  # -1 junk, 0 distractors, 1.. identities
    cam = st.integers(0, 2)
    qp = draw(st.lists(pid, min_size=nq, max_size=nq))
    gp = draw(st.lists(pid, min_size=ng, max_size=ng))
    qc = draw(st.lists(cam, min_size=nq, max_size=nq))
    gc = draw(st.lists(cam, min_size=ng, max_size=ng))
    if draw(st.booleans()):  # integer-valued distances: many ties
        vals = st.integers(0, 4).map(float)
    else:
        vals = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=draw(st.sampled_from([32, 64])))
    d = np.array(draw(st.lists(vals, min_size=nq * ng, max_size=nq * ng))).reshape(nq, ng)
    return d, np.array(qp), np.array(gp), np.array(qc), np.array(gc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(["official", "standard"]), st.integers(1, 8))
def test_fast_path_equals_plain_reference(prob, ap, chunk):
    d, qp, gp, qc, gc = prob
    good = (qp[:, None] == gp[None, :]) & (qc[:, None] != gc[None, :])
    if ap == "standard":
        good &= ~np.isin(gp, [-1])[None, :]
    if not good.any():  # no query with a good match: a clear error, not a number
        with pytest.raises(DataError, match="none of the"):
            rank_metrics(d, qp, gp, qc, gc, ap=ap, max_rank=10, chunk=chunk)
        return
    ref = reference(d, qp, gp, qc, gc, ap=ap, max_rank=10)
    inp = reference_inp(d, qp, gp, qc, gc)
    for method in ("buckets", "sort"):
        res = rank_metrics(d, qp, gp, qc, gc, ap=ap, max_rank=10, chunk=chunk, _method=method)
        assert_same(res, ref)
        np.testing.assert_allclose(res.query_inp, inp, rtol=0, atol=1e-15)
        assert (res.mINP is None) == bool(np.isnan(inp).all())
        if res.mINP is not None:
            assert abs(res.mINP - np.nanmean(inp)) <= 1e-12
        assert 0.0 <= res.mAP <= 1.0
        assert np.all(np.diff(res.cmc) >= 0) and 0 <= res.cmc[0] and res.cmc[-1] <= 1


def test_float32_input_and_chunking_do_not_change_results():
    rng = np.random.default_rng(3)
    nq, ng = 40, 500
    gp = rng.integers(-1, 30, ng)
    gc = rng.integers(0, 6, ng)
    qp = rng.integers(1, 30, nq)
    qc = rng.integers(0, 6, nq)
    d = rng.random((nq, ng)).astype(np.float32)
    d[:, ::7] = d[:, :1]  # plenty of exact ties across the row
    for ap in ("official", "standard"):
        ref = reference(d, qp, gp, qc, gc, ap=ap)
        for chunk in (1, 7, 256):
            assert_same(rank_metrics(d, qp, gp, qc, gc, ap=ap, chunk=chunk), ref)
        assert_same(rank_metrics(torch.from_numpy(d), qp, gp, qc, gc, ap=ap), ref)


def test_subnormal_and_negative_distances():
    # extreme scales: the bucketing must stay exact (monotone) for tiny and negative values
    rng = np.random.default_rng(4)
    d = rng.integers(-3, 3, (5, 40)) * 1e-310
    d[2] = -d[2]
    gp, gc = rng.integers(0, 5, 40), rng.integers(0, 3, 40)
    qp, qc = np.array([1, 2, 3, 4, 1]), np.array([0, 1, 2, 0, 1])
    for ap in ("official", "standard"):
        assert_same(rank_metrics(d, qp, gp, qc, gc, ap=ap), reference(d, qp, gp, qc, gc, ap=ap))


# --------------------------------------------------------------------------- bad input
GOOD = dict(q_pids=[1, 2], g_pids=[1, 2, 3], q_camids=[0, 0], g_camids=[1, 1, 1])


def _call(d, **over):
    kw = {**GOOD, **over}
    return rank_metrics(d, kw["q_pids"], kw["g_pids"], kw["q_camids"], kw["g_camids"], **kw.get("opts", {}))


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(q_pids=[1, 2, 3]), "q_pids has 3 entries but distmat has 2 rows"),
        (dict(g_pids=[1, 2]), "g_pids has 2 entries but distmat has 3 columns"),
        (dict(q_camids=[0]), "q_camids has 1 entries"),
        (dict(g_camids=[[1, 1, 1]]), "g_camids must be a 1-D"),
    ],
)
def test_shape_mismatch_is_named(over, match):
    with pytest.raises(DataError, match=match):
        _call(np.zeros((2, 3)), **over)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_non_finite_distance_is_named(bad, word):
    d = np.zeros((2, 3))
    d[1, 2] = bad
    with pytest.raises(DataError, match=rf"{word}.*\[query 1, gallery 2\]"):
        _call(d)


def test_empty_gallery_empty_queries_and_wrong_rank():
    with pytest.raises(DataError, match="gallery is empty"):
        rank_metrics(np.zeros((2, 0)), [1, 2], [], [0, 0], [])
    with pytest.raises(DataError, match="query set is empty"):
        rank_metrics(np.zeros((0, 3)), [], [1, 2, 3], [], [1, 1, 1])
    with pytest.raises(DataError, match="2-D"):
        rank_metrics(np.zeros(3), [1], [1, 2, 3], [0], [1, 1, 1])


def test_no_valid_query_is_an_error():
    # every same-pid image shares the query's camera: nothing is "good"
    with pytest.raises(DataError, match="none of the 2 queries has a good match"):
        rank_metrics(np.zeros((2, 2)), [1, 2], [1, 2], [0, 0], [0, 0])


@pytest.mark.parametrize(
    "opts, match",
    [(dict(ap="interpolated"), "ap must be one of"), (dict(max_rank=0), "max_rank"), (dict(chunk=0), "chunk")],
)
def test_bad_options(opts, match):
    with pytest.raises(ConfigError, match=match):
        _call(np.zeros((2, 3)), opts=opts)


def test_result_helpers():
    r = _one([0.1, 0.2], [0, 1], [1, 1], max_rank=20)
    d = r.to_dict()
    assert d["rank1"] == 0.0 and d["rank5"] == 1.0 and d["ap"] == "official" and len(d["cmc"]) == 20
    assert d["mINP"] == 0.5 and d["query_key"] == query_key([1], [0])
    # results without the optional fields (made before they existed) give the older keys only
    old = RankMetrics(cmc=r.cmc, mAP=r.mAP, num_queries=1, ap="official", query_ap=r.query_ap, first_rank=r.first_rank)
    assert set(d) - set(old.to_dict()) == {"mINP", "query_key"}
    assert r.rank(2) == 1.0
    with pytest.raises(ConfigError):
        r.rank(21)


# --------------------------------------------------------------------------- distances
def test_pairwise_distances_is_euclidean():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    expected = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(pairwise_distances(q, g, chunk=3), expected, rtol=1e-10, atol=1e-12)
    out = pairwise_distances(torch.from_numpy(q).float(), torch.from_numpy(q).float())
    assert out.dtype == np.float64 and np.all(np.diag(out) < 1e-3) and np.all(out >= 0)
    with pytest.raises(DataError, match="5-D but gallery features are 4-D"):
        pairwise_distances(q, g[:, :4])
