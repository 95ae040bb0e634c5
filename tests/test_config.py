"""TrainConfig: profiles against Table 4 (as data), overrides, the LR policy."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from jlml_lib.engine.config import (PROFILES, TrainConfig, config_from_dict, make_config, parse_overrides)
from jlml_lib.errors import ConfigError

TABLE4 = Path(__file__).resolve().parents[1] / "results" / "paper" / "table4.csv"


def table4() -> dict[str, dict[str, str]]:
    with open(TABLE4, newline="", encoding="utf-8") as fh:
        return {row["stage_key"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("profile, stage", [("paper", "train"), ("pretrain", "pretrain")])
def test_profiles_equal_table4_csv(profile, stage):
    row, cfg = table4()[stage], make_config(profile)
    assert row["lr_policy"] == "step"
    assert cfg.lr == float(row["base_lr"])
    assert cfg.lr_gamma == float(row["lr_gamma"])
    assert cfg.lr_step == int(row["lr_step"])
    assert cfg.momentum == float(row["momentum"])
    assert cfg.iterations == int(row["iterations"])
    assert cfg.batch_size == int(row["batch_size"])
    # §3 Implementation: "All person images were resized to 224 × 224"
    assert cfg.image_size == (224, 224)


def test_table4_values_as_printed():
    # the CSV is someone else's transcription: pin the paper's printed numbers independently
    assert (make_config("paper").iterations, make_config("paper").lr_step) == (50_000, 20_000)
    assert (make_config("pretrain").iterations, make_config("pretrain").lr_step) == (300_000, 100_000)
    assert make_config("pretrain").dataset == "imagenet"


def test_smoke_keeps_papers_step_fractions_and_batch():
    smoke, paper = make_config("smoke"), make_config("paper")
    assert smoke.lr_step / smoke.iterations == paper.lr_step / paper.iterations == 0.4
    assert smoke.batch_size == 32 and smoke.lr == 0.01 and smoke.momentum == 0.9
    assert smoke.iterations <= 1000 and smoke.image_height * smoke.image_width < 224 * 224


@given(st.integers(min_value=0, max_value=49_999))
def test_paper_lr_schedule_piecewise(i):
    # Table 4 "step (0.1, 20K)" from 0.01: 0.01 on [0, 20K), 1e-3 on [20K, 40K), 1e-4 on [40K, 50K)
    expected = 0.01 if i < 20_000 else (1e-3 if i < 40_000 else 1e-4)
    assert make_config("paper").lr_at(i) == pytest.approx(expected, rel=1e-12)


def test_overrides_are_typed():
    got = parse_overrides(["lr=0.1", "iterations=5e3", "sfl=false", "shared_conv1=No", "head=uni",
                           "data_root=none", "split=3", "data.images=detected", "data.whole=true",
                           "batch-size=64", "eval_features=joint,global"])
    assert got == {"lr": 0.1, "iterations": 5000, "sfl": False, "shared_conv1": False, "head": "uni",
                   "data_root": None, "split": 3, "batch_size": 64, "eval_features": "joint,global",
                   "data_options": {"images": "detected", "whole": True}}
    assert isinstance(got["iterations"], int)
    cfg = make_config("smoke", ["lr=0.1", "sfl=off"])
    assert (cfg.lr, cfg.sfl, cfg.profile) == (0.1, False, "smoke")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        parse_overrides(["learning_rate=0.1"])
    msg = str(exc.value)
    assert "learning_rate" in msg and "lr" in msg and "weight_decay" in msg and "data." in msg


@pytest.mark.parametrize("pair, fragment", [("iterations=1.5", "int"), ("sfl=maybe", "true/false"),
                                            ("lr=fast", "float"), ("nokey", "KEY=VALUE"),
                                            ("data_options=[1]", "dict")])
def test_bad_values_are_config_errors(pair, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_overrides([pair])


@pytest.mark.parametrize("pair", ["head=tri", "amp=fp8", "iterations=0", "eval_features=joint,colour",
                                  "batch_size=-1", "profile=fast", "eval_batch_size=-1"])
def test_invalid_settings_refused(pair):
    with pytest.raises(ConfigError):
        make_config("smoke", [pair])


def test_eval_batch_auto_by_device_or_as_given():
    from jlml_lib.features import EVAL_BATCH

    auto = make_config("paper")
    assert auto.eval_batch_size == 0
    assert auto.eval_batch("cpu") == EVAL_BATCH["cpu"] and auto.eval_batch("cuda") == EVAL_BATCH["cuda"]
    assert make_config("paper", ["eval_batch_size=40"]).eval_batch("cpu") == 40
    assert make_config("smoke").eval_batch("cpu") == 64  # the smoke profile's small images: as before


def test_unknown_profile():
    with pytest.raises(ConfigError, match="smoke"):
        make_config("quick")


def test_variant_tag_follows_switches():
    cfg = make_config("smoke", ["head=uni", "sfl=false", "shared_conv1=false", "eval_features=local,joint"])
    assert cfg.variant() == {"feature": "local", "loss": "uni", "shared_conv1": False, "sfl": False,
                             "feature_layer": "bn", "lambda": "paper", "study": "none"}
    assert make_config("paper").variant() == {"feature": "joint", "loss": "multi", "shared_conv1": True, "sfl": True,
                                              "feature_layer": "bn", "lambda": "paper", "study": "none"}
    assert make_config("smoke", ["feature_layer=plain"]).variant()["feature_layer"] == "plain"
    # another λ is its own kind of run (never the paper's cell), but only where SFL uses it
    assert make_config("smoke", ["lambda_local=0.005"]).variant()["lambda"] == "custom"
    assert make_config("smoke", ["lambda_global=0.05", "sfl=false"]).variant()["lambda"] == "paper"
    assert make_config("smoke", ["study=selection"]).variant()["study"] == "selection"
    with pytest.raises(ConfigError, match="study"):
        make_config("smoke", ["study=other"])


def test_round_trip_through_json():
    cfg = make_config("smoke", ["data.images=detected", "lr=0.05"])
    back = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({**cfg.to_dict(), "colour": 1})


def test_every_profile_validates():
    for p in PROFILES:
        assert isinstance(make_config(p), TrainConfig)
