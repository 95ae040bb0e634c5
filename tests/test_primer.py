"""The primer's by-hand measures (jlml_lib.primer) against hand arithmetic and against rank_metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jlml_lib.data.examples import identities_across_cameras, pick, sort_gallery, thumbnail_distances
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import AP_MODES, rank_metrics
from jlml_lib.primer import (FOUR_QUERIES, JUNK_PIDS, SIX_IMAGES, ap_by_hand, cmc_by_hand, first_match,
                             gallery_status, ranked_list)


def test_statuses_follow_the_market_rules():
    assert gallery_status(7, 0, 7, 1) == "good"
    assert gallery_status(7, 0, 7, 0) == "junk"  # same person, same camera
    assert gallery_status(7, 0, -1, 3) == "junk"  # Market-1501's junk boxes
    assert gallery_status(7, 0, 0, 3) == "distractor"
    assert gallery_status(7, 0, 3, 1) == "wrong"
    assert JUNK_PIDS == (-1,)


def test_six_images_by_hand_in_both_conventions():
    table = SIX_IMAGES.ranked()
    assert list(table.status) == ["wrong", "junk", "good", "distractor", "junk", "good"]
    assert table["rank"].dropna().tolist() == [1, 2, 3, 4]  # junk takes no rank
    assert table["rank"].isna().tolist() == [False, True, False, False, True, False]
    # non-junk ranks: miss, HIT (r=2), miss, HIT (r=4); two true matches
    official, steps = ap_by_hand(table, "official")
    # trapezoids: (1/2 - 0) * (0 + 1/2) / 2 + (1 - 1/2) * (1/3 + 1/2) / 2 = 1/8 + 5/24
    assert official == pytest.approx(1 / 8 + 5 / 24) == pytest.approx(1 / 3)
    assert steps["added to AP"].tolist() == pytest.approx([0, 1 / 8, 0, 5 / 24])
    standard, _ = ap_by_hand(table, "standard")
    assert standard == pytest.approx((1 / 2 + 2 / 4) / 2)
    for mode, ours in (("official", official), ("standard", standard)):
        m = SIX_IMAGES.library(mode)
        assert m.mAP == pytest.approx(ours, abs=1e-12)
        assert m.first_rank[0] == first_match(table) == 2
        assert m.rank(1) == 0.0 and m.rank(2) == 1.0


def test_cmc_built_rank_by_rank_equals_rank_metrics():
    first = [first_match(FOUR_QUERIES.ranked(q)) for q in range(4)]
    assert first == [1, 3, 2, 5]  # read off the distance rows by hand (query 2 skips its junk at 0.1)
    cmc = cmc_by_hand(first, 8)
    assert cmc["CMC"].tolist() == [0.25, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert cmc.loc[3, "queries first matched here"] == [1]
    for mode in AP_MODES:
        m = FOUR_QUERIES.library(mode)
        np.testing.assert_array_equal(m.cmc, cmc["CMC"].to_numpy())
        by_hand = [ap_by_hand(FOUR_QUERIES.ranked(q), mode)[0] for q in range(4)]
        np.testing.assert_allclose(m.query_ap, by_hand, atol=1e-12)
    # what mAP adds: query 0 is a Rank-1 success, but its second true match waits at rank 4
    assert ap_by_hand(FOUR_QUERIES.ranked(0), "standard")[0] == pytest.approx((1 / 1 + 2 / 4) / 2)


def test_no_true_match_and_bad_input():
    table = ranked_list([0.1, 0.2], 5, 0, [3, 5], [1, 0])  # a wrong person and a junk image
    assert ap_by_hand(table, "official")[0] == 0.0 and math.isnan(ap_by_hand(table, "standard")[0])
    assert first_match(table) == 0 and cmc_by_hand([0, 1], 2)["CMC"].tolist() == [0.5, 0.5]
    with pytest.raises(ConfigError, match="convention"):
        ap_by_hand(table, "interpolated")
    with pytest.raises(DataError, match="3 distances"):
        ranked_list([0.1, 0.2, 0.3], 5, 0, [3, 5], [1, 0])
    with pytest.raises(DataError, match="no queries"):
        cmc_by_hand([], 5)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 9).flatmap(lambda n: st.tuples(
    st.lists(st.sampled_from([-1, 0, 1, 2, 3]), min_size=n, max_size=n),
    st.lists(st.integers(0, 2), min_size=n, max_size=n),
    st.lists(st.integers(0, 4), min_size=n, max_size=n))))  # few distinct distances: ties
def test_by_hand_equals_rank_metrics_on_random_lists(case):
    g_pids, g_cams, dist = case
    # a second query (person 2) whose true match is one more gallery image, last for query 0: rank_metrics
    # refuses a problem where no query has a match, and ap_by_hand must agree with it either way
    g_pids, g_cams = list(g_pids) + [2], list(g_cams) + [1]
    d = np.array([list(dist) + [9], [5] * len(dist) + [0]], dtype=float)
    table = ranked_list(d[0], 1, 0, g_pids, g_cams)
    for mode in AP_MODES:
        m = rank_metrics(d, [1, 2], g_pids, [0, 0], g_cams, ap=mode, max_rank=len(g_pids))
        ours = ap_by_hand(table, mode)[0]
        if math.isnan(ours):
            assert math.isnan(m.query_ap[0])
        else:
            assert m.query_ap[0] == pytest.approx(ours, abs=1e-12)
        assert m.first_rank[0] == first_match(table)


def _items(spec):
    return [(f"img{i}", p, c) for i, (p, c) in enumerate(spec)]


def test_identities_across_cameras_picks_the_most_seen():
    items = _items([(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0), (0, 0), (0, 1), (-1, 0), (-1, 2)])
    rows = identities_across_cameras(items, 2)
    assert [pid for pid, _ in rows] == [1, 2]  # 3 cameras, then 2; person 3 (one camera) and 0 / -1 never
    assert [[c for _, _, c in its] for _, its in rows] == [[0, 1, 2], [0, 1]]
    with pytest.raises(DataError, match="two cameras"):
        identities_across_cameras(_items([(3, 0), (0, 0), (0, 1)]), 1)


def test_sort_gallery_and_pick():
    gallery = _items([(1, 0), (1, 1), (0, 1), (2, 1), (-1, 1)])
    by = sort_gallery(("q", 1, 0), gallery)
    assert {s: [r for r, _, _ in v] for s, v in by.items()} == {
        "good": ["img1"], "junk": ["img0", "img4"], "distractor": ["img2"], "wrong": ["img3"]}
    assert [r for r, _, _ in sort_gallery(("q", 1, 0), gallery, cameras=False)["good"]] == ["img0", "img1"]
    chosen = pick(gallery, 3, np.random.default_rng(0))
    assert len(chosen) == 3 and chosen == sorted(chosen, key=gallery.index)
    assert pick([], 3, np.random.default_rng(0)) == []


def test_thumbnail_distances(tmp_path):
    paths = []
    for name, colour in (("a", (255, 0, 0)), ("b", (255, 0, 0)), ("c", (0, 0, 255))):
        paths.append(str(tmp_path / f"{name}.png"))
        Image.new("RGB", (64, 128), colour).save(paths[-1])
    d = thumbnail_distances(paths[0], paths)
    assert d[0] == 0 and d[1] == 0 and d[2] == pytest.approx(np.sqrt(16 * 8 * 2))  # two channels differ by 1
