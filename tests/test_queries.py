"""jlml_lib.results.queries: per-query results survive the round trip bit for bit, rebuild the
record's means (rank_metrics on the same ranking), pair across runs, and bad files are named."""

from __future__ import annotations

import numpy as np
import pytest

from jlml_lib.errors import DataError
from jlml_lib.evaluation import query_key, rank_metrics
from jlml_lib.results.queries import (
    QUERIES_FILENAME,
    TOP_SECTION,
    QueryResults,
    queries_path,
    read_queries,
    section_of,
    write_queries,
)
from jlml_lib.uncertainty import bootstrap_ci, paired_bootstrap_diff

KEYS = ["rank1", "rank5", "rank10", "rank20", "mAP"]


def problem(seed, nq=50, ng=160):
    rng = np.random.default_rng(seed)
    qp = rng.integers(1, 20, nq)
    gp = np.concatenate([rng.integers(1, 25, ng - 20), np.full(10, -1), np.zeros(10, np.int64)])
    return rng.random((nq, ng)), qp, gp, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


def reference(m):
    return {**{f"rank{k}": m.rank(k) for k in (1, 5, 10, 20)}, "mAP": m.mAP}


@pytest.mark.parametrize("ap", ["official", "standard"])
def test_round_trip_rebuilds_the_metrics(tmp_path, ap):
    d, qp, gp, qc, gc = problem(0)
    single = rank_metrics(d, qp, gp, qc, gc, ap=ap)
    multi = rank_metrics(d * 0.5 + np.random.default_rng(1).random(d.shape), qp, gp, qc, gc, ap=ap)
    path = write_queries(tmp_path, {"single_query": QueryResults.from_metrics(single, qp, qc, num_gallery=len(gp)),
                                    "multi_query": QueryResults.from_metrics(multi, qp, qc, num_gallery=len(gp))})
    assert path == tmp_path / QUERIES_FILENAME == queries_path(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [QUERIES_FILENAME]  # no temporary file left
    back = read_queries(tmp_path)
    assert set(back) == {"single_query", "multi_query"}
    for name, m in (("single_query", single), ("multi_query", multi)):
        r = back[name]
        np.testing.assert_array_equal(r.first_rank, m.first_rank)
        np.testing.assert_array_equal(r.query_ap, m.query_ap)  # NaN where not counted, equal positions
        np.testing.assert_array_equal(r.q_pids, qp)
        np.testing.assert_array_equal(r.q_camids, qc)
        assert (r.ap, r.max_rank, r.num_gallery, r.kind, r.num_draws) == (ap, 50, len(gp), "joint", 1)
        assert r.query_key == m.query_key == query_key(qp, qc)
        assert r.metrics() == reference(m)  # bit for bit
        assert bootstrap_ci(r, r.q_pids, n_boot=300) == bootstrap_ci(m, qp, n_boot=300)
    # two saved results over the same queries pair; the interval of multi - single
    diff = paired_bootstrap_diff(back["multi_query"], back["single_query"], qp, n_boot=300)
    assert diff == paired_bootstrap_diff(multi, single, qp, n_boot=300)


def test_draw_sections_average_per_query(tmp_path):
    d, qp, gp, qc, gc = problem(2)
    rng = np.random.default_rng(3)
    draws, sizes = [], set()
    for _ in range(3):  # three random halves of the gallery, like CUHK03 classic's draws
        sel = np.sort(rng.permutation(len(gp))[: len(gp) // 2])
        # official mode counts every query in every draw, matched or not (average_draws needs that)
        draws.append(rank_metrics(d[:, sel], qp, gp[sel], qc, gc[sel]))
        sizes.add(len(sel))
    r = QueryResults.from_draws(draws, qp, qc, num_gallery=sizes.pop(), kind="global")
    write_queries(tmp_path, {TOP_SECTION: r})
    back = read_queries(tmp_path / QUERIES_FILENAME)[TOP_SECTION]
    assert back.num_draws == 3 and back.kind == "global" and back.first_rank.shape == (3, len(qp))
    got = back.metrics()
    for k in KEYS:  # the protocol's number is the mean over the draws
        assert got[k] == pytest.approx(np.mean([reference(m)[k] for m in draws]), abs=1e-12)
    assert bootstrap_ci(back, qp, n_boot=200) == bootstrap_ci(r, qp, n_boot=200)


def test_rewrite_replaces_and_sections_are_named_by_metric_path(tmp_path):
    d, qp, gp, qc, gc = problem(4)
    m = rank_metrics(d, qp, gp, qc, gc)
    write_queries(tmp_path, {TOP_SECTION: QueryResults.from_metrics(m, qp, qc, num_gallery=len(gp))})
    write_queries(tmp_path, {"single_query": QueryResults.from_metrics(m, qp, qc, num_gallery=len(gp))})
    assert set(read_queries(tmp_path)) == {"single_query"}
    assert section_of("single_query.rank1") == ("single_query", "rank1")
    assert section_of("mAP") == (TOP_SECTION, "mAP")


def test_bad_files_and_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="no per-query results"):
        read_queries(tmp_path)
    (tmp_path / QUERIES_FILENAME).write_bytes(b"not a zip")
    with pytest.raises(DataError, match=QUERIES_FILENAME):
        read_queries(tmp_path)
    d, qp, gp, qc, gc = problem(5)
    m = rank_metrics(d, qp, gp, qc, gc)
    with pytest.raises(DataError, match="same queries"):
        QueryResults.from_metrics(m, qp[:-1], qc[:-1], num_gallery=len(gp))
    a = QueryResults.from_metrics(m, qp, qc, num_gallery=len(gp))
    b = QueryResults.from_metrics(m, qp, qc, num_gallery=len(gp), kind="local")
    with pytest.raises(DataError, match="kinds"):
        write_queries(tmp_path, {"a": a, "b": b})
    with pytest.raises(DataError, match="section name"):
        write_queries(tmp_path, {"x/y": a})
    other = rank_metrics(d[1:], qp[1:], gp, qc[1:], gc)
    with pytest.raises(DataError, match="query_key"):
        paired_bootstrap_diff(a, QueryResults.from_metrics(other, qp[1:], qc[1:], num_gallery=len(gp)))
