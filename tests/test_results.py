"""results/paper transcription, metrics.json records and the paper-vs-ours table builder.

The transcription is checked against the paper's *prose* (an independent source: the
differences it quotes, the competitor counts, the "2nd best" claims, the training schedule),
against itself (ablation rows that must repeat Table 6) and against dataset facts.
"""
from __future__ import annotations

import json
import math
import re
import socket
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.results import paper as paper_mod
from jlml_lib.results.paper import PAPER_TABLES, load_paper_table, paper_jlml
from jlml_lib.results.records import (REQUIRED_KEYS, git_state, read_metrics, write_complexity,
                                      write_dataset_stats, write_metrics)
from jlml_lib.results.cli import tables as tables_main
from jlml_lib.results.tables import build_tables, table_cells, table_frames

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "paper" / "jlml-ijcai2017.md"
MARKET = ("SQ_R1", "SQ_mAP", "MQ_R1", "MQ_mAP")


def cell(table: int, column: str, **where) -> float:
    df = load_paper_table(table)
    for key, value in where.items():
        df = df[df[key] == value]
    assert len(df) == 1, f"table {table} {where}: {len(df)} rows"
    return float(df[column].iloc[0])


# ============================================================ transcription
def test_every_table_loads_with_expected_shape():
    shapes = {1: (13, 6), 2: (4, 9), 3: (11, 8), 4: (2, 9), 5: (18, 8), 6: (5, 7), 7: (9, 7), 8: (5, 7),
              9: (3, 6), 10: (6, 8), 11: (2, 6), 12: (2, 6), 13: (5, 6)}
    assert set(shapes) == set(PAPER_TABLES)
    for n, shape in shapes.items():
        assert load_paper_table(n).shape == shape, n


def test_dash_is_missing_never_zero():
    # number of "-" cells per accuracy table, counted by hand from the paper
    expected = {5: 21, 6: 2, 7: 5, 8: 0}
    for n, count in expected.items():
        df = load_paper_table(n)
        metrics = df.select_dtypes("number")
        assert int(metrics.isna().sum().sum()) == count, n
        assert not (metrics == 0).any().any(), n
    assert math.isnan(cell(5, "R20", method_key="gog", annotation="labelled"))
    assert load_paper_table(5).query("method_key == 'mtdnet' and annotation == 'detected'")[
        ["R1", "R5", "R10", "R20"]].isna().all(axis=None)
    assert math.isnan(cell(6, "MQ_R1", method_key="scs"))
    # Table 2's printed zeros are values, not gaps
    assert cell(2, "labelled", dataset_key="market1501") == 0


def test_jlml_headline_values():
    assert paper_jlml(13) == {"flops": 1.54e9, "params_million": 7.2, "depth": 39, "streams": 5}
    assert paper_jlml(5)["labelled.R1"] == 83.2
    assert paper_jlml(5)["detected.R20"] == 99.2
    assert paper_jlml(7) == {"R1": 50.2, "R5": 74.2, "R10": 84.3, "R20": 91.6}
    assert paper_jlml(8) == {"R1": 37.5, "R5": 61.4, "R10": 69.4, "R20": 77.4}


def test_ablation_full_rows_repeat_table6():
    jlml6 = paper_jlml(6)
    assert jlml6 == {"SQ_R1": 85.1, "SQ_mAP": 65.5, "MQ_R1": 89.7, "MQ_mAP": 74.5}
    for n in (9, 10, 11, 12):
        assert paper_jlml(n) == jlml6, n


def test_table9_equals_table10_multiloss():
    for feature in ("global", "local", "joint"):
        for col in MARKET:
            assert cell(9, col, feature=feature) == cell(10, col, loss="multi", feature=feature)


