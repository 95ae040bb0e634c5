"""Issue 19: where every run started, shown in the tables, judged against the paper's recipe (§3, Table 4),
checked by `jlml workbook` before it passes a checkpoint on, and said in the notebooks' banner.

§3 "Implementation": ImageNet → CUHK03/Market; ImageNet → CUHK03+Market → VIPeR/GRID, with Table 4's
settings. The start records below are written out by hand (the schema of jlml_lib.provenance), not
built with the code under test.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from jlml_lib import provenance
from jlml_lib.data.base import MARKER
from jlml_lib.data.synthetic import generate
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.paths import RunDir
from jlml_lib.results import intervals as ci
from jlml_lib.results.records import read_metrics, write_metrics
from jlml_lib.results.tables import build_tables, cells_frame, fill, scan_records, table_cells
from jlml_lib.workbook import notebook
from jlml_lib.workbook import runner as workbook

SCRATCH = {"kind": "scratch"}
IMAGENET_REAL = {"kind": "checkpoint", "path": "runs/03/checkpoints/final.pt", "sha256": "ab" * 32,
                 "dataset": "imagenet", "source": "real", "profile": "pretrain", "iteration": 300000,
                 "start": SCRATCH}
IMAGENET_SYNTHETIC = {**IMAGENET_REAL, "source": "synthetic", "profile": "smoke", "iteration": 300}
IMAGENET_SMOKE = {**IMAGENET_REAL, "profile": "smoke", "iteration": 300}  # real ImageNet, smoke schedule
STAGE_REAL = {"kind": "checkpoint", "path": "runs/cuhk03+market1501/checkpoints/final.pt", "sha256": "cd" * 32,
              "dataset": "cuhk03+market1501", "source": "real", "profile": "paper", "iteration": 50000,
              "start": IMAGENET_REAL}
STAGE_FROM_SCRATCH = {**STAGE_REAL, "start": SCRATCH}


# ============================================================ the recipe, record by record
def _record(dataset="market1501", source="real", profile="paper", start=None, **extra):
    return {"kind": "evaluation", "dataset": dataset, "source": source, "profile": profile,
            **({"start": start} if start is not None else {}), **extra}


@pytest.mark.parametrize("rec, gap", [
    (_record(start=IMAGENET_REAL), None),                                   # Table 6 as the paper trains it
    (_record(dataset="cuhk03-detected", start=IMAGENET_REAL), None),
    (_record(dataset="viper", start=STAGE_REAL), None),                      # ImageNet → CUHK03+Market → VIPeR
    (_record(start=SCRATCH), "not the paper's recipe: no ImageNet start"),
    (_record(start=IMAGENET_SYNTHETIC), "not the paper's recipe: synthetic ImageNet start"),
    (_record(start=IMAGENET_SMOKE), "not the paper's recipe: ImageNet start has profile smoke"),
    (_record(profile="smoke", start=IMAGENET_REAL), "not the paper's recipe: profile smoke"),
    (_record(dataset="grid", start=IMAGENET_REAL),                           # skipped the CUHK03+Market stage
     "not the paper's recipe: starts from ImageNet, not CUHK03+Market-1501"),
    (_record(dataset="grid", start=STAGE_FROM_SCRATCH),
     "not the paper's recipe: no ImageNet start before CUHK03+Market-1501"),
    (_record(dataset="viper", start={**STAGE_REAL, "start": {"kind": "unknown"}}),
     "start of the CUHK03+Market-1501 checkpoint not recorded: not verified as the paper's recipe"),
    (_record(), "start not recorded: not verified as the paper's recipe"),   # a record from before issue 19
    (_record(source="synthetic", start=SCRATCH), None),                      # never compared with the paper
])
def test_recipe_gap(rec, gap):
    assert provenance.recipe_gap(rec) == gap


def test_start_labels():
    assert provenance.start_label(SCRATCH) == "from scratch"
    assert provenance.start_label({"kind": "unknown"}) == "start unknown"
    assert provenance.start_label(IMAGENET_REAL) == "from ImageNet (real, pretrain)"
    assert provenance.start_label(STAGE_REAL) == "from CUHK03+Market-1501 (real, paper) ← ImageNet (real, pretrain)"
    bare = {"kind": "checkpoint", "sha256": "0123456789abcdef" * 4, "dataset": "unknown", "start": {"kind": "unknown"}}
    assert provenance.start_label(bare) == "from a checkpoint of unknown origin (sha256 0123456789ab) ← start unknown"


# ============================================================ tables: records of each kind
def _market(folder: Path, *, source="real", profile="paper", start=None, created=None) -> None:
    """A Table 6 record whose interval [50, 90] holds the paper's SQ Rank-1 (85.1)."""
    metrics = {q: {"rank1": 0.7, "mAP": 0.6} for q in ("single_query", "multi_query")}
    iv = {q: {"rank1": {"estimate": 0.7, "low": 0.5, "high": 0.9},
              "mAP": {"estimate": 0.6, "low": 0.5, "high": 0.7}} for q in metrics}
    path = write_metrics(folder, metrics=metrics, config={}, dataset="market1501", source=source, profile=profile,
                         protocol="market1501", wall_time_s=1.0, device="cuda", start=start,
                         uncertainty={"intervals": iv, "interval_method": {"name": ci.CLUSTER_BOOTSTRAP}})
    if start is None:  # as a record written before issue 19: no "start" key at all
        rec = json.loads(path.read_text())
        assert "start" not in rec


