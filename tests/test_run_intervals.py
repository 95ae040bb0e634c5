"""Issue 12 end to end: every record folder gets its queries.npz, every record its interval, the tables
show them (``x [lo, hi]``, paired differences in Tables 9-12, the paper-inside mark for real data).

Four tiny runs on synthetic data in a private cache (``JLML_CACHE`` under tmp), shared by the module:
Market-1501 (joint and global features), Market-1501 without SFL (Table 12's ablation) and two VIPeR
splits; the seed aggregate's end-to-end check rides on test_train_runs.py's two-seed run. Every
expected interval is recomputed here from the saved per-query files with :mod:`jlml_lib.uncertainty`
(tested on its own in test_uncertainty.py) or, for the t-intervals, with scipy.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jlml_lib import protocols
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.paths import QUERIES
from jlml_lib.results import intervals as ci
from jlml_lib.results.queries import QUERIES_FILENAME, read_queries, write_queries
from jlml_lib.results.records import read_metrics, write_metrics
from jlml_lib.results.tables import build_tables, cells_frame, fill, scan_records, table_cells, table_frames
from jlml_lib.engine.run import run, run_splits
from jlml_lib.uncertainty import (Interval, bootstrap_ci, intervals_to_json, paired_bootstrap_diff,
                                  stratified_bootstrap_ci)

TINY = dict(iterations=2, batch_size=8, image_height=32, image_width=16, log_every=1, ckpt_every=2,
            workers=0, progress=False, eval_batch_size=64)
MARKET = ["synthetic_scale=0.005"]  # 4 test identities, 18 queries, 256 images to embed
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("JLML_CACHE", str(tmp_path_factory.getbasetemp() / "jlml-cache"))
    root = tmp_path_factory.mktemp("runs")
    try:
        run(make_config("smoke", MARKET + ["eval_features=joint,global"], dataset="market1501", **TINY),
            root / "market")
        run(make_config("smoke", MARKET + ["sfl=false"], dataset="market1501", **TINY), root / "no_sfl")
        run_splits(make_config("smoke", ["synthetic_scale=0.05"], dataset="viper", **TINY), root / "viper", [0, 1])
    finally:
        mp.undo()
    return root


def _json(folder):
    return json.loads((folder / "metrics.json").read_text())


# ---------------------------------------------------------------- queries.npz beside every record
def test_queries_beside_every_evaluation_record(runs):
    folders = [runs / "market", runs / "market" / "eval-global", runs / "no_sfl", runs / "viper" / "split-00",
               runs / "viper" / "split-01"]
    for folder in folders:
        assert (folder / QUERIES).is_file() and (folder / "metrics.json").is_file(), folder
        assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"
    assert QUERIES_FILENAME == QUERIES == "queries.npz"  # one owner (paths), re-exported
    # the sections are named after where their means sit in metrics.json
    market = read_queries(runs / "market")
    assert set(market) == {"single_query", "multi_query"} and market["single_query"].kind == "joint"
    assert read_queries(runs / "market" / "eval-global")["single_query"].kind == "global"
    viper = read_queries(runs / "viper" / "split-01")
    assert set(viper) == {"top"}
    rec = read_metrics(runs / "viper" / "split-01")
    assert viper["top"].metrics()["rank1"] == pytest.approx(rec["metrics"]["rank1"])
    # summary.json stays JSON and holds no per-query object
    assert f'"{protocols.QUERIES_KEY}"' not in (runs / "no_sfl" / "summary.json").read_text()
    # an aggregate keeps no per-query file of its own (its splits and seeds do)
    assert not (runs / "viper" / QUERIES).exists()


def test_queries_file_is_replaced_atomically(tmp_path, monkeypatch, runs):
    sections = read_queries(runs / "no_sfl")
    write_queries(tmp_path, sections)
    before = (tmp_path / QUERIES).read_bytes()

    def broken(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        write_queries(tmp_path, sections)
    assert (tmp_path / QUERIES).read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------- the intervals in metrics.json
@pytest.mark.parametrize("sub", ["market", "market/eval-global", "no_sfl", "viper/split-00"])
def test_run_interval_is_the_cluster_bootstrap_of_its_queries(runs, sub):
    folder = runs / sub
    rec = _json(folder)
    assert rec["interval_method"] == {"name": "cluster-bootstrap", "level": 0.95, "n_boot": 1000, "seed": 0,
                                      "unit": "test identity (query pid)"}
    queries = read_queries(folder)
    assert set(rec["intervals"]) == set(queries)
    for section, q in queries.items():
        expected = intervals_to_json(bootstrap_ci(q, q.q_pids, n_boot=1000, level=0.95, seed=0))
        assert rec["intervals"][section] == expected
        means = rec["metrics"] if section == "top" else rec["metrics"][section]
        for metric in METRICS:
            iv = rec["intervals"][section][metric]
            assert iv["estimate"] == pytest.approx(means[metric], abs=1e-12)
            assert iv["low"] <= iv["estimate"] <= iv["high"]
    assert read_metrics(folder)["intervals"] == rec["intervals"]  # the reader keeps them


def test_split_aggregate_has_stratified_and_t_intervals(runs):
    agg = _json(runs / "viper")
    splits = [read_queries(runs / "viper" / f"split-0{k}")["top"] for k in (0, 1)]
    expected = stratified_bootstrap_ci(splits, [q.q_pids for q in splits], n_boot=1000, level=0.95, seed=0)
    assert agg["intervals"]["top"] == intervals_to_json(expected)
    assert agg["interval_method"]["name"] == "split-stratified-bootstrap" and agg["interval_method"]["splits"] == 2
    per_split = [read_metrics(runs / "viper" / f"split-0{k}")["metrics"]["rank1"] for k in (0, 1)]
    assert agg["intervals"]["top"]["rank1"]["estimate"] == pytest.approx(agg["metrics"]["rank1"])
    t = agg["t_summary"]
    assert t["over"] == "splits" and t["n"] == 2
    r1 = t["sections"]["top"]["rank1"]
    mean, sd = np.mean(per_split), np.std(per_split, ddof=1)
    half = stats.t.ppf(0.975, 1) * sd / math.sqrt(2)
    assert r1["mean"] == pytest.approx(mean) and r1["std"] == pytest.approx(agg["metrics"]["rank1_std"])
    assert (r1["interval"]["low"], r1["interval"]["high"]) == pytest.approx((mean - half, mean + half))


def test_seed_interval_is_a_t_interval_over_seeds():
    # three seeds' Market-1501 results (as run_seeds hands them over): t with 2 degrees of freedom
    seeds = [{"rank1": 0.5, "single_query": {"rank1": r, "mAP": r / 2}, "multi_query": {"rank1": r + 0.1,
                                                                                        "mAP": r / 3}}
             for r in (0.5, 0.6, 0.8)]
    out = ci.seed_uncertainty(seeds)
    assert out["interval_method"] == {"name": "t-over-seeds", "level": 0.95, "seeds": 3}
    assert out["t_summary"]["over"] == "seeds" and set(out["intervals"]) == {"single_query", "multi_query"}
    values = [0.5 / 3, 0.6 / 3, 0.8 / 3]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    iv = out["intervals"]["multi_query"]["mAP"]
    assert (iv["estimate"], iv["low"], iv["high"]) == pytest.approx(
        (np.mean(values), np.mean(values) - half, np.mean(values) + half))
    assert out["t_summary"]["sections"]["single_query"]["rank1"]["std"] == pytest.approx(np.std([0.5, 0.6, 0.8],
                                                                                                 ddof=1))
    assert ci.seed_uncertainty(seeds[:1]) == {}  # one seed: no interval over seeds


# ---------------------------------------------------------------- tables
def test_tables_show_intervals_and_which(runs, tmp_path):
    build_tables(runs, tmp_path)
    md6, md7 = (tmp_path / "table6.md").read_text(), (tmp_path / "table7.md").read_text()
    cell = re.compile(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$")
    rows = [[p.strip() for p in line.strip("|").split("|")] for line in md6.splitlines() if line.startswith("| JLML")]
    assert len(rows) == 4 and all(cell.match(r[3]) for r in rows), rows
    t6 = pd.read_csv(tmp_path / "table6.csv", keep_default_na=False, na_values=[""])
    sq = t6.set_index("column").loc["SQ_R1"]
    rec = next(r for r in scan_records(runs)[0] if r["run_id"] == sq["run_id"])
    iv = rec["intervals"]["single_query"]["rank1"]
    assert (sq["low"], sq["high"]) == pytest.approx((100 * iv["low"], 100 * iv["high"]))
    assert f"{sq['ours']:.1f} [{sq['low']:.1f}, {sq['high']:.1f}]" in md6
    assert sq["interval"] == "cluster-bootstrap" and pd.isna(sq["paper_in_interval"])  # synthetic: no mark
    # which interval: said under each table, from the records that filled it
    assert "95% interval (`cluster-bootstrap`)" in md6 and "95% interval (`split-stratified-bootstrap`)" in md7
    assert "not training randomness" in md6
    t7 = pd.read_csv(tmp_path / "table7.csv").set_index("column")
    assert t7.loc["R1", "interval"] == "split-stratified-bootstrap"  # the 2-split mean fills the cell


def test_ablation_tables_pair_with_the_full_model(runs):
    frames = table_frames(runs, (9, 12))
    paths = {r["run_id"]: r["_path"].parent for r in scan_records(runs)[0]}
    t12 = frames[12].set_index(["row", "column"])
    full, ablation = t12.loc[("With SFL", "SQ_mAP")], t12.loc[("Without SFL", "SQ_mAP")]
    assert pd.isna(full["vs_full"])  # the reference row itself
    qa = read_queries(paths[ablation["run_id"]])["single_query"]
    qb = read_queries(paths[full["run_id"]])["single_query"]
    d = d_sfl = paired_bootstrap_diff(qa, qb, qa.q_pids, n_boot=1000, level=0.95, seed=0)["mAP"]
    assert (ablation["vs_full"], ablation["vs_full_low"], ablation["vs_full_high"]) == pytest.approx(
        (100 * d.estimate, 100 * d.low, 100 * d.high))
    assert ablation["vs_full"] == pytest.approx(ablation["ours"] - full["ours"])
    # Table 9: the global feature against the joint one (two records of one run, same queries)
    t9 = frames[9].set_index(["row", "column"])
    g = t9.loc[("JLML (Global)", "MQ_R1")]
    qg = read_queries(paths[g["run_id"]])["multi_query"]
    qj = read_queries(paths[t9.loc[("JLML (joint)", "MQ_R1"), "run_id"]])["multi_query"]
    d = paired_bootstrap_diff(qg, qj, qg.q_pids, n_boot=1000, seed=0)["rank1"]
    assert (g["vs_full_low"], g["vs_full_high"]) == pytest.approx((100 * d.low, 100 * d.high))
    # a row whose ablation never ran has no difference
    assert t9.loc[("JLML (Local)", "SQ_R1"), ["ours", "vs_full"]].isna().all()
    # 08's view: every filled ablation cell with its paired interval beside the paper's difference
    diffs = ci.differences_frame(frames).set_index(["table", "row", "column"])
    assert len(diffs) == 2 * 4  # Table 9's global row and Table 12's no-SFL row, 4 columns each
    row = diffs.loc[(12, "Without SFL", "SQ_mAP")]
    assert row["ours − full JLML"] == ci.format_interval(ablation["vs_full"], Interval(
        ablation["vs_full"], ablation["vs_full_low"], ablation["vs_full_high"]), scale=1.0, signed=True)
    assert row["paper − full JLML"] == pytest.approx(63.8 - 65.5)  # Table 12: without vs with SFL
    assert row["excludes 0"] == (d_sfl.low > 0 or d_sfl.high < 0)


def test_old_records_fill_cells_without_intervals(runs, tmp_path):
    # a record as written before issue 12 (and before the variant keys added since): no intervals,
    # no queries.npz, no selection -- still read, still fills its cell, shown without [lo, hi]
    old = json.loads((runs / "no_sfl" / "metrics.json").read_text())
    for key in ("intervals", "interval_method", "selection", "start"):
        old.pop(key)
    old["variant"] = {"feature": "joint", "loss": "multi", "shared_conv1": True, "sfl": True}
    old["source"] = "real"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(old))
    rec = read_metrics(tmp_path / "old")
    assert "intervals" not in rec and rec["variant"]["rerank"] is False
    build_tables(tmp_path, tmp_path / "tables")
    sq = old["metrics"]["single_query"]["rank1"] * 100
    md = (tmp_path / "tables" / "table6.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| JLML | SQ_R1"))
    # the number alone, Δ without an inside/outside mark (and flagged: a smoke profile is not Table 4's)
    assert f"| {sq:.1f} | {sq - 85.1:+.1f} (not the paper's recipe) |" in row
    assert "No record behind this table carries an interval yet" in md
    # the ablation has its queries.npz, the (old) full model none: no difference shown, no error
    (tmp_path / "ablation").mkdir()
    for name in ("metrics.json", QUERIES):
        (tmp_path / "ablation" / name).write_bytes((runs / "no_sfl" / name).read_bytes())
    t12 = table_frames(tmp_path, (12,))[12].set_index(["row", "column"])
    assert t12.loc[("Without SFL", "SQ_R1"), "ours"] > 0 and t12["vs_full"].isna().all()


def _market_record(folder, *, source, interval):
    low, high = interval
    metrics = {q: {"rank1": 0.6, "mAP": 0.4} for q in ("single_query", "multi_query")}
    # started as Table 4 says (issue 19: only such a real result is compared with the paper's interval)
    start = {"kind": "checkpoint", "path": "i.pt", "sha256": "0" * 64, "dataset": "imagenet", "source": "real",
             "profile": "pretrain", "iteration": 300000, "start": {"kind": "scratch"}}
    write_metrics(folder, metrics=metrics, config={}, dataset="market1501", source=source, profile="paper",
                  protocol="market1501", wall_time_s=1.0, device="cpu", start=start, uncertainty={
                      "intervals": {q: {"rank1": {"estimate": 0.6, "low": low, "high": high},
                                        "mAP": {"estimate": 0.4, "low": 0.35, "high": 0.45}} for q in metrics},
                      "interval_method": {"name": ci.CLUSTER_BOOTSTRAP, "level": 0.95}})


@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_paper_inside_our_interval_is_marked_for_real_data_only(tmp_path, source):
    # Table 6: SQ R1 85.1 and MQ R1 89.7 in the paper; our interval [50, 86] holds the first only
    _market_record(tmp_path / "runs" / "m", source=source, interval=(0.5, 0.86))
    frame = cells_frame(fill(table_cells(6), scan_records(tmp_path / "runs")[0])).set_index("column")
    build_tables(tmp_path / "runs", tmp_path / "tables")
    md = (tmp_path / "tables" / "table6.md").read_text()
    if source == "real":
        assert frame.loc["SQ_R1", "paper_in_interval"] == "inside"
        assert frame.loc["MQ_R1", "paper_in_interval"] == "outside"
        assert frame.loc["SQ_mAP", "paper_in_interval"] == "outside"  # 65.5 vs [35, 45]
        assert "| 85.1 | 60.0 [50.0, 86.0] | -25.1 (inside) |" in md
        assert "| 89.7 | 60.0 [50.0, 86.0] | -29.7 (outside) |" in md
        marks = ci.paper_marks({6: frame.reset_index()}).set_index("column")
        assert list(marks["paper is"]) == ["inside our interval"] + ["outside our interval"] * 3
        assert marks.loc["SQ_R1", "ours [95% interval]"] == "60.0 [50.0, 86.0]"
    else:
        assert (frame["paper_in_interval"] == "").all() and frame["delta"].isna().all()
        assert "| 85.1 | 60.0 [50.0, 86.0] |  |" in md and "synthetic" in md
        assert ci.paper_marks({6: frame.reset_index()}).empty


def test_bad_interval_fields_are_refused(tmp_path):
    kw = dict(metrics={"rank1": 0.5}, config={}, dataset="viper", source="synthetic", profile="smoke",
              protocol="viper", wall_time_s=1.0, device="cpu")
    with pytest.raises(DataError, match="low <= high"):
        write_metrics(tmp_path, **kw, uncertainty={"intervals": {"top": {"rank1": {
            "estimate": 0.5, "low": 0.6, "high": 0.4}}}, "interval_method": {"name": ci.CLUSTER_BOOTSTRAP}})
    with pytest.raises(DataError, match="interval_method"):
        write_metrics(tmp_path, **kw, uncertainty={"intervals": {"top": {"rank1": {
            "estimate": 0.5, "low": 0.4, "high": 0.6}}}})
    with pytest.raises(DataError, match="unknown uncertainty field"):
        write_metrics(tmp_path, **kw, uncertainty={"errorbars": {}})
    assert not (tmp_path / "metrics.json").exists()


# ---------------------------------------------------------------- notebooks' frames, plots, launch
def test_notebook_frames(runs):
    assert ci.record_folders(runs / "market") == [runs / "market", runs / "market" / "eval-global"]
    frame = ci.interval_frame(*ci.record_folders(runs / "market"), runs / "viper")
    assert list(frame["record"]) == ["joint", "joint", "global", "global", "joint, mean of 2 splits"]
    assert list(frame["query"]) == ["SQ", "MQ", "SQ", "MQ", ""]
    assert list(frame["interval"]) == ["cluster-bootstrap"] * 4 + ["split-stratified-bootstrap"]
    assert all(re.match(r"^\d+\.\d \[\d+\.\d, \d+\.\d\]$", v) for v in frame["rank1"])
    # two models on the same queries: a paired comparison
    paired = ci.paired_frame(runs / "no_sfl", runs / "market").set_index(["query", "metric"])
    qa, qb = (read_queries(runs / sub)["single_query"] for sub in ("no_sfl", "market"))
    d = paired_bootstrap_diff(qa, qb, qa.q_pids, n_boot=1000, seed=0)["rank1"]
    assert paired.loc[("SQ", "rank1"), "a − b (points)"] == ci.format_interval(d.estimate, d, signed=True)
    assert paired.loc[("SQ", "rank1"), "excludes 0"] == (d.low > 0 or d.high < 0)
    with pytest.raises(DataError, match="same queries"):
        ci.paired_frame(runs / "market", runs / "viper" / "split-00")


def test_paper_vs_ours_plot_has_error_bars(runs):
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from jlml_lib.results import plots

    fig = plots.plot_paper_vs_ours(table_frames(runs, (6,)))
    bars = [c for ax in fig.get_axes() for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4  # one per metric column: Table 6's single JLML row has an interval in each
    plt.close(fig)


def test_launch_command_takes_seeds(tmp_path):
    from jlml_lib.workbook.launch import command

    cmd = command("market1501", tmp_path, seeds="0, 1,2")
    assert cmd[cmd.index("--seeds") + 1] == "0,1,2"
    assert command("market1501", tmp_path, seeds=[3, 4])[-2:] == ["--seeds", "3,4"]
    assert "--seeds" not in command("market1501", tmp_path)
    for bad in ("0,0", "a,b", "", [-1]):
        with pytest.raises(ConfigError, match="seeds"):
            command("market1501", tmp_path, seeds=bad)


# ---------------------------------------------------------------- protocols carry their per-query results
@pytest.mark.parametrize("protocol, sections", [("market1501", {"single_query", "multi_query"}),
                                                ("cuhk03-classic", {"top"}), ("cuhk03-new", {"top"}),
                                                ("viper", {"top"}), ("grid", {"top"})])
def test_protocol_results_carry_queries_that_rebuild_their_metrics(protocol, sections):
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(1, 9), 2)
    query = (rng.normal(size=(16, 4)) + pids[:, None], pids, np.zeros(16, np.int64))
    gallery = (rng.normal(size=(32, 4)) + np.repeat(pids, 2)[:, None], np.repeat(pids, 2), np.ones(32, np.int64))
    r = protocols.evaluate_features(protocol, query, gallery, gt_bbox=query if protocol == "market1501" else None,
                                    num_draws=3)
    assert protocols.aggregate([r, r])["rank1"] == pytest.approx(r["rank1"])  # the private key is ignored
    queries = protocols.pop_queries(r)
    json.dumps(r)  # JSON-ready once they are out
    assert set(queries) == sections and protocols.pop_queries(r) == {}
    for section, q in queries.items():
        means = r if section == "top" else r[section]
        assert q.metrics() == pytest.approx({m: means[m] for m in METRICS})
    if protocol == "cuhk03-classic":  # the draws, one row each, averaged per query by the intervals
        assert queries["top"].num_draws == 3
    # what a run records: the cluster bootstrap of each section, estimate = the metric
    out = ci.run_uncertainty(queries)
    assert set(out["intervals"]) == sections
    for section, q in queries.items():
        assert out["intervals"][section] == intervals_to_json(bootstrap_ci(q, q.q_pids, n_boot=1000, seed=0))