# Every "X%(A-B)" the prose quotes, in order, with the two table cells it refers to.
PROSE_QUOTES = [
    (7.9, 83.2, 75.3, (5, "R1", dict(method_key="jlml", annotation="labelled")), (5, "R1", dict(method_key="dgd", annotation="labelled"))),
    (8.6, 80.6, 72.0, (5, "R1", dict(method_key="jlml", annotation="detected")), (5, "R1", dict(method_key="x_corr", annotation="detected"))),
    (19.3, 85.1, 65.8, (6, "SQ_R1", dict(method_key="jlml")), (6, "SQ_R1", dict(method_key="s_cnn"))),
    (13.7, 89.7, 76.0, (6, "MQ_R1", dict(method_key="jlml")), (6, "MQ_R1", dict(method_key="s_cnn"))),
    (12.8, 37.5, 24.7, (8, "R1", dict(method_key="jlml")), (8, "R1", dict(method_key="gog"))),
    (13.1, 78.9, 65.8, (9, "SQ_R1", dict(feature="local")), (6, "SQ_R1", dict(method_key="s_cnn"))),
    (10.4, 86.4, 76.0, (9, "MQ_R1", dict(feature="local")), (6, "MQ_R1", dict(method_key="s_cnn"))),
    (18.3, 57.8, 39.5, (9, "SQ_mAP", dict(feature="local")), (6, "SQ_mAP", dict(method_key="s_cnn"))),
    (20.0, 68.4, 48.4, (9, "MQ_mAP", dict(feature="local")), (6, "MQ_mAP", dict(method_key="s_cnn"))),
    (6.2, 85.1, 78.9, (9, "SQ_R1", dict(feature="joint")), (9, "SQ_R1", dict(feature="local"))),
    (3.3, 89.7, 86.4, (9, "MQ_R1", dict(feature="joint")), (9, "MQ_R1", dict(feature="local"))),
    (7.7, 65.5, 57.8, (9, "SQ_mAP", dict(feature="joint")), (9, "SQ_mAP", dict(feature="local"))),
    (6.1, 74.5, 68.4, (9, "MQ_mAP", dict(feature="joint")), (9, "MQ_mAP", dict(feature="local"))),
    *[(q, a, b, (10, c, dict(loss="multi", feature="joint")), (10, c, dict(loss="uni", feature="joint")))
      for q, a, b, c in [(9.0, 85.1, 76.1, "SQ_R1"), (6.0, 89.7, 83.7, "MQ_R1"),
                         (13.3, 65.5, 52.2, "SQ_mAP"), (11.7, 74.5, 62.8, "MQ_mAP")]],
    *[(q, a, b, (11, c, dict(shared_conv1=True)), (11, c, dict(shared_conv1=False)))
      for q, a, b, c in [(1.9, 85.1, 83.2, "SQ_R1"), (1.4, 89.7, 88.3, "MQ_R1"),
                         (2.4, 65.5, 63.1, "SQ_mAP"), (2.4, 74.5, 72.1, "MQ_mAP")]],
    *[(q, a, b, (12, c, dict(sfl=True)), (12, c, dict(sfl=False)))
      for q, a, b, c in [(1.7, 85.1, 83.4, "SQ_R1"), (1.0, 89.7, 88.7, "MQ_R1"),
                         (1.7, 65.5, 63.8, "SQ_mAP"), (1.6, 74.5, 72.9, "MQ_mAP")]],
]


@pytest.mark.parametrize("quote", PROSE_QUOTES, ids=lambda q: f"{q[0]}%({q[1]}-{q[2]})")
def test_prose_differences_match_the_csv(quote):
    quoted, a, b, (ta, ca, wa), (tb, cb, wb) = quote
    assert cell(ta, ca, **wa) == a
    assert cell(tb, cb, **wb) == b
    assert round(a - b, 1) == quoted  # the paper's own arithmetic


def test_prose_quote_list_is_complete():
    """The quote list above is every "X%(A-B)" in the paper, in order (skips without the paper)."""
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} not present")
    found = re.findall(r"(\d+\.\d)%\((\d+\.\d)-(\d+\.\d)\)", PAPER_MD.read_text(encoding="utf-8"))
    assert [tuple(map(float, f)) for f in found] == [q[:3] for q in PROSE_QUOTES]


def test_prose_claims_about_rankings_and_counts():
    # "against 8 existing methods on CUHK03", "four existing models on Market-1501",
    # "8 strong competitors on VIPeR", "4 competing methods on GRID"
    for n, competitors in {5: 8, 6: 4, 7: 8, 8: 4}.items():
        assert load_paper_table(n).query("method_key != 'jlml'")["method_key"].nunique() == competitors
    # "GRID ... 12.8% ... better than the 2nd best method GOG, a 51.8% relative improvement"
    assert round(100 * (37.5 - 24.7) / 24.7, 1) == 51.8

    def runner_up(n, col, **where):
        df = load_paper_table(n)
        for k, v in where.items():
            df = df[df[k] == v]
        return df.sort_values(col, ascending=False)["method_key"].tolist()[:2]

    assert runner_up(5, "R1", annotation="labelled") == ["jlml", "dgd"]
    assert runner_up(5, "R1", annotation="detected") == ["jlml", "x_corr"]
    assert runner_up(6, "SQ_R1") == runner_up(6, "MQ_R1") == ["jlml", "s_cnn"]
    assert runner_up(8, "R1") == ["jlml", "gog"]
    # VIPeR: "the best performers are hand-crafted feature methods (SCS and NFST)", JLML best deep
    assert runner_up(7, "R1") == ["scs", "nfst"]
    deep = load_paper_table(7).query("category != 'A'").sort_values("R1", ascending=False)
    assert deep["method_key"].iloc[0] == "jlml"
    # Table 13: "2nd smallest model size (7.2M) and 2nd smallest FLOPs", "39 layers, more than all
    # except ResNet50", "5 vs. 1 [streams] in all other CNNs"
    t13 = load_paper_table(13).set_index("model_key")
    assert t13["params_million"].rank()["jlml_resnet39"] == 2
    assert t13["flops"].rank()["jlml_resnet39"] == 2
    assert t13["depth"].sort_values().index[-2:].tolist() == ["jlml_resnet39", "resnet50"]
    assert t13["streams"].drop("jlml_resnet39").eq(1).all()