KINDS = {
    "faithful": dict(start=IMAGENET_REAL),
    "scratch": dict(start=SCRATCH),
    "synthetic-start": dict(start=IMAGENET_SYNTHETIC),
    "smoke-start": dict(start=IMAGENET_SMOKE),
    "synthetic-data": dict(source="synthetic", profile="smoke", start=SCRATCH),
    "old": dict(),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_table_cell_of_each_kind_of_record(tmp_path, kind):
    _market(tmp_path / "runs" / kind, **KINDS[kind])
    frame = cells_frame(fill(table_cells(6), scan_records(tmp_path / "runs")[0])).set_index("column")
    build_tables(tmp_path / "runs", tmp_path / "tables")
    row = next(line for line in (tmp_path / "tables" / "table6.md").read_text().splitlines()
               if line.startswith("| JLML | SQ_R1"))
    cell = frame.loc["SQ_R1"]
    label = {"faithful": "from ImageNet (real, pretrain)", "scratch": "from scratch",
             "synthetic-start": "from ImageNet (synthetic, smoke)", "smoke-start": "from ImageNet (real, smoke)",
             "synthetic-data": "from scratch", "old": "start unknown"}[kind]
    assert f"· cuda · {label}" in cell["source"]
    if kind == "faithful":
        # the paper's experiment: Δ, and whether the paper's 85.1 lies in our [50, 90]
        assert cell["recipe"] == "paper's recipe" and cell["paper_in_interval"] == "inside"
        assert "| 85.1 | 70.0 [50.0, 90.0] | -15.1 (inside) |" in row and "not the paper" not in row
    elif kind == "synthetic-data":
        assert cell["recipe"] == "" and cell["paper_in_interval"] == "" and pd.isna(cell["delta"])
    else:
        # real, but not the paper's experiment: never the inside/outside mark, and says why
        gap = {"scratch": "no ImageNet start", "synthetic-start": "synthetic ImageNet start",
               "smoke-start": "ImageNet start has profile smoke", "old": "start not recorded"}[kind]
        assert gap in cell["recipe"] and gap in cell["source"] and f"**{cell['recipe']}**" in row
        assert cell["paper_in_interval"] == "" and cell["delta"] == pytest.approx(70.0 - 85.1)
        assert "(inside)" not in row and "(outside)" not in row
        if kind != "old":  # a known start off the recipe flags the Δ itself
            assert "| -15.1 (not the paper's recipe) |" in row
        assert ci.paper_marks({6: frame.reset_index()}).empty


def test_a_bad_start_field_is_refused(tmp_path):
    with pytest.raises(DataError, match="'start' must be"):
        _market(tmp_path / "a", start={"kind": "imagenet"})
    with pytest.raises(DataError, match="'start' must be"):
        _market(tmp_path / "b", start={**IMAGENET_REAL, "start": "scratch"})


# ============================================================ what a run records (tiny real runs)
TINY = dict(iterations=1, batch_size=8, image_height=32, image_width=16, log_every=1, ckpt_every=1,
            workers=0, progress=False, evaluate=False)
#: what the evaluation of a run returns, without extracting features (what is tested is where the start goes)
FAKE_EVALUATION = {"joint": {q: {"rank1": 0.5, "mAP": 0.25} for q in ("single_query", "multi_query")}}


@pytest.fixture(scope="module")
def market_copies(tmp_path_factory):
    """A synthetic Market-1501 copy, and one without its marker (it reads as a user's real copy)."""
    base = tmp_path_factory.mktemp("market")
    out = {}
    for real in (False, True):
        root = base / ("real" if real else "synthetic")
        generate("market1501", root, scale=0.02, seed=1)
        if real:
            (root / MARKER).unlink()
        out[real] = root
    return out


@pytest.mark.usefixtures("private_cache")
def test_a_run_records_its_start_and_the_chain_outlives_the_upstream_run(tmp_path, market_copies, monkeypatch):
    from jlml_lib.engine import run as engine_run
    from jlml_lib.train import run

    monkeypatch.setattr(engine_run, "evaluate_run", lambda *a, **k: json.loads(json.dumps(FAKE_EVALUATION)))

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    run(make_config("smoke", dataset="market1501", data_root=str(market_copies[False]), **TINY), pre)
    assert json.loads(RunDir(pre).config.read_text())["start"] == SCRATCH
    assert torch.load(RunDir(pre).final, weights_only=True)["data"]["start"] == SCRATCH
    init = RunDir(pre).final
    digest = hashlib.sha256(init.read_bytes()).hexdigest()
    kept = tmp_path / "pre.pt"
    shutil.copy(init, kept)
    run(make_config("smoke", dataset="market1501", data_root=str(market_copies[True]), init=str(kept),
                    **{**TINY, "evaluate": True}), ft)
    shutil.rmtree(pre)
    kept.unlink()  # neither the upstream run nor the file is needed to read the chain
    want = {"kind": "checkpoint", "path": str(kept), "sha256": digest, "dataset": "market1501",
            "source": "synthetic", "profile": "smoke", "iteration": 1, "start": SCRATCH}
    rec = read_metrics(ft)
    assert rec["start"] == want and rec["source"] == "real"
    assert json.loads(RunDir(ft).config.read_text())["start"] == want
    assert json.loads(RunDir(ft).summary.read_text())["start"] == want
    # the next stage reads the chain from ft's checkpoint alone
    assert provenance.start_of(RunDir(ft).final)["start"] == want
    assert provenance.recipe_gap(rec) == "not the paper's recipe: profile smoke"


def test_start_of_a_bare_state_dict_and_a_missing_file(tmp_path):
    bare = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, bare)
    start = provenance.start_of(bare)
    assert start["sha256"] == hashlib.sha256(bare.read_bytes()).hexdigest()
    assert (start["dataset"], start["source"], start["start"]) == ("unknown", "unknown", {"kind": "unknown"})
    assert provenance.recipe_gap(_record(start=start)) == \
        "not the paper's recipe: starts from a checkpoint of unknown origin, not ImageNet"
    with pytest.raises(ConfigError, match="nope.pt: --init checkpoint not found"):
        provenance.start_of(tmp_path / "nope.pt")


