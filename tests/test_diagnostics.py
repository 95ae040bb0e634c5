"""jlml_lib.diagnostics (notebook 10): pair distances, ROC, camera-pair Rank-1, worst queries and the
per-branch view, on hand-computed cases and against plain reference loops; its figures."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jlml_lib import diagnostics as dg
from jlml_lib.data import load_dataset
from jlml_lib.engine.checkpoint import save_final
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.data import build_loader
from jlml_lib.distances import pairwise_distances
from jlml_lib.evaluation import RankMetrics, rank_metrics
from jlml_lib.features import extract_features
from jlml_lib.io import write_json
from jlml_lib.paths import RunDir
from jlml_lib.results import plots
from jlml_lib.selection import sorted_column_norms, unit_stripe_norms

NAN = math.nan


def _col(xs):
    """1-D features: the L2 distance of two items is |x - y|, easy to rank by hand."""
    return np.asarray(xs, dtype=np.float64)[:, None]


# ---------------------------------------------------------------- pair distances and the ROC
def test_pairs_follow_the_market_rules():
    # queries: pid 1 cam 0 at x=0; pid 2 cam 1 at x=10
    q = _col([0, 10]), [1, 2], [0, 1]
    # gallery: pid 1 cam 1 (positive of q0), pid 1 cam 0 (junk for q0: same camera), pid 2 cam 0
    # (positive of q1), a pid -1 box (junk for both), a pid 0 distractor (negative), pid 2 cam 1
    # (junk for q1: same camera)
    g = _col([1, 0.5, 12, 0.1, 3, 10]), [1, 1, 2, -1, 0, 2], [1, 0, 0, 2, 2, 1]
    pairs = dg.pair_distances(q[0], g[0], q[1], g[1], q[2], g[2])
    assert sorted(pairs.positive) == [1, 2]
    # q0: pid 2 at 12, the distractor at 3, pid 2 at 10; q1: pid 1 at 9 and 9.5, the distractor at 7
    assert sorted(pairs.negative) == [3, 7, 9, 9.5, 10, 12]
    assert pairs.positive.dtype == np.float32
    # chunks change nothing
    again = dg.pair_distances(q[0], g[0], q[1], g[1], q[2], g[2], chunk=1)
    assert np.array_equal(np.sort(again.negative), np.sort(pairs.negative))
    with pytest.raises(DataError, match="g_pids has 2 entries but there are 6"):
        dg.pair_distances(q[0], g[0], q[1], [1, 2], q[2], g[2])
    with pytest.raises(DataError, match="0 positive"):
        dg.pair_distances(q[0], g[0], [7, 8], g[1], q[2], g[2])


def test_tpr_at_fpr_by_hand():
    pairs = dg.PairDistances(np.array([1, 4, 6, 8, 3.0]), np.array([7, 2, 5, 3.0]))
    # negatives sorted 2, 3, 5, 7: FPR f lets floor(4 f) of them in, the threshold stays below the next
    assert dg.tpr_at_fpr(pairs, 0.0) == 1 / 5    # below 2: the positive at 1
    assert dg.tpr_at_fpr(pairs, 0.25) == 1 / 5   # below 3: the positive at 3 ties the negative, not in
    assert dg.tpr_at_fpr(pairs, 0.49) == 1 / 5
    assert dg.tpr_at_fpr(pairs, 0.5) == 3 / 5    # below 5: 1, 3, 4
    assert dg.tpr_at_fpr(pairs, 0.75) == 4 / 5   # below 7
    assert dg.tpr_at_fpr(pairs, 1.0) == 1.0
    with pytest.raises(ConfigError, match=r"fpr must be in \[0, 1\]"):
        dg.tpr_at_fpr(pairs, 1e2)


def test_roc_by_hand():
    fpr, tpr = dg.roc_curve(dg.PairDistances(np.array([1.0, 3.0]), np.array([2.0])))
    assert fpr.tolist() == [0, 0, 0, 1, 1, 1] and tpr.tolist() == [0, 0, 0.5, 0.5, 1, 1]
    assert dg.roc_auc(dg.PairDistances(np.array([1.0, 3.0]), np.array([2.0]))) == 0.5
    # a tie between a positive and a negative counts one half
    assert dg.roc_auc(dg.PairDistances(np.array([2.0]), np.array([2.0]))) == 0.5


distances = st.lists(st.integers(0, 6).map(float), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(distances, distances, st.floats(0, 1))
def test_roc_and_tpr_against_every_threshold(pos, neg, f):
    """Plain references: every threshold t (and none) as a classifier "accept when distance ≤ t"."""
    pairs = dg.PairDistances(np.array(pos), np.array(neg))
    p, n = np.array(pos), np.array(neg)
    ts = [-np.inf, *sorted(set(pos) | set(neg))]
    points = {(float(np.mean(n <= t)), float(np.mean(p <= t))) for t in ts}
    best = max(tp for fp, tp in points if fp <= f + 1e-12)
    assert dg.tpr_at_fpr(pairs, f) == pytest.approx(best)
    fpr, tpr = dg.roc_curve(pairs)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # the curve's corners are the classifiers at the positive distances
    assert {(float(np.mean(n <= t)), float(np.mean(p <= t))) for t in pos} <= set(zip(fpr.tolist(), tpr.tolist()))
    wins = np.mean((p[:, None] < n[None, :]) + 0.5 * (p[:, None] == n[None, :]))
    assert dg.roc_auc(pairs) == pytest.approx(wins)


# ---------------------------------------------------------------- camera pairs
# 1-D features; cameras 0..3. Query pid 1 cam 0 at 0, pid 2 cam 0 at 5, pid 1 cam 1 at 0.25,
# pid 3 cam 1 at 9. Camera 3 holds only pid 4 (nobody's match); a pid -1 box sits in camera 1.
Q = _col([0, 5, 0.25, 9]), np.array([1, 2, 1, 3]), np.array([0, 0, 1, 1])
G = (_col([2, 1, 5.5, 0.3, 0.1, 0, 0.1, 100]), np.array([1, 2, 2, 1, 3, -1, 1, 4]),
     np.array([1, 1, 2, 2, 2, 1, 0, 3]))


def test_camera_pair_rank1_by_hand():
    rank1, queries = dg.camera_pair_rank1(Q[0], G[0], Q[1], G[1], Q[2], G[2])
    labels = ["cam 1", "cam 2", "cam 3", "cam 4"]
    assert list(rank1.index) == labels and list(rank1.columns) == labels
    expected = [
        # cam 1 -> cam 2: pid 1 at 0 sees pid 2 (1) before pid 1 (2); pid 2 at 5 sees pid 1 (3) before
        # pid 2 (4): 0/2. cam 1 -> cam 3: pid 1 at 0 sees pid 3 (0.1) first; pid 2 at 5 its match (0.5): 1/2
        [NAN, 0.0, 0.5, NAN],
        # cam 2 -> cam 1: only pid 1 has a match there, and it is nearest: 1/1. cam 2 -> cam 3: pid 1
        # at 0.25 finds itself at 0.3 (0.05) before pid 3 (0.15); pid 3 at 9 sees pid 2 (5.5) first: 1/2
        [1.0, NAN, 0.5, NAN],
        [NAN] * 4,  # no query from camera 3
        [NAN] * 4,  # nor from camera 4
    ]
    np.testing.assert_array_equal(rank1.to_numpy(), np.array(expected))
    np.testing.assert_array_equal(queries.to_numpy(), [[0, 2, 2, 0], [1, 0, 2, 0], [0] * 4, [0] * 4])


def _reference_rank1(qf, gf, qp, gp, qc, gc, a, b):
    """Plain loop: each query of camera a with a match in camera b; is the nearest non-junk image
    of camera b (ties by gallery order) that person?"""
    hits = []
    for i in np.flatnonzero(qc == a):
        cand = [j for j in np.flatnonzero(gc == b) if gp[j] != -1]
        if not any(gp[j] == qp[i] for j in cand):
            continue
        d = [float(np.linalg.norm(qf[i] - gf[j])) for j in cand]
        hits.append(gp[cand[int(np.argmin(d))]] == qp[i])  # argmin: the first of equal minima
    return (float(np.mean(hits)) if hits else NAN), len(hits)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_camera_pair_rank1_against_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    qf, gf = rng.integers(0, 5, (12, 2)).astype(float), rng.integers(0, 5, (30, 2)).astype(float)
    qp, gp = rng.integers(1, 5, 12), rng.choice([-1, 0, 1, 2, 3, 4], 30)
    qc, gc = rng.integers(0, 3, 12), rng.integers(0, 3, 30)
    rank1, queries = dg.camera_pair_rank1(qf, gf, qp, gp, qc, gc)
    cams = np.unique(np.concatenate([qc, gc]))
    for a in cams:
        for b in cams:
            got = rank1.loc[dg.camera_label(a), dg.camera_label(b)]
            if a == b:
                assert np.isnan(got)
                continue
            want, n = _reference_rank1(qf, gf, qp, gp, qc, gc, a, b)
            assert queries.loc[dg.camera_label(a), dg.camera_label(b)] == n
            assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want)


# ---------------------------------------------------------------- worst queries
def test_worst_queries_skip_queries_with_nothing_to_find():
    m = RankMetrics(cmc=np.ones(1), mAP=0.5, num_queries=5, ap="official",
                    query_ap=np.array([0.5, 0.0, 0.2, 1.0, 0.2]), first_rank=np.array([2, 0, 3, 1, 4]),
                    mINP=0.5, query_inp=np.array([0.5, NAN, 0.3, 1.0, 0.2]))
    assert dg.worst_queries(m, 3).tolist() == [2, 4, 0]  # query 1 has no match; a tie keeps query order
    assert dg.worst_queries(m, 10).tolist() == [2, 4, 0, 3]
    old = RankMetrics(cmc=np.ones(1), mAP=0.5, num_queries=1, ap="official", query_ap=np.zeros(1),
                      first_rank=np.ones(1, dtype=int))
    with pytest.raises(ConfigError, match="no per-query mINP"):
        dg.worst_queries(old)
    table = dg.query_table(m, [2, 4], q_pids=[5, 6, 7, 8, 9], q_camids=[0, 1, 2, 3, 5])
    assert table.index.tolist() == [2, 4] and table["pid"].tolist() == [7, 9]
    assert table["camera"].tolist() == ["cam 3", "cam 6"] and table["first match at rank"].tolist() == [3, 4]
    assert table["AP (%)"].tolist() == [20.0, 20.0] and table["INP (%)"].tolist() == [30.0, 20.0]


def test_ranked_gallery_skips_junk_and_keeps_gallery_order_on_ties():
    # query pid 1 cam 0; gallery: pid 1 cam 0 (junk), pid -1 (junk), pid 2 at 1, pid 1 cam 1 at 1 (a tie:
    # gallery order first), distractor at 0.5, pid 3 at 3
    d = np.array([[0.1, 0.2, 1.0, 1.0, 0.5, 3.0]])
    tops = dg.ranked_gallery(d, [1], [0], [1, -1, 2, 1, 0, 3], [0, 2, 1, 1, 2, 0], top=3)
    assert [t.tolist() for t in tops] == [[4, 2, 3]]
    assert dg.ranked_gallery(d, [1], [0], [1, -1, 2, 1, 0, 3], [0, 2, 1, 1, 2, 0], top=10)[0].tolist() == [4, 2, 3, 5]


# ---------------------------------------------------------------- a run, per branch
def test_split_joint_gives_each_branch():
    torch.manual_seed(0)
    model = make_config("smoke").build_model(5).eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        parts = dg.split_joint(model.features(x, "joint"), int(model.global_fc_weight.shape[0]))
        for kind in ("global", "local"):
            torch.testing.assert_close(parts[kind], model.features(x, kind), rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="global_dim=1024"):
        dg.split_joint(parts["joint"], 1024)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_root):
    """A synthetic Market-1501 copy and an untrained model saved as a run's final checkpoint."""
    ds = load_dataset("market1501", synthetic_root("market1501", scale=0.01, seed=1))
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(1)
    cfg = make_config("smoke", {"eval_normalize": True})
    save_final(run, model=cfg.build_model(ds.num_train_pids), iteration=0, config=cfg.to_dict(),
               num_classes=ds.num_train_pids, data={})
    write_json(RunDir(run).config, {**cfg.to_dict(), "source": ds.source,
                                    "components": [{"dataset": ds.name, "source": ds.source, "root": str(ds.root)}]})
    return run, ds