def test_categories_follow_table3():
    cats = load_paper_table(3).set_index("method_key")["category"]
    for n in (5, 6, 7, 8):
        df = load_paper_table(n)
        assert (df["category"] == df["method_key"].map(cats)).all(), n


def test_cmc_non_decreasing_except_known_typo():
    bad = []
    for n in (5, 7, 8):
        for _, r in load_paper_table(n).iterrows():
            vals = [v for v in r[["R1", "R5", "R10", "R20"]] if not pd.isna(v)]
            if vals != sorted(vals):
                bad.append((n, r["method_key"], r.get("annotation")))
    assert bad == [(5, "xqda", "labelled")]  # R10 86.8 > R20 83.1, printed so (README typo 1)


def test_printed_typos_are_kept():
    assert cell(5, "R10", method_key="xqda", annotation="labelled") == 86.8
    assert cell(5, "R20", method_key="xqda", annotation="labelled") == 83.1
    assert cell(2, "labelled", dataset_key="cuhk03") == 14097  # the .mat has 14,096
    assert set(load_paper_table(5).query("method_key == 'nfst'")["method"]) == {"NSFT"}
    assert set(load_paper_table(6).query("method_key == 'nfst'")["method"]) == {"NFST"}
    assert load_paper_table(3).set_index("method_key").loc["nfst", "metric_cpsl"] == "NSFT"


def test_table2_against_dataset_facts():
    t2 = load_paper_table(2).set_index("dataset_key")
    assert (t2["train_ids"] + t2["test_ids"] == t2["ids"]).all()
    assert t2.loc["viper", "labelled"] == 2 * 632          # one image per person per camera
    assert t2.loc["grid", "labelled"] == 250 + 1025        # probe + gallery folders
    assert t2.loc["market1501", "detected"] == 12936 + 19732  # bounding_box_train + _test
    assert t2.loc["cuhk03", "detected"] == 14097
    assert t2["test_setting"].tolist() == ["SS", "SS", "SS", "SQ/MQ"]


def test_table4_matches_the_implementation_text():
    # "dropping the learning rate by a factor of 10 every 100K iterations for JLML pre-training
    # and every 20K iterations for JLML training"; Table 4 otherwise identical across stages
    t4 = load_paper_table(4).set_index("stage_key")
    assert t4.loc["pretrain", ["lr_gamma", "lr_step", "iterations"]].tolist() == [0.1, 100000, 300000]
    assert t4.loc["train", ["lr_gamma", "lr_step", "iterations"]].tolist() == [0.1, 20000, 50000]
    for col, value in {"base_lr": 0.01, "lr_policy": "step", "momentum": 0.9, "batch_size": 32}.items():
        assert (t4[col] == value).all(), col


