"""`jlml workbook --preflight` (issue 19, item 5) and the test-set slice it evaluates on (``eval_limit``).

The preflight runs here on tiny synthetic copies of every dataset (tests/conftest.py), with tiny
images and batches added to every stage; its real use is the user's roots, profile and device.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from jlml_lib.data.base import ReidDataset
from jlml_lib.engine.config import make_config
from jlml_lib.engine.evaluate import limit_test_set
from jlml_lib.errors import ConfigError
from jlml_lib.paths import RUNS, repo_root
from jlml_lib.workbook import preflight, runner
from jlml_lib.workbook.steps import ABLATIONS, RUN_SETTINGS

pytestmark = pytest.mark.usefixtures("private_cache")  # tests/conftest.py

TINY = {"batch_size": 8, "image_height": 32, "image_width": 16, "workers": 0, "eval_batch_size": 32}
SCALES = {"market1501": 0.01, "cuhk03": 0.02, "viper": 0.05, "grid": 0.05, "imagenet": 0.003}


# ---------------------------------------------------------------- eval_limit
def _dataset(query, gallery, gt_bbox=()):
    return ReidDataset(name="market1501", train=[], query=query, gallery=gallery, num_train_pids=0, split=None,
                       num_splits=1, protocol="market1501", source="synthetic", root="/x",
                       extras={"gt_bbox": list(gt_bbox)})


def test_limit_keeps_the_first_queries_and_their_gallery():
    query = [("q1", 1, 0), ("q2", 2, 0), ("q3", 3, 0), ("q4", 1, 1)]
    gallery = [("g0", 0, 1), ("g1", 1, 1), ("g5", 5, 1), ("g2", 2, 1), ("g3", 3, 1), ("g6", 6, 1), ("g7", -1, 1)]
    ds = _dataset(query, gallery, gt_bbox=[("b1", 1, 0), ("b3", 3, 0)])
    cut = limit_test_set(ds, 2)
    assert cut.query == query[:2]
    # identities 1 and 2 keep every gallery image; the first 2 others (a distractor, pid 5) stay as negatives;
    # the gallery's order is kept
    assert cut.gallery == [("g0", 0, 1), ("g1", 1, 1), ("g5", 5, 1), ("g2", 2, 1)]
    assert cut.extras["gt_bbox"] == [("b1", 1, 0)]
    assert ds.query == query and len(ds.gallery) == 7           # the dataset itself is untouched
    assert limit_test_set(ds, 0) is ds and limit_test_set(ds, 4) is ds


def test_eval_limit_is_a_study_never_a_table_cell():
    with pytest.raises(ConfigError, match="study=preflight"):
        make_config("smoke", ["eval_limit=5"])
    with pytest.raises(ConfigError, match="eval_limit=-1"):
        make_config("smoke", ["eval_limit=-1", "study=preflight"])
    cfg = make_config("smoke", ["eval_limit=5", "study=preflight"])
    assert cfg.variant()["study"] == "preflight"


# ---------------------------------------------------------------- the stages
def test_stages_follow_the_chain():
    plan = {s.key: s for s in preflight.stages({"market1501": "/m"})}
    imagenet = next(s for s in plan.values() if s.dataset == "imagenet")
    combined = next(s for s in plan.values() if s.dataset == "cuhk03+market1501")
    assert imagenet.upstream is None and imagenet.pretraining
    assert {s.dataset: s.upstream for s in plan.values() if s.dataset in ("viper", "grid")} == {
        "viper": combined.key, "grid": combined.key}
    assert combined.upstream == imagenet.key and combined.roots == {"cuhk03_root": None, "market1501_root": "/m"}
    variants = [s for s in plan.values() if s.notebook == "08_ablations"]
    assert [s.overrides.get(k) for s in variants for k in ABLATIONS[s.key[3:]]] == [
        v for switches in ABLATIONS.values() for v in switches.values()]
    assert all(s.upstream == imagenet.key and s.iterations == preflight.ABLATION_ITERATIONS for s in variants)


def test_stages_train_with_their_notebooks_settings():
    """The preflight rehearses each run with the settings its notebook adds (RUN_SETTINGS), and each
    of those notebooks takes them from there: a setting changed in one place reaches both."""
    for stage in preflight.stages({}):
        assert RUN_SETTINGS.get(stage.notebook, {}).items() <= stage.overrides.items(), stage.key
    for notebook in RUN_SETTINGS:
        source = "".join("".join(c["source"]) for c in json.loads(
            (repo_root() / "notebooks" / f"{notebook}.ipynb").read_text())["cells"] if c["cell_type"] == "code")
        assert f'steps.RUN_SETTINGS["{notebook}"]' in source, notebook


def test_failure_line():
    tail = ("training exited with status 2: python -m jlml_lib.train ...\n"
            "jlml train: no --data-root: training on SYNTHETIC grid (/c); results are labelled synthetic.\n"
            "jlml train: viper: /bad holds no VIPeR folder")
    assert preflight.failure_line(tail) == "jlml train: viper: /bad holds no VIPeR folder"
    bug = "training exited with status 1: cmd\nTraceback (most recent call last):\n  File \"x\"\nKeyError: 'w'"
    assert preflight.failure_line(bug) == "KeyError: 'w'"


def test_preflight_out_is_never_in_runs(tmp_path):
    with pytest.raises(ConfigError, match="inside runs/"):
        preflight.check_out(repo_root() / RUNS / "preflight")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ConfigError, match="not an empty folder"):
        preflight.check_out(tmp_path / "full")
    assert runner.main(["--preflight", "--only", "05"]) == 2


# ---------------------------------------------------------------- the whole chain
def _listing():
    """What runs/ and results/ hold (names, sizes, times): a preflight must change none of it."""
    out = {}
    for top in (RUNS, "results"):
        for p in sorted((repo_root() / top).rglob("*")) if (repo_root() / top).exists() else []:
            st = p.stat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_preflight_runs_every_stage_and_names_a_bad_root(synthetic_root, tmp_path, capsys):
    root = synthetic_root(*SCALES, scale=SCALES)
    roots = {name: str(root) for name in SCALES}
    bad = tmp_path / "not-viper"
    bad.mkdir()
    roots["viper"] = str(bad)              # VIPeR's stage fails; GRID and 08 do not need it
    before = _listing()
    out = tmp_path / "preflight"
    status = preflight.run({"profile": "smoke", "device": "cpu"}, roots, out=out, iterations=3,
                           ablation_iterations=2, eval_queries=5, overrides=TINY)
    text = capsys.readouterr().out
    assert _listing() == before
    assert status == 1
    table = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| 0")}
    assert list(table) == [s.key for s in preflight.stages(roots)]
    failed = [k for k, line in table.items() if "failed" in line]
    assert failed == ["06_viper"] and "jlml train:" in table["06_viper"] and str(bad) in table["06_viper"]
    for key, line in table.items():
        if key == "06_viper":
            continue
        assert "| passed |" in line and " h (from " in line, line
    # the chain: every stage but 03 started from its upstream's final.pt
    for stage in preflight.stages(roots):
        if stage.upstream and stage.key != "06_viper":
            config = json.loads(next((out / stage.key).rglob("config.json")).read_text())
            assert config["init"] == str(out / stage.upstream / "checkpoints" / "final.pt")
            assert config["study"] == "preflight" and config["eval_limit"] == 5 and config["iterations"] in (2, 3)
    # the step count behind each estimate: iterations minus the first
    assert "(from 2 steps)" in table["05_market1501"] and "(from 1 step)" in table["08_no_sfl"]
    # the smoke profile's schedule, read from the engine's config, not restated here
    assert f"{make_config('smoke').iterations:,} it" in table["05_market1501"]
    assert (out / preflight.TABLE_FILE).read_text().startswith("| stage |")


def test_cli_preflight_leaves_no_temporary_folder(monkeypatch, tmp_path):
    """Without --preflight-out the stages run in a temporary folder, removed at the end (here with
    the stages themselves replaced: the chain is the test above)."""
    made = []

    def fake(stage, folder, init, params, extra, eval_queries):
        made.append(folder)
        return preflight.Outcome(stage, "passed")

    monkeypatch.setattr(preflight, "run_stage", fake)
    monkeypatch.setattr(preflight.tempfile, "tempdir", str(tmp_path))
    assert runner.main(["--preflight", "--profile", "smoke"]) == 0
    assert made and not made[0].exists() and list(tmp_path.iterdir()) == []


def test_outcome_hours_is_steps_times_schedule():
    stage = preflight.stages({})[0]
    o = dataclasses.replace(preflight.Outcome(stage, "passed"), step_s=0.36, real_iterations=50_000, real_runs=10)
    assert o.hours == pytest.approx(0.36 * 50_000 * 10 / 3600)   # 50 h
    assert "50.0 h (from 0 steps)" in preflight.table([o])
