"""The primer's and the protocols' pictures: the artists each figure must hold, the numbers each protocol
picture draws (against the paper's Table 2), and the images it picks (against the protocol's rules)."""
from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from jlml_lib.data import load_dataset  # noqa: E402
from jlml_lib.errors import DataError  # noqa: E402
from jlml_lib.evaluation import AP_MODES  # noqa: E402
from jlml_lib.primer import FOUR_QUERIES, SIX_IMAGES, ap_by_hand, first_match  # noqa: E402
from jlml_lib.results import primer_plots as pp  # noqa: E402
from jlml_lib.results import protocol_plots as prot  # noqa: E402
from jlml_lib.results.paper import load_paper_table  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def datasets(synthetic_root):
    # the same copies as test_data_verify.py / test_data_images.py (generated once per session)
    root = synthetic_root("market1501", "cuhk03", "grid", scale={"market1501": 0.01, "cuhk03": 0.02, "grid": 0.05})
    vroot = synthetic_root("viper", scale=0.05, seed=0)
    out = {n: load_dataset(n, root) for n in ("market1501", "cuhk03", "grid")}
    return out | {"viper": load_dataset("viper", vroot)}


def test_ranked_list_frames_each_status():
    table = SIX_IMAGES.ranked()
    fig = pp.plot_ranked_list(table, 7, 0)
    axes = fig.axes
    assert len(axes) == 1 + len(table)
    assert axes[0].get_title().startswith("query")
    for ax, row in zip(axes[1:], table.itertuples()):
        spine = ax.spines["left"]
        assert spine.get_edgecolor() == to_rgba(pp.STATUS_COLOURS[row.status])
        assert (spine.get_linestyle() == ":") == (row.status == "junk")  # junk is greyed (dotted)
        assert ax.get_title().startswith("junk: no rank" if row.status == "junk" else f"rank {row.rank}")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 5 and labels[0] == pp.STATUS_TEXT["query"]


def test_cmc_steps_draws_the_library_curve():
    first = [first_match(FOUR_QUERIES.ranked(q)) for q in range(4)]
    cmc = FOUR_QUERIES.library("official").cmc
    fig = pp.plot_cmc_steps(first, 8, cmc)
    left, right = fig.axes
    np.testing.assert_array_equal(left.images[0].get_array(), (np.array(first)[:, None] <= np.arange(1, 9)))
    assert sum(t.get_text() == "★" for t in left.texts) == 4
    lines = right.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), 100 * cmc)  # the hand-built step curve
    np.testing.assert_allclose(lines[-1].get_ydata(), 100 * cmc)  # rank_metrics' markers
    assert lines[-1].get_marker() == "x"


def test_ap_areas_one_shape_per_true_match():
    table = SIX_IMAGES.ranked()
    steps = {mode: ap_by_hand(table, mode)[1] for mode in AP_MODES}
    fig = pp.plot_ap_areas(steps)
    for ax, mode in zip(fig.axes, AP_MODES):
        shapes = [p for p in ax.patches if isinstance(p, Polygon)]
        assert len(shapes) == 2  # two true matches
        area = sum(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
                   for x, y in (s.get_xy()[:-1].T for s in shapes))
        assert area == pytest.approx(ap_by_hand(table, mode)[0])  # AP is the shaded area
        assert f"{ap_by_hand(table, mode)[0]:.3f}" in ax.get_title()


def test_identities_across_cameras_picture(datasets):
    from jlml_lib.data.examples import identities_across_cameras

    ds = datasets["market1501"]
    rows = identities_across_cameras(ds.query + ds.gallery, 2)
    fig = pp.plot_identities(rows, "same person")
    assert len(fig.axes) == 2 * max(len(items) for _, items in rows)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == sum(len(items) for _, items in rows)
    assert all(f"id {rows[0][0]}," in ax.get_title() for ax in shown[:len(rows[0][1])])


def test_protocol_numbers_are_the_papers_table2(datasets):
    t2 = load_paper_table(2).set_index("dataset_key")
    pics = {n: prot.PICTURES[ds.protocol](ds) for n, ds in datasets.items()}
    bars = {n: {f"{b}/{label}": c for b, segs in p.bars for label, c, _ in segs} for n, p in pics.items()}
    for name in ("cuhk03", "viper", "grid"):
        train = next(c for k, c in bars[name].items() if k.endswith("/train"))
        test = next(c for k, c in bars[name].items() if k.endswith("/test"))
        assert (train, test) == (t2.loc[name, "train_ids"], t2.loc[name, "test_ids"])
    # GRID: the 775 distractors are Table 2's 1,275 images less one probe and one match per person
    g = t2.loc["grid"]
    assert bars["grid"]["gallery of a fold (900)/distractors"] == g.labelled - 2 * g.ids == 775
    # Market-1501: the gallery is Table 2's detected boxes less the 12,936 training boxes (design §4)
    market = {k.split("/")[-1]: c for k, c in bars["market1501"].items() if k.startswith("gallery")}
    assert sum(market.values()) == t2.loc["market1501", "detected"] - 12936
    assert (market["distractors 0000"], market["junk -1"]) == (2798, 3819)
    assert bars["cuhk03"]["gallery of one draw (of 10)/true match"] == 1
    assert sum(c for k, c in bars["cuhk03"].items() if k.startswith("gallery")) == t2.loc["cuhk03", "test_ids"]


def test_protocol_pictures_follow_the_rules(datasets):
    m = prot.market1501(datasets["market1501"])
    (_, query_row), (_, gallery_row) = m.rows
    q_pid, q_cam = (int(s) for s in query_row[0][2].split("id ")[1].split(", cam "))
    assert all(f"id {q_pid}, cam {q_cam}" in cap for _, _, cap in query_row)  # the multi-query set
    assert {"good", "junk", "distractor", "wrong"} <= {s for _, s, _ in gallery_row}
    c = prot.cuhk03_classic(datasets["cuhk03"])
    drawn = c.rows[1][1]
    assert [s for _, s, _ in drawn].count("good") == 1
    ids = [cap.split(",")[0] for _, _, cap in drawn]
    assert len(ids) == len(set(ids))  # single-shot: one image per person
    v = prot.viper(datasets["viper"])
    assert [cap.split(",")[0] for _, _, cap in v.rows[0][1]] == [cap.split(",")[0] for _, _, cap in v.rows[1][1]]
    assert all("cam 1" in cap for _, _, cap in v.rows[0][1]) and all("cam 2" in cap for _, _, cap in v.rows[1][1])
    gr = prot.grid(datasets["grid"])
    assert {s for _, s, _ in gr.rows[1][1]} == {"good", "distractor"}


def test_draw_holds_bars_text_and_framed_images(datasets):
    pic = prot.grid(datasets["grid"])
    fig = prot.draw(pic)
    bars = fig.axes[0]
    assert len(bars.patches) == sum(len(segs) for _, segs in pic.bars)
    assert sorted(p.get_width() for p in bars.patches) == sorted(c for _, segs in pic.bars for _, c, _ in segs)
    assert pic.notes[0] in fig.axes[1].texts[0].get_text()
    assert sum(bool(ax.images) for ax in fig.axes) == sum(len(items) for _, items in pic.rows)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {pp.STATUS_TEXT[s] for s in
                                                                  ("query", "good", "distractor")}
    with pytest.raises(DataError, match="no picture for protocol 'cuhk03-new'"):
        prot.plot_protocol(dataclasses.replace(datasets["market1501"], protocol="cuhk03-new"))