def test_paper_loader_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no transcribed Table 14"):
        load_paper_table(14)
    with pytest.raises(ConfigError, match="no JLML result row"):
        paper_jlml(2)
    monkeypatch.setattr(paper_mod, "paper_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "table6.csv"))):
        load_paper_table(6)


# ============================================================ records
def _eval_kwargs(**over):
    kw = dict(metrics={"single_query": {"rank1": 0.5, "mAP": 0.25, "cmc": [0.5, 0.75, 1.0]},
                       "multi_query": {"rank1": 0.625, "mAP": 0.375}},
              config={"lr": 0.01, "batch_size": 32}, dataset="market1501", source="synthetic",
              profile="smoke", protocol="standard", wall_time_s=12.5, device="cpu")
    kw.update(over)
    return kw


def test_records_round_trip(tmp_path):
    kw = _eval_kwargs(extra={"note": "x"})
    path = write_metrics(tmp_path / "run", **kw)
    assert path == tmp_path / "run" / "metrics.json"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
    rec = read_metrics(path.parent)
    for key in ("metrics", "config", "dataset", "source", "profile", "protocol", "wall_time_s", "device"):
        assert rec[key] == kw[key], key
    assert rec["extra"] == {"note": "x"}
    assert rec["schema_version"] == 1 and rec["kind"] == "evaluation"
    assert rec["variant"] == {"feature": "joint", "loss": "multi", "shared_conv1": True, "sfl": True,
                              "feature_layer": "bn", "aggregate": "none", "rerank": False, "lambda": "paper", "study": "none",
                              "trained_on": "same"}
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", rec["run_id"])
    assert set(rec["versions"]) >= {"python", "torch", "torchvision", "numpy"}
    assert set(rec["hardware"]) >= {"cpu_model", "cpu_count", "cuda_devices"}
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", rec["git"]["commit"])
    hostname = socket.gethostname()
    assert hostname not in json.dumps(rec["hardware"])
    assert set(REQUIRED_KEYS) <= set(rec)
    # two records get distinct ids
    assert read_metrics(write_metrics(tmp_path / "run2", **kw))["run_id"] != rec["run_id"]


def test_git_state_outside_a_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": None}


@pytest.mark.parametrize("missing", ["metrics", "source", "run_id", "variant"])
def test_missing_key_names_file_and_key(tmp_path, missing):
    path = write_metrics(tmp_path, **_eval_kwargs())
    rec = json.loads(path.read_text())
    del rec[missing]
    path.write_text(json.dumps(rec))
    with pytest.raises(DataError, match=re.escape(str(path))) as err:
        read_metrics(path)
    assert repr(missing) in str(err.value)


#: a metrics.json as the first schema-1 writer left it (before selection, intervals, start and the
#: variant keys added since), typed out by hand: every later reader must keep reading it
OLD_RECORD = {
    "schema_version": 1, "kind": "evaluation", "run_id": "20250101T000000Z-0a1b2c3d",
    "created": "2025-01-01T00:00:00.000000+00:00", "dataset": "grid", "protocol": "grid", "source": "real",
    "profile": "paper", "metrics": {"rank1": 0.25, "rank5": 0.5, "rank10": 0.625, "rank20": 0.75},
    "config": {"lr": 0.01}, "wall_time_s": 10.0, "device": "cuda", "extra": {"aggregated_over": 10},
    "variant": {"feature": "joint", "loss": "multi", "shared_conv1": True, "sfl": True},
    "git": {"commit": "unknown", "dirty": None}, "versions": {}, "hardware": {},
}


def test_an_old_record_is_read_with_an_unknown_start(tmp_path):
    from jlml_lib.provenance import record_start

    (tmp_path / "runs" / "old").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "metrics.json").write_text(json.dumps(OLD_RECORD))
    rec = read_metrics(tmp_path / "runs" / "old")
    assert "start" not in rec and record_start(rec) == {"kind": "unknown"}
    build_tables(tmp_path / "runs", tmp_path / "tables")
    c = _csv_cell(tmp_path / "tables", 8, "JLML", "R1")
    assert c["ours"] == pytest.approx(25.0) and c["delta"] == pytest.approx(25.0 - 37.5)  # Table 8: 37.5
    assert c["source"].endswith("· cuda · start unknown · start not recorded: not verified as the paper's recipe · "
                                "mean of 10 splits")
    assert c["recipe"] == "start not recorded: not verified as the paper's recipe"
    # the same record with a start: the paper's chain for GRID (ImageNet → CUHK03+Market-1501 → GRID)
    imagenet = {"kind": "checkpoint", "path": "i.pt", "sha256": "0" * 64, "dataset": "imagenet", "source": "real",
                "profile": "pretrain", "iteration": 300000, "start": {"kind": "scratch"}}
    stage = {**imagenet, "path": "s.pt", "dataset": "cuhk03+market1501", "profile": "paper", "iteration": 50000,
             "start": imagenet}
    (tmp_path / "runs" / "old" / "metrics.json").write_text(json.dumps({**OLD_RECORD, "start": stage}))
    build_tables(tmp_path / "runs", tmp_path / "tables")
    c = _csv_cell(tmp_path / "tables", 8, "JLML", "R1")
    assert "· cuda · from CUHK03+Market-1501 (real, paper) ← ImageNet (real, pretrain) · mean of 10" in c["source"]
    assert c["recipe"] == "paper's recipe"


def test_records_keep_their_start(tmp_path):
    start = {"kind": "checkpoint", "path": "pre/checkpoints/final.pt", "sha256": "f" * 64, "dataset": "imagenet",
             "source": "synthetic", "profile": "smoke", "iteration": 300, "start": {"kind": "scratch"}}
    assert read_metrics(write_metrics(tmp_path / "a", **_eval_kwargs(), start=start))["start"] == start
    assert "start" not in read_metrics(write_metrics(tmp_path / "b", **_eval_kwargs()))


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(DataError, match="fractions"):
        write_metrics(tmp_path / "pct", **_eval_kwargs(metrics={"rank1": 83.2}))
    assert not (tmp_path / "pct" / "metrics.json").exists()
    with pytest.raises(DataError, match="source"):
        write_metrics(tmp_path / "s", **_eval_kwargs(source="reproduced"))
    with pytest.raises(DataError, match="feature"):
        write_metrics(tmp_path / "v", **_eval_kwargs(variant={"feature": "both"}))
    with pytest.raises(DataError, match="unknown variant key"):
        write_metrics(tmp_path / "v", **_eval_kwargs(variant={"share_conv": False}))
    with pytest.raises(DataError, match="train_ids"):
        write_metrics(tmp_path / "d", **_eval_kwargs(kind="dataset_stats", metrics={"cams": 2}))
    bad = tmp_path / "broken" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        read_metrics(bad)
    with pytest.raises(DataError, match="no such metrics file"):
        read_metrics(tmp_path / "nowhere")


