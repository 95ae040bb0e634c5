"""The notebooks' steps: profiles, split choice, stage reuse, paper comparison, table updates."""

import pandas as pd
import pytest

from jlml_lib.errors import ConfigError
from jlml_lib.results.records import write_metrics
from jlml_lib.workbook import steps

MARKET = dict(metrics={"single_query": {"rank1": 0.5, "mAP": 0.25}, "multi_query": {"rank1": 0.6, "mAP": 0.3}},
              config={}, dataset="market1501", profile="smoke", protocol="market1501", wall_time_s=1.0,
              device="cpu")


def test_profiles_splits_and_devices():
    assert steps.train_profile("paper") == "paper"
    assert steps.train_profile("paper", pretraining=True) == "pretrain"  # Table 4 "Pre-train"
    assert steps.train_profile("smoke", pretraining=True) == "smoke"
    with pytest.raises(ConfigError, match="smoke.*paper"):
        steps.train_profile("fast")
    assert steps.default_splits("paper", None) == "all"
    assert steps.default_splits("smoke", None) == "0"
    assert steps.default_splits("paper", "0,3") == "0,3"
    assert steps.inference_device("auto") == "cpu"
    assert steps.inference_device("cuda:1") == "cuda:1"


def test_reid_stage_goes_through_launch_train(tmp_path, monkeypatch):
    """The stage is one launch.train call: its fingerprint decides reuse (tests/test_reuse.py), so
    06 and 07 asking for the same stage make the same command and --fresh applies to it too."""
    trained = []
    monkeypatch.setattr(steps, "train", lambda *a, **k: trained.append((a, k)))
    stage = tmp_path / "stage"
    for profile in ("smoke", "smoke", "paper"):
        assert steps.reid_pretraining(stage, init=None, profile=profile, overrides={"device": "cpu"}) == \
            stage / "checkpoints" / "final.pt"
    (a1, k1), (a2, k2), (a3, k3) = trained
    assert a1 == a2 == ("cuhk03+market1501", stage) and k1 == k2  # the same launch: reused by its fingerprint
    assert k1["profile"] == "smoke" and k3["profile"] == "paper"   # a smoke model is no paper stage
    assert k1["overrides"]["evaluate"] is False
    steps.reid_pretraining(stage, init=None, profile="paper", overrides={"device": "cpu"}, schedule="pretrain")
    assert trained[-1][1]["profile"] == "pretrain"
    with pytest.raises(ConfigError, match="schedule"):
        steps.reid_pretraining(stage, init=None, profile="smoke", schedule="other")


def test_compare_puts_a_run_beside_the_paper(tmp_path):
    write_metrics(tmp_path / "synthetic", source="synthetic", **MARKET)
    frame = steps.compare(6, tmp_path / "synthetic")
    row = frame.set_index("column").loc["SQ_R1"]
    assert row["paper"] == 85.1 and row["ours"] == 50.0 and row["source"].startswith("synthetic")
    assert pd.isna(row["Δ"])  # no Δ for synthetic data (design §8)
    write_metrics(tmp_path / "real", source="real", **MARKET)
    row = steps.compare(6, tmp_path / "real").set_index("column").loc["SQ_R1"]
    assert row["ours"] == 50.0 and row["Δ"] == pytest.approx(-35.1) and row["source"].startswith("real")
    assert steps.compare(6, tmp_path / "empty")["source"].eq("no run").all()


def test_update_tables_builds_once_and_names_the_notebook_tables(tmp_path):
    write_metrics(tmp_path / "runs" / "m", source="real", **MARKET)
    paths = steps.update_tables(9, 10, runs_dir=tmp_path / "runs", tables_dir=tmp_path / "tables")
    assert paths == [tmp_path / "tables" / "table9.md", tmp_path / "tables" / "table10.md"]
    assert all(p.is_file() for p in paths) and (tmp_path / "tables" / "table6.md").is_file()
    # a smoke-profile real record keeps its Δ but is flagged: not Table 4's recipe (issue 19)
    assert "| JLML | SQ_R1 (%) | 85.1 | 50.0 | -35.1 (not the paper's recipe) | real" in (tmp_path / "tables" / "table6.md").read_text()


def test_reid_stage_passes_both_roots_given_to_the_workbook(tmp_path, monkeypatch):
    # issue 9 §4: the roots the workbook gives 06/07 reach the stage's training run (the engine
    # then loads them instead of a generated union: tests/test_train_sources.py)
    calls = []
    monkeypatch.setattr(steps, "train", lambda dataset, out, **kw: calls.append((dataset, kw)))
    steps.reid_pretraining(tmp_path / "stage", init=None, profile="smoke", cuhk03_root="/data/cuhk03",
                           market1501_root="/data/market")
    (dataset, kw), = calls
    assert dataset == "cuhk03+market1501" and kw["profile"] == "smoke"
    assert kw["overrides"]["data.cuhk03_root"] == "/data/cuhk03"
    assert kw["overrides"]["data.market1501_root"] == "/data/market"
    steps.reid_pretraining(tmp_path / "stage2", init=None, profile="paper", schedule="pretrain")
    assert calls[-1][1]["profile"] == "pretrain"
    with pytest.raises(ConfigError, match="schedule"):
        steps.reid_pretraining(tmp_path / "stage3", init=None, profile="paper", schedule="50K")