# ============================================================ jlml workbook's chain
def _checkpoint(path: Path, *, profile="pretrain", source="real", data_root="/data/ILSVRC2012",
                dataset="imagenet") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "jlml-checkpoint", "version": 1, "iteration": 3, "model": {}, "num_classes": 2,
                "config": {"profile": profile, "dataset": dataset, "data_root": data_root if source == "real" else None},
                "data": {"dataset": dataset, "source": source, "start": SCRATCH}}, path)
    return path


@pytest.fixture
def chain(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "repo_root", lambda: tmp_path)
    imagenet, market = tmp_path / "ILSVRC2012", tmp_path / "Market-1501"
    imagenet.mkdir(), market.mkdir()
    return tmp_path / "runs" / "03_imagenet_pretraining" / "checkpoints" / "final.pt", str(imagenet), str(market)


def _plan(only, profile=None, **roots):
    return workbook.Plan(workbook.select(only), {"profile": profile} if profile else {}, roots)


def test_the_workbook_passes_a_checkpoint_that_fits(chain):
    ckpt, imagenet, market = chain
    _checkpoint(ckpt, data_root=imagenet)
    plan = _plan(["05"], "paper", imagenet=imagenet, market1501=market)
    assert workbook.notebook_parameters(plan.notebooks[0], plan)["init"] == str(ckpt)
    # without --data-root imagenet a real ImageNet checkpoint fits a real paper-profile run too
    plan = _plan(["05", "06"], "paper", market1501=market)
    assert all(workbook.notebook_parameters(p, plan)["init"] == str(ckpt) for p in plan.notebooks)
    # a smoke checkpoint fits the default (smoke, synthetic) plan
    _checkpoint(ckpt, profile="smoke", source="synthetic")
    assert workbook.notebook_parameters(*_plan(["08"]).notebooks, _plan(["08"]))["init"] == str(ckpt)