# ============================================================ table builder
def _set_created(path: Path, created: str) -> None:
    rec = json.loads(path.read_text())
    rec["created"] = created
    path.write_text(json.dumps(rec))


def _md_row(md: str, row: str, column: str) -> list[str]:
    for line in md.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) >= 6 and parts[0] == row and parts[1].split(" ")[0] == column:  # 7 in Tables 9-12
            return parts
    raise AssertionError(f"no row {row!r} / {column!r} in\n{md}")


@pytest.fixture
def built(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(runs / "market", **_eval_kwargs())
    write_metrics(runs / "market" / "eval-global", **_eval_kwargs(
        metrics={"single_query": {"rank1": 0.25, "mAP": 0.125}}, variant={"feature": "global"}))
    write_metrics(runs / "uniloss-local", **_eval_kwargs(
        metrics={"single_query": {"rank1": 0.5}}, variant={"loss": "uni", "feature": "local"}))
    write_metrics(runs / "noshare", **_eval_kwargs(variant={"shared_conv1": False}, source="real",
                                                   profile="paper", device="cuda x4 (DDP)"))
    write_metrics(runs / "cuhk-lab", **_eval_kwargs(  # a split aggregate may nest mean/std
        dataset="cuhk03-labeled", protocol="cuhk03-classic", metrics={
            "rank1": {"mean": 0.75, "std": 0.01}, "rank5": 0.875, "rank10": 0.9375, "rank20": 1.0}))
    write_metrics(runs / "cuhk-det-new", **_eval_kwargs(
        dataset="cuhk03-detected", protocol="cuhk03-new", metrics={"rank1": 0.5, "rank5": 0.5,
                                                            "rank10": 0.5, "rank20": 0.5}))
    old = write_metrics(runs / "viper-old", **_eval_kwargs(dataset="viper", protocol="10-splits",
                                                           metrics={"rank1": 0.125}))
    new = write_metrics(runs / "viper-new", **_eval_kwargs(dataset="viper", protocol="10-splits",
                                                           metrics={"rank1": 0.375}))
    _set_created(old, "2030-01-02T00:00:00+00:00")  # lexically later dir, but older record
    _set_created(new, "2030-01-03T00:00:00+00:00")
    # GRID: a 10-fold mean beats a newer single-fold smoke run
    mean = write_metrics(runs / "grid-mean", **_eval_kwargs(dataset="grid", protocol="grid",
                         metrics={"rank1": 0.25}, extra={"aggregated_over": 10}))
    single = write_metrics(runs / "grid-split-00", **_eval_kwargs(dataset="grid", protocol="grid",
                           metrics={"rank1": 0.75}))
    _set_created(mean, "2030-01-02T00:00:00+00:00")
    _set_created(single, "2030-01-05T00:00:00+00:00")
    # newer runs of 08's selection grid, at another λ or the paper's: their own kinds, never Table 6's
    # / 12's JLML cell (test_build_tables_values_and_deltas reads 50.0 there)
    for name, variant in (("sfl-grid-raised", {"lambda": "custom", "study": "selection"}),
                          ("sfl-grid-paper", {"study": "selection"})):
        _set_created(write_metrics(runs / name, **_eval_kwargs(
            metrics={"single_query": {"rank1": 0.99, "mAP": 0.99}}, variant=variant)), "2031-01-01T00:00:00+00:00")
    write_dataset_stats(runs / "stats-cuhk", dataset="cuhk03", source="real", cams=6, ids=1467,
                        train_ids=1367, test_ids=100, labelled=14096, detected=14097)
    write_complexity(runs / "complexity", convention="multiply-accumulates at 224x224",
                     models={"jlml_resnet39": {"flops": 1.5e9, "params": 7_300_000},
                             "alexnet": {"flops": 7.25e8, "params": 61_100_840}})
    out = tmp_path / "tables"
    paths = build_tables(runs, out)
    return out, paths


def _csv_cell(out: Path, n: int, row: str, column: str) -> pd.Series:
    df = pd.read_csv(out / f"table{n}.csv", keep_default_na=False, na_values=[""])
    hit = df[(df["row"] == row) & (df["column"] == column)]
    assert len(hit) == 1, (n, row, column)
    return hit.iloc[0]


def test_build_tables_writes_every_table(built):
    out, paths = built
    names = sorted(p.name for p in paths)
    expected = sorted([f"table{n}.{e}" for n in (2, *range(5, 14)) for e in ("csv", "md")] + ["index.md"])
    assert names == expected
    assert all(p.is_file() for p in paths)


def test_build_tables_values_and_deltas(built):
    out, _ = built
    c = _csv_cell(out, 6, "JLML", "SQ_R1")
    assert c["ours"] == pytest.approx(50.0) and pd.isna(c["delta"])  # synthetic: no Δ (design §8)
    assert c["source"].startswith("synthetic · run ") and "profile smoke · cpu" in c["source"]
    c = _csv_cell(out, 6, "JLML", "MQ_mAP")
    assert c["ours"] == pytest.approx(37.5) and pd.isna(c["delta"])
    # the default market run also fills the full-model rows of the ablations
    for n, row in ((9, "JLML (joint)"), (10, "MultiLoss / Full"), (11, "With Shared Feature"),
                   (12, "With SFL")):
        assert _csv_cell(out, n, row, "SQ_R1")["ours"] == pytest.approx(50.0), n
    g = _csv_cell(out, 9, "JLML (Global)", "SQ_mAP")
    assert g["ours"] == pytest.approx(12.5) and pd.isna(g["delta"])
    assert _csv_cell(out, 10, "MultiLoss / Global Feature", "SQ_R1")["ours"] == pytest.approx(25.0)
    assert _csv_cell(out, 10, "UniLoss / Local Feature", "SQ_R1")["ours"] == pytest.approx(50.0)
    ns = _csv_cell(out, 11, "Without Shared Feature", "MQ_R1")
    assert ns["ours"] == pytest.approx(62.5) and ns["source"].startswith("real · ")
    assert ns["delta"] == pytest.approx(62.5 - 88.3)  # real data: Δ = ours − paper
    assert "profile paper · cuda x4 (DDP)" in ns["source"]
    # the fixture's records have no "start" (as every record before issue 19): "start unknown", and a real
    # paper-profile one is not verified as the paper's recipe (its Δ stays, never an inside/outside mark)
    assert "· cuda x4 (DDP) · start unknown · start not recorded: not verified as the paper's recipe" in ns["source"]
    assert ns["recipe"] == "start not recorded: not verified as the paper's recipe" and pd.isna(ns["paper_in_interval"])
    syn = _csv_cell(out, 6, "JLML", "SQ_R1")
    assert syn["source"].endswith("profile smoke · cpu · start unknown") and pd.isna(syn["recipe"])
    # CUHK03: classic labelled fills Table 5; a "new"-protocol detected run must not
    assert _csv_cell(out, 5, "JLML (labelled)", "R20")["ours"] == pytest.approx(100.0)
    assert _csv_cell(out, 5, "JLML (labelled)", "R1")["ours"] == pytest.approx(75.0)
    det = _csv_cell(out, 5, "JLML (detected)", "R1")
    assert pd.isna(det["ours"]) and det["source"] == "no run"
    # newest record wins, and says so
    v = _csv_cell(out, 7, "JLML", "R1")
    assert v["ours"] == pytest.approx(37.5) and v["n_runs"] == 2 and "(newest of 2)" in v["source"]
    g = _csv_cell(out, 8, "JLML", "R1")
    assert g["ours"] == pytest.approx(25.0) and "mean of 10 splits (most splits of 2;" in g["source"]
    # Table 2 counts and Table 13 (params in millions)
    t2 = _csv_cell(out, 2, "CUHK03", "labelled")
    assert t2["ours"] == 14096 and t2["delta"] == -1 and t2["source"].startswith("real")
    assert _csv_cell(out, 2, "GRID", "cams")["source"] == "no run"
    p = _csv_cell(out, 13, "JLML-ResNet39", "params_million")
    assert p["ours"] == pytest.approx(7.3) and p["delta"] == pytest.approx(0.1)
    f = _csv_cell(out, 13, "AlexNet", "flops")
    assert f["ours"] == pytest.approx(7.25e8) and f["delta"] == 0
    assert _csv_cell(out, 13, "VGG16", "flops")["source"] == "no run"


def test_build_tables_markdown_labels(built):
    out, _ = built
    md6 = (out / "table6.md").read_text()
    row = _md_row(md6, "JLML", "SQ_R1")
    assert row[2:5] == ["85.1", "50.0", ""] and row[5].startswith("synthetic")  # no Δ for synthetic
    assert _md_row((out / "table11.md").read_text(), "Without Shared Feature", "MQ_R1")[2:5] == \
        ["88.3", "62.5", "-25.8"]
    assert "| paper | ours | Δ | source |" in md6
    md5 = (out / "table5.md").read_text()
    assert _md_row(md5, "JLML (detected)", "R1")[3] == "no run"
    assert _md_row((out / "table13.md").read_text(), "JLML-ResNet39", "flops")[2:5] == \
        ["1.54e9", "1.50e9", "-4.00e7"]
    for path in out.iterdir():
        assert "reproduced" not in path.read_text().lower(), path
    index = (out / "index.md").read_text()
    new_line = next(l for l in index.splitlines() if "cuhk-det-new" in l)
    assert "nothing" in new_line
    assert "multiply-accumulates at 224x224" in index


def test_build_tables_skips_unreadable_records(tmp_path):
    runs = tmp_path / "runs"
    write_metrics(runs / "ok", **_eval_kwargs(dataset="grid", metrics={"rank1": 0.5}))
    (runs / "bad").mkdir()
    (runs / "bad" / "metrics.json").write_text('{"kind": "evaluation"}')
    with pytest.warns(UserWarning, match="missing key"):
        build_tables(runs, tmp_path / "out")
    assert _csv_cell(tmp_path / "out", 8, "JLML", "R1")["ours"] == pytest.approx(50.0)
    assert "bad/metrics.json" in (tmp_path / "out" / "index.md").read_text()


def test_cli_main(tmp_path, capsys):
    from jlml_lib.cli import main as jlml_main

    write_metrics(tmp_path / "runs" / "g", **_eval_kwargs(dataset="grid", metrics={"rank1": 0.5}))
    assert tables_main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "a")]) == 0
    assert jlml_main(["tables", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "table8.csv").read_text() == (tmp_path / "b" / "table8.csv").read_text()
    # no runs folder at all: every cell "no run", still exit 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tables_main(["--runs", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 0
    df = pd.read_csv(tmp_path / "c" / "table6.csv")
    assert (df["source"] == "no run").all() and df["ours"].isna().all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(0, 1, allow_nan=False), min_size=4, max_size=4))
