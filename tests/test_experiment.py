"""Helpers the experiment notebooks call: profiles, split choice, stage reuse, paper comparison."""
import json

import pytest

from jlml_lib import experiment
from jlml_lib.errors import ConfigError
from jlml_lib.results.records import write_metrics


def test_profiles_and_splits():
    assert experiment.train_profile("paper") == "paper"
    assert experiment.train_profile("paper", pretraining=True) == "pretrain"  # Table 4 "Pre-train"
    assert experiment.train_profile("smoke", pretraining=True) == "smoke"
    with pytest.raises(ConfigError, match="smoke.*paper"):
        experiment.train_profile("fast")
    assert experiment.default_splits("paper", None) == "all"
    assert experiment.default_splits("smoke", None) == "0"
    assert experiment.default_splits("paper", "0,3") == "0,3"


def test_reid_stage_is_reused_only_when_it_matches(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"profile": "smoke", "init": None, "iterations": 300, "data_options": {}, "device": "cpu", "seed": 0}))
    same = dict(device="cpu", seed=0)
    assert experiment._same_stage(tmp_path, "smoke", None, None, same)
    assert not experiment._same_stage(tmp_path, "paper", None, None, same)      # never smoke for paper
    assert not experiment._same_stage(tmp_path, "smoke", "/in.pt", None, same)  # another start point
    assert not experiment._same_stage(tmp_path, "smoke", None, 50, same)
    assert not experiment._same_stage(tmp_path, "smoke", None, None, {**same, "seed": 1})
    assert not experiment._same_stage(tmp_path, "smoke", None, None, {**same, "data.cuhk03_root": "/r"})
    assert not experiment._same_stage(tmp_path / "missing", "smoke", None, None, same)


def test_compare_puts_a_run_beside_the_paper(tmp_path):
    write_metrics(tmp_path / "run", metrics={"single_query": {"rank1": 0.5, "mAP": 0.25},
                                             "multi_query": {"rank1": 0.6, "mAP": 0.3}},
                  config={}, dataset="market1501", source="synthetic", profile="smoke",
                  protocol="market1501", wall_time_s=1.0, device="cpu")
    frame = experiment.compare(6, tmp_path)
    row = frame.set_index("column").loc["SQ_R1"]
    assert row["paper"] == 85.1 and row["ours"] == 50.0 and row["Δ"] == pytest.approx(-35.1)
    assert row["source"].startswith("synthetic")
    assert experiment.compare(6, tmp_path / "empty")["source"].eq("no run").all()