def test_a_checkpoint_that_03_trains_in_this_plan_is_passed_without_a_check(chain):
    ckpt, imagenet, market = chain
    _checkpoint(ckpt, profile="smoke", source="synthetic")  # left by an earlier smoke workbook
    plan = _plan(["03", "05"], "paper", imagenet=imagenet, market1501=market)
    assert workbook.notebook_parameters(plan.notebooks[1], plan)["init"] == str(ckpt)  # 03 replaces it first
    ckpt.unlink()  # nor need it exist yet: 03 writes it
    assert workbook.notebook_parameters(plan.notebooks[1], plan)["init"] == str(ckpt)


@pytest.mark.parametrize("saved, plan_args, why", [
    (dict(profile="smoke", source="synthetic"), ("paper", "market1501"),
     "trained with profile smoke, this plan's paper runs need pretrain"),
    (dict(profile="pretrain", source="synthetic"), ("paper", "market1501"),
     "trained on synthetic ImageNet, and this plan trains 05_market on real data with profile paper"),
    (dict(profile="pretrain", source="synthetic"), ("paper", "imagenet"),
     "trained on synthetic ImageNet, not the --data-root imagenet="),
    (dict(profile="pretrain", data_root="/elsewhere/ILSVRC2012"), ("paper", "imagenet"),
     "trained on ImageNet at /elsewhere/ILSVRC2012, not the --data-root imagenet="),
    (dict(profile="pretrain"), (None, "market1501"), "trained with profile pretrain, this plan's smoke runs need smoke"),
    (dict(profile="pretrain", dataset="market1501"), ("paper", "market1501"),
     "not a jlml checkpoint of ImageNet (dataset market1501)"),
])
def test_the_workbook_stops_on_a_checkpoint_that_does_not_fit(chain, saved, plan_args, why):
    ckpt, imagenet, market = chain
    _checkpoint(ckpt, **{"data_root": imagenet, **saved})
    profile, root = plan_args
    roots = {"market1501": market, **({"imagenet": imagenet} if root == "imagenet" else {})}
    plan = _plan(["05"], profile, **roots)
    with pytest.raises(ConfigError) as err:
        workbook.notebook_parameters(plan.notebooks[0], plan)
    text = str(err.value)
    assert "\n" not in text and why in text and text.startswith(f"{ckpt} cannot start 05_market")
    assert "Re-run 03_imagenet_pretraining" in text and "-p init PATH" in text
    if profile == "paper":  # the way back: 03 on real ImageNet, with this plan's profile
        assert "jlml workbook --only 03_imagenet_pretraining --profile paper --data-root imagenet=" in text
    # a bare file that is no checkpoint at all is refused too
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a jlml checkpoint of ImageNet"):
        workbook.notebook_parameters(plan.notebooks[0], plan)


# ============================================================ the banner of 04-08
@pytest.mark.usefixtures("private_cache")
def test_banner_of_a_real_paper_run_off_the_recipe(tmp_path, market_copies, capsys):
    real, synthetic = str(market_copies[True]), str(market_copies[False])
    ns = {"profile": "paper", "data_root": real, "init": None}
    text = notebook.recipe_banner(ns, "05_market")
    assert text.startswith("NOT THE PAPER'S RECIPE — no init: this run trains from scratch, with no ImageNet start")
    assert "-p init runs/03_imagenet_pretraining/checkpoints/final.pt" in text
    assert capsys.readouterr().out.count("NOT THE PAPER'S RECIPE") == 1
    notebook.check_parameters(ns, "05_market")  # the one place 04-08 show it: right after the parameters
    assert capsys.readouterr().out.count("NOT THE PAPER'S RECIPE") == 1
    # a smoke ImageNet checkpoint as init: named
    smoke = _checkpoint(tmp_path / "smoke.pt", profile="smoke", source="synthetic")
    text = notebook.recipe_banner({**ns, "init": str(smoke)}, "08_ablations")
    assert f"init {smoke}: synthetic ImageNet start" in text and "NOT THE PAPER'S RECIPE" in capsys.readouterr().out
    # nothing to say: Table 4's start, the smoke profile, synthetic data, no data at all
    fitting = _checkpoint(tmp_path / "pre.pt")
    assert notebook.recipe_banner({**ns, "init": str(fitting)}, "05_market") is None
    assert notebook.recipe_banner({**ns, "profile": "smoke"}, "05_market") is None
    assert notebook.recipe_banner({**ns, "data_root": synthetic}, "05_market") is None
    assert notebook.recipe_banner({**ns, "data_root": None}, "08_ablations") is None
    assert capsys.readouterr().out == ""