def test_delta_is_ours_minus_paper_in_percent(tmp_path_factory, values):
    root = tmp_path_factory.mktemp("prop")
    write_metrics(root / "runs" / "v", **_eval_kwargs(
        dataset="viper", source="real", metrics=dict(zip(("rank1", "rank5", "rank10", "rank20"), values))))
    build_tables(root / "runs", root / "out")
    paper = paper_jlml(7)
    for col, v in zip(("R1", "R5", "R10", "R20"), values):
        c = _csv_cell(root / "out", 7, "JLML", col)
        assert c["ours"] == pytest.approx(100 * v)
        assert c["delta"] == pytest.approx(100 * v - paper[col], abs=1e-8)


def test_every_cell_spec_has_a_paper_value():
    for n in (2, *range(5, 14)):
        cells = table_cells(n)
        assert cells and all(not math.isnan(c.paper) for c in cells), n


# ============================================================ transcription vs the paper's text
def _paper_table_rows(text: str, n: int) -> list[tuple[str, list]]:
    """(label, values) of each data row of Table ``n`` as extracted in the paper's markdown."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"Table {n}:"))
    rows, started = [], False
    for line in lines[start + 1:]:
        if not line.strip():
            if started:
                break
            continue
        started = True
        tokens = line.split("\t")
        values = []
        for tok in reversed(tokens):  # values are the trailing cells; the label precedes them
            tok = tok.strip()
            latex = re.fullmatch(r"\$\s*(\d+\.\d+)\s*\\times\s*10\^\{?(\d+)\}?\s*\$", tok)
            if latex:
                values.append(float(latex.group(1)) * 10 ** int(latex.group(2)))
            elif re.fullmatch(r"\d[\d,]*(\.\d+)?", tok):
                values.append(float(tok.replace(",", "")))
            elif tok == "-":
                values.append(None)
            elif tok in ("SS", "SQ/MQ"):
                values.append(tok)
            else:
                label = tok
                break
        if len(values) >= 4 and any(isinstance(v, float) for v in values):
            rows.append((label, values[::-1]))
    return rows


def _csv_rows(n: int) -> list[tuple[str, list]]:
    df = load_paper_table(n)
    conv = lambda v: None if isinstance(v, float) and math.isnan(v) else (v if isinstance(v, str) else float(v))
    if n == 2:
        cols, label = ["cams", "ids", "train_ids", "test_ids", "labelled", "detected", "test_setting"], "dataset"
    elif n == 5:
        out = []
        for method, g in df.groupby("method", sort=False):
            vals = [conv(v) for a in ("labelled", "detected")
                    for v in g[g["annotation"] == a][["R1", "R5", "R10", "R20"]].iloc[0]]
            out.append((method, vals))
        return out
    elif n in (6, 9, 10, 11, 12):
        cols, label = list(MARKET), ("method" if n == 6 else "label")
    elif n in (7, 8):
        cols, label = ["R1", "R5", "R10", "R20"], "method"
    else:
        cols, label = ["flops", "params_million", "depth", "streams"], "model"
    return [(r[label], [conv(r[c]) for c in cols]) for _, r in df.iterrows()]


@pytest.mark.parametrize("n", [2, 5, 6, 7, 8, 9, 10, 11, 12, 13])
def test_csv_matches_the_paper_text(n):
    """Every row and value, competitors included, equals the paper's table (skips without it)."""
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} not present")
    assert _csv_rows(n) == _paper_table_rows(PAPER_MD.read_text(encoding="utf-8"), n)