def test_the_run_is_diagnosed_on_its_own_data(tiny_run, tmp_path):
    run, ds = tiny_run
    assert dg.run_data(run) == {"dataset": "market1501", "source": "synthetic", "root": str(ds.root)}
    dg.check_data(run, ds)
    with pytest.raises(ConfigError, match="trained on synthetic market1501 .* not on real market1501"):
        dg.check_data(run, dataclasses.replace(ds, source="real"))
    with pytest.raises(ConfigError, match="test protocol 'viper'"):
        dg.check_data(run, dataclasses.replace(ds, protocol="viper"))
    assert dg.recorded(run) == {}  # evaluated nothing (no metrics.json)
    with pytest.raises(ConfigError, match="cannot read the run's config.json"):
        dg.run_data(tmp_path)


@pytest.mark.slow
def test_branch_metrics_equal_the_evaluation_of_each_kind(tiny_run):
    run, ds = tiny_run
    rf = dg.run_features(run, ds)
    table = dg.branch_metrics(rf, {"joint": {"rank1": 0.5, "mAP": 0.25}})
    assert list(table.index) == ["joint", "global", "local"]
    assert table.loc["joint", "dims"] == table.loc["global", "dims"] + table.loc["local", "dims"]
    assert table.loc["joint", "recorded Rank-1"] == 50 and np.isnan(table.loc["local", "recorded mAP"])
    for kind in ("joint", "global", "local"):
        # reference: each kind extracted on its own, normalised as the run asks, ranked on the dense matrix
        def feats(items):
            loader = build_loader(items, image_size=rf.cfg.image_size, train=False, batch_size=64)
            f, p, c = extract_features(rf.model, loader, kind=kind)
            return torch.nn.functional.normalize(f, dim=1), p, c

        (qf, qp, qc), (gf, gp, gc) = feats(ds.query), feats(ds.gallery)
        ref = rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc)
        assert table.loc[kind, "dims"] == qf.shape[1]
        assert table.loc[kind, "Rank-1"] == pytest.approx(100 * ref.rank(1))
        assert table.loc[kind, "mAP"] == pytest.approx(100 * ref.mAP, abs=1e-6)
        assert table.loc[kind, "mINP"] == pytest.approx(100 * ref.mINP, abs=1e-6)
    with pytest.raises(ConfigError, match="no trained model"):
        dg.run_features(run / "nowhere", ds)


# ---------------------------------------------------------------- figures
def test_figures(tmp_path):
    pairs = dg.PairDistances(np.array([1.0, 2.0, 2.5]), np.array([2.2, 3.0, 4.0, 5.0]))
    fpr, tpr = dg.roc_curve(pairs)
    fig = plots.plot_pair_distances(pairs.positive, pairs.negative, fpr, tpr,
                                    {f: dg.tpr_at_fpr(pairs, f) for f in dg.FPR_POINTS}, "x",
                                    path=tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["TPR 66.7% @ FPR 0.01", "TPR 66.7% @ FPR 0.001"]
    rank1, queries = dg.camera_pair_rank1(Q[0], G[0], Q[1], G[1], Q[2], G[2])
    fig = plots.plot_camera_matrix(rank1, queries)
    cells = {t.get_text() for t in fig.axes[0].texts}
    assert cells == {"0\nn=2", "50\nn=2", "100\nn=1"}  # blank cells carry no text
    torch.manual_seed(0)
    model = make_config("smoke").build_model(5)
    fig = plots.plot_selection_norms(unit_stripe_norms(model), sorted_column_norms(model))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"stripe {j}" for j in range(1, 5)]
