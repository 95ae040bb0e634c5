"""No silent synthetic data (issue 9 §4): a run's source is read from the data it trains on.

A generated copy with its synthetic marker removed stands in for a user's real dataset (the
loaders cannot tell the difference: the marker is the only thing that says "synthetic").
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jlml_lib.data.base import MARKER
from jlml_lib.data.synthetic import generate
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError
from jlml_lib.paths import RunDir
from jlml_lib.train import main as train_main, run

TINY = dict(iterations=2, batch_size=8, image_height=32, image_width=16, log_every=1, ckpt_every=2,
            workers=0, progress=False, evaluate=False)


pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py


def _copy(tmp_path: Path, name: str, *, real: bool) -> Path:
    root = tmp_path / f"{name}-{'real' if real else 'synthetic'}"
    generate(name, root, scale=0.02, seed=1)
    if real:
        (root / MARKER).unlink()
    return root


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    base = tmp_path_factory.mktemp("copies")
    return {(name, real): _copy(base, name, real=real) for name in ("cuhk03", "market1501") for real in (True, False)}


def _stage(**data_roots) -> list[str]:
    return [f"data.{k}_root={v}" for k, v in data_roots.items()]


def test_union_stage_keeps_both_real_roots(tmp_path, copies):
    cfg = make_config("smoke", _stage(cuhk03=copies["cuhk03", True], market1501=copies["market1501", True]),
                      dataset="cuhk03+market1501", **TINY)
    summary = run(cfg, tmp_path)
    saved = json.loads(RunDir(tmp_path).config.read_text())
    # before the fix the stage resolved its own absent data_root to a generated union: "synthetic"
    assert saved["source"] == summary["source"] == "real"
    roots = {c["dataset"]: (c["source"], c["root"]) for c in saved["components"]}
    assert roots == {"cuhk03": ("real", str(copies["cuhk03", True] / "cuhk03_release")),
                     "market1501": ("real", str(copies["market1501", True] / "Market-1501-v15.09.15"))}
    assert saved["data_options"] == {"cuhk03_root": str(copies["cuhk03", True]),
                                     "market1501_root": str(copies["market1501", True])}


def test_one_root_and_one_missing_fails_before_training(tmp_path, copies):
    cfg = make_config("smoke", _stage(cuhk03=copies["cuhk03", True]), dataset="cuhk03+market1501", **TINY)
    with pytest.raises(ConfigError, match=r"cuhk03.*not for market1501.*SYNTHETIC"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()          # nothing trained, nothing written


def test_real_and_synthetic_mixed_is_refused_unless_allowed(tmp_path, copies, capsys):
    roots = _stage(cuhk03=copies["cuhk03", True], market1501=copies["market1501", False])
    cfg = make_config("smoke", roots, dataset="cuhk03+market1501", **TINY)
    with pytest.raises(ConfigError, match=r"mix real and synthetic.*cuhk03 is real.*market1501 is synthetic"):
        run(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    cfg = make_config("smoke", [*roots, "allow_mixed_sources=true"], dataset="cuhk03+market1501", **TINY)
    summary = run(cfg, tmp_path / "mixed")
    assert summary["source"] == "mixed"
    assert "MIXED" in capsys.readouterr().err


def test_mixed_record_is_never_real(tmp_path, copies):
    # an evaluated run on a union is not possible (no query set), so check the single-dataset
    # record path: a synthetic copy given as --data-root is recorded synthetic and said so
    root = copies["market1501", False]
    args = [f"{k}={v}" for k, v in {**TINY, "evaluate": True, "eval_batch_size": 64}.items()]
    assert train_main(["--dataset", "market1501", "--data-root", str(root), "--out", str(tmp_path), *args]) == 0
    saved = json.loads(RunDir(tmp_path).config.read_text())
    assert saved["source"] == "synthetic" and saved["components"][0]["source"] == "synthetic"
    rec = json.loads(RunDir(tmp_path).metrics.read_text())
    assert rec["source"] == "synthetic" and rec["extra"]["components"][0]["root"] == saved["components"][0]["root"]


def test_given_synthetic_copy_is_named_as_such(tmp_path, copies, capsys):
    root = copies["market1501", False]
    args = [f"{k}={v}" for k, v in TINY.items()]
    assert train_main(["--dataset", "market1501", "--data-root", str(root), "--out", str(tmp_path), *args]) == 0
    err = capsys.readouterr().err
    assert "is a SYNTHETIC copy" in err and "no --data-root" not in err


def test_init_source_is_recorded_beside_the_run(tmp_path, copies):
    pre = tmp_path / "pre"
    run(make_config("smoke", dataset="market1501", data_root=str(copies["market1501", False]), **TINY), pre)
    ft = make_config("smoke", dataset="market1501", data_root=str(copies["market1501", True]),
                     init=str(RunDir(pre).final), **TINY)
    run(ft, tmp_path / "ft")
    saved = json.loads(RunDir(tmp_path / "ft").config.read_text())
    assert saved["source"] == "real" and saved["init_source"] == "synthetic"


def test_cuhk03_classic_can_hold_out_validation_people(copies):
    from jlml_lib.data import load_dataset

    root = copies["cuhk03", False]
    full = load_dataset("cuhk03", root, split=0)
    held = load_dataset("cuhk03", root, split=0, val_people=3)
    assert len(held.extras["val_people"]) == 3 and full.extras["val_people"] == []
    assert held.num_train_pids == full.num_train_pids - 3
    assert held.query == full.query and held.gallery == full.gallery     # the test split is untouched
    with pytest.raises(ConfigError, match="val_people"):
        load_dataset("cuhk03", root, split=0, val_people=-1)