def test_table4_matches_the_paper_text():
    if not PAPER_MD.is_file():
        pytest.skip(f"{PAPER_MD} not present")
    text = PAPER_MD.read_text(encoding="utf-8")
    t4 = load_paper_table(4).set_index("stage")
    for stage in ("Pre-train", "Train"):
        line = next(l for l in text.splitlines() if l.startswith(stage + "\t"))
        m = re.fullmatch(rf"{stage}\t([\d.]+)\t(\w+) \(([\d.]+), (\d+)K\)\t([\d.]+)\t(\d+)K\t(\d+)", line)
        assert m, line
        blr, policy, gamma, step_k, mot, it_k, bs = m.groups()
        assert t4.loc[stage].tolist() == [t4.loc[stage, "stage_key"], float(blr), policy, float(gamma),
                                          int(step_k) * 1000, float(mot), int(it_k) * 1000, int(bs)]


# ============================================================ reading runs
def test_run_folder_reading(tmp_path):
    from jlml_lib.results import runs

    run = tmp_path / "run"
    for k, r1 in enumerate((0.25, 0.5)):  # a two-split run: split-00, split-01 and their aggregate
        write_metrics(run / f"split-{k:02d}", **_eval_kwargs(
            dataset="viper", metrics={"rank1": r1, "cmc": [r1, 1.0]}))
        write_metrics(run / f"split-{k:02d}" / "eval-global", **_eval_kwargs(
            dataset="viper", metrics={"rank1": r1 / 2, "cmc": [r1 / 2, 1.0]}, variant={"feature": "global"}))
    write_metrics(run, **_eval_kwargs(dataset="viper", metrics={"rank1": 0.375}, extra={"aggregated_over": 2}))
    assert runs.read_record(run)["metrics"]["rank1"] == 0.375
    assert runs.read_record(run, "joint") == runs.read_record(run)
    assert runs.read_record(run / "split-01", "global")["variant"]["feature"] == "global"
    assert runs.split_curves(run) == {"split-00": [0.25, 1.0], "split-01": [0.5, 1.0]}
    assert runs.split_curves(run, "global") == {"split-00": [0.125, 1.0], "split-01": [0.25, 1.0]}
    assert runs.split_curves(run / "split-00") == {}
    assert len(runs.records_under(run / "split-00", run / "split-01")) == 4
    # every stored CMC, labelled with dataset, query type, feature and source
    curves = runs.cmc_curves(tmp_path)
    assert len(curves) == 4 and all(label.startswith("viper ") and "(synthetic, " in label for label in curves)
    assert sorted(v[0] for v in curves.values()) == [0.125, 0.25, 0.25, 0.5]
    # log and summary: empty before the run wrote them
    assert runs.read_log(run).empty and runs.read_summary(run) == {}
    (run / "log.jsonl").write_text('{"iteration": 10, "total": 5.0, "lr": 0.01}\n\n{"iteration": 20, "total": 4.0, '
                                   '"lr": 0.01}\n')
    (run / "summary.json").write_text('{"source": "synthetic"}')
    assert runs.read_log(run)["total"].tolist() == [5.0, 4.0]
    assert runs.read_summary(run) == {"source": "synthetic"}


def test_table_frames_are_what_build_tables_writes(built):
    out, _ = built
    runs_root = out.parent / "runs"
    frames = table_frames(runs_root, (6, 11))
    assert sorted(frames) == [6, 11]
    written = pd.read_csv(out / "table11.csv")
    assert frames[11]["ours"].tolist() == pytest.approx(written["ours"].tolist(), nan_ok=True)
    assert frames[11]["source"].tolist() == written["source"].tolist()


def test_table2_rows_from_loaded_data_fill_table2(synthetic_root, tmp_path):
    """01's Table 2 rows, written as records, are what table2.csv shows (issue 18: 09 said "no run")."""
    from jlml_lib.data.report import table2_row, write_table2_records

    root = synthetic_root("viper", scale=0.05)
    row = table2_row("viper", root)
    write_table2_records([row], tmp_path / "runs")
    build_tables(tmp_path / "runs", tmp_path / "tables")
    df = pd.read_csv(tmp_path / "tables" / "table2.csv", keep_default_na=False, na_values=[""])
    ours = df[df["source"].astype(str).str.contains("synthetic")]
    assert not ours.empty, df
    cams = ours[ours["column"].astype(str).str.lower().str.startswith("cam")]
    assert len(cams) == 1 and float(cams.iloc[0]["ours"]) == row["cams"] == 2
