"""The workbook: notebook hygiene, parameter checking, launching, and `jlml workbook` driving papermill."""
import ast
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
import papermill as pm
import pytest
import torch

import jlml_lib.workbook
from jlml_lib.errors import ConfigError
from jlml_lib.paths import PUBLISHED, TIMINGS
from jlml_lib.workbook import launch, notebook, progress
from jlml_lib.workbook import runner as workbook
from jlml_lib.workbook.launch import ERROR_LINE, command
from jlml_lib.workbook.notebook import check_parameters, declared_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_planned_notebook_exists():
    assert [p.stem for p in NOTEBOOKS] == list(workbook.NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_hygiene(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "stored with outputs"
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    # our reading of the parameters cell agrees with papermill's (which decides what it injects)
    declared = declared_parameters(path.stem)
    assert declared == list(pm.inspect_notebook(str(path)))
    # the cell after the parameters checks them against this very notebook (unknown -p values fail)
    check = code[tagged[0] + 1].source
    # figures show inline even when the shell exports another backend (CI exports MPLBACKEND=Agg)
    if any("plot" in c.source for c in code):
        assert check.startswith("%matplotlib inline\n"), "a notebook that plots selects the inline backend"
    python = TransformerManager().transform_cell(check)  # IPython's own reading of the magic
    call = next(n for n in ast.walk(ast.parse(python)) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "check_parameters")
    assert [ast.unparse(a) for a in call.args] == ["globals()", repr(path.stem)]
    # defaults are the quick synthetic CPU run
    src = code[tagged[0]].source
    for name in ("data_root", "market1501_root", "cuhk03_root", "viper_root", "grid_root", "imagenet_root", "init"):
        if name in declared:
            assert f"{name} = None" in src, f"{name} must default to None (synthetic / from scratch)"
    if "profile" in declared:
        assert 'profile = "smoke"' in src
    if "device" in declared:
        assert 'device = "cpu"' in src


def _notebook_with(tmp_path, parameters: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("x = 'not code'"),
                nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("later = 1")]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_declared_names_are_read_from_the_parameters_cell(tmp_path):
    path = _notebook_with(tmp_path, 'profile = "smoke"  # a comment\ndata_root = None\nsize: int = 3\nprint(1)\n')
    assert declared_parameters(path) == ["profile", "data_root", "size"]
    assert declared_parameters("05_market.ipynb") == declared_parameters("05_market")
    assert "iterations" in declared_parameters("05_market")
    with pytest.raises(ConfigError, match="cannot read the notebook"):
        declared_parameters("42_nothing")


def test_check_parameters_names_the_unknown_one(tmp_path):
    path = _notebook_with(tmp_path, 'profile = "smoke"\ndata_root = None\n')
    ns = {"profile": "smoke", "data_root": None, "bogus": 1, "_private": 2, "json": json, "f": len}
    with pytest.raises(ConfigError, match=r"nb.ipynb: unknown parameter\(s\) bogus.*takes: data_root, profile"):
        check_parameters(ns, path)
    check_parameters({"profile": 1}, path)  # a subset is fine
    # the allowed names follow the cell: declare "bogus" there and the same namespace passes
    check_parameters(ns, _notebook_with(tmp_path, 'profile = "smoke"\ndata_root = None\nbogus = 0\n'))
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) later"):
        check_parameters({"later": 1}, path)  # assigned in another cell: not a parameter
    with pytest.raises(ConfigError, match="05_market.ipynb: unknown parameter.*takes: data_root, device"):
        check_parameters({"bogus": 1}, "05_market")


def test_synthetic_banner_is_shown_once(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(notebook, "display", shown.append)
    notebook.synthetic_banner("real")
    assert not shown and capsys.readouterr().out == ""
    notebook.synthetic_banner("synthetic", "the numbers")  # plain Python: the text only
    out = capsys.readouterr().out
    assert not shown and out.count("SYNTHETIC DATA") == 1 and "the numbers come from" in out
    monkeypatch.setattr(notebook, "_in_kernel", lambda: True)  # a kernel: the HTML banner only
    notebook.synthetic_banner("synthetic", "the numbers")
    assert len(shown) == 1 and "SYNTHETIC DATA" in shown[0].data and capsys.readouterr().out == ""


def test_resolve_path():
    assert notebook.resolve_path(None) is None and notebook.resolve_path("") is None
    assert notebook.resolve_path("runs/x") == Path(workbook.repo_root()) / "runs" / "x"
    assert notebook.resolve_path("/abs/x") == Path("/abs/x")


def test_unknown_parameter_fails_the_notebook(tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter"):
        pm.execute_notebook(str(ROOT / "notebooks" / "00_setup.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"bogus": 1}, kernel_name="python3", progress_bar=False, cwd=str(ROOT))


def test_selection_and_data_roots(tmp_path):
    assert [p.stem for p in workbook.select(["05"])] == ["05_market"]
    assert [p.stem for p in workbook.select(start="08")] == ["08_ablations", "09_paper_tables", "10_diagnostics"]
    with pytest.raises(ConfigError, match="no notebook matches '42'"):
        workbook.select(["42"])
    assert workbook.parse_data_roots([f"viper={tmp_path}"]) == {"viper": str(tmp_path.resolve())}
    with pytest.raises(ConfigError, match="NAME=PATH"):
        workbook.parse_data_roots(["mnist=/x"])
    with pytest.raises(ConfigError, match="does not exist"):
        workbook.parse_data_roots([f"viper={tmp_path / 'nope'}"])


def test_parameters_passed_down(tmp_path, monkeypatch):
    # a repository of its own: the checkout's runs/ (an earlier `make workbook`'s smoke ImageNet
    # checkpoint, which this paper-profile plan refuses) must not decide the outcome
    monkeypatch.setattr(workbook, "repo_root", lambda: tmp_path)
    plan = workbook.Plan(workbook.select(["05"]), {"profile": "paper", "device": "cuda", "unused": 3},
                         {"market1501": "/data/m", "viper": "/data/v"})
    params = workbook.notebook_parameters(plan.notebooks[0], plan)
    assert params["profile"] == "paper" and params["device"] == "cuda" and params["data_root"] == "/data/m"
    assert "unused" not in params
    # the ImageNet checkpoint of 03 is passed on only when it exists
    assert "init" not in params
    ckpt = tmp_path / "runs" / "03_imagenet_pretraining" / "checkpoints" / "final.pt"  # where 03 leaves it
    ckpt.parent.mkdir(parents=True)
    # one that fits this real paper-profile plan: real ImageNet, Table 4's pre-train row (tests/test_provenance.py
    # checks the ones that do not fit)
    torch.save({"format": "jlml-checkpoint", "version": 1, "iteration": 3, "model": {}, "num_classes": 2,
                "config": {"profile": "pretrain", "dataset": "imagenet", "data_root": "/data/imagenet"},
                "data": {"dataset": "imagenet", "source": "real"}}, ckpt)
    assert workbook.notebook_parameters(plan.notebooks[0], plan)["init"] == str(ckpt)


def test_the_quick_run_is_the_default_and_full_adds_full_run():
    """``jlml workbook`` runs 08's own defaults (the quick grid nbval runs); ``--full`` the whole grid."""
    path = workbook.select(["08"])[0]
    defaults = {k: notebook.parameter_default("08_ablations", k) for k in workbook.FULL_RUN["08_ablations"]}
    assert defaults["sfl_seeds"] < 3 and defaults["sfl_iterations"] is not None and not defaults["sfl_paper_lambda"]
    quick = workbook.notebook_parameters(path, workbook.Plan([path]))
    assert not set(workbook.FULL_RUN["08_ablations"]) & set(quick)  # the notebook's defaults stand
    params = workbook.notebook_parameters(path, workbook.Plan([path], full=True))
    assert params["sfl_seeds"] == 3 and params["sfl_iterations"] is None and params["sfl_paper_lambda"] is True
    # a value given to the workbook wins
    assert workbook.notebook_parameters(path, workbook.Plan([path], {"sfl_seeds": 5}, full=True))["sfl_seeds"] == 5
    # FULL_RUN names only parameters its notebooks declare (a typo would be dropped silently)
    for stem, add in workbook.FULL_RUN.items():
        assert set(add) <= set(declared_parameters(stem)), stem


def test_full_and_fresh_reach_the_plan(monkeypatch):
    plans = []
    monkeypatch.setattr(workbook, "run", lambda plan: plans.append(plan) or 0)
    assert workbook.main(["--only", "02"]) == 0 and workbook.main(["--only", "02", "--full", "--fresh"]) == 0
    assert (plans[0].full, plans[0].fresh, plans[1].full, plans[1].fresh) == (False, False, True, True)
    assert plans[0].kind() == "quick" and plans[1].kind() == "full"
    assert workbook.Plan([], {"device": "cuda"}, {"market1501": "/m"}).kind() == "quick device=cuda market1501=real"
    assert "--full` adds 08_ablations: sfl_seeds=3" in workbook.describe(plans[0])


def test_fresh_reaches_the_kernels_environment(monkeypatch):
    monkeypatch.delenv(launch.FRESH_ENV, raising=False)
    with workbook.fresh_runs(True):
        assert os.environ[launch.FRESH_ENV] == "1"
    assert launch.FRESH_ENV not in os.environ
    with workbook.fresh_runs(False):
        assert launch.FRESH_ENV not in os.environ


@pytest.mark.slow
def test_jlml_workbook_only_02_runs_through_papermill():
    # --fresh: executed even when an earlier `make workbook` left an unchanged copy to skip
    out = subprocess.run([sys.executable, "-m", "jlml_lib.cli", "workbook", "--only", "02", "--fresh"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "[1/1] 02_model.ipynb" in out.stdout and "done in" in out.stdout
    executed = nbformat.read(ROOT / "results" / "executed" / "02_model.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert (ROOT / "results" / "tables" / "table13.md").exists()


def test_workbook_reports_a_failing_notebook(tmp_path, monkeypatch):
    bad = tmp_path / "notebooks" / "00_setup.ipynb"
    bad.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nbformat.write(nb, bad)
    lines = []
    plan = workbook.Plan([bad], executed_dir=tmp_path / "executed")
    assert workbook.run(plan, log=lines.append) == 1
    assert any("FAILED 00_setup.ipynb" in line and "boom" in line for line in lines)
    assert (tmp_path / "executed" / "00_setup.ipynb").exists()  # the failed copy is kept
    stamp = workbook.read_stamp(tmp_path / "executed" / "00_setup.ipynb")
    assert stamp["ok"] is False and workbook.unchanged_since(bad, {}, plan) is None  # executes next time


def test_a_wrong_data_root_fails_in_the_notebook_not_silently(tmp_path):
    """Never a silent fall-back to synthetic data when the user gave a real root."""
    with pytest.raises(pm.PapermillExecutionError, match="does not hold the dataset") as err:
        pm.execute_notebook(str(ROOT / "notebooks" / "05_market.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"data_root": str(tmp_path), "out_dir": str(tmp_path / "run")},
                            kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    assert err.value.ename == "DataError"
    assert not (tmp_path / "run").exists()  # nothing was trained


def test_the_runner_prints_no_kernel_warnings(tmp_path, capfd, monkeypatch):
    """ipykernel's "Kernel is running over TCP without encryption" used to come before every notebook."""
    monkeypatch.setattr(workbook, "build_tables", lambda *a: [])  # not the repository's results/tables
    path = tmp_path / "notebooks" / "00_setup.ipynb"
    path.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('ran', x + 1)")]
    nbformat.write(nb, path)
    assert workbook.run(workbook.Plan([path], executed_dir=tmp_path / "executed")) == 0
    out = capfd.readouterr()
    assert "[1/1] 00_setup.ipynb" in out.out
    assert "without encryption" not in out.out + out.err and "WARNING" not in out.err
    assert "Warning" not in out.out + out.err  # nbformat's MissingIDFieldWarning among others
    executed = nbformat.read(tmp_path / "executed" / "00_setup.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "ran 2\n"
    assert not list(ROOT.glob("kernel-ipc-*"))  # no socket files left in the working folder


def test_parameter_default_follows_the_notebook(tmp_path):
    path = _notebook_with(tmp_path, 'out_dir = "runs/x"  # where\nn: int = 3\nn = 4\ninit = None\n')
    assert notebook.parameter_default(path, "out_dir") == "runs/x"
    assert notebook.parameter_default(path, "n") == 4 and notebook.parameter_default(path, "init") is None
    assert notebook.parameter_default("05_market", "out_dir") == "runs/05_market"  # what 10 diagnoses
    with pytest.raises(ConfigError, match="has no parameter 'later'"):
        notebook.parameter_default(path, "later")


def test_the_old_entry_point_still_runs_the_workbook(capsys):
    assert jlml_lib.workbook.main(["--only", "42"]) == 2
    assert "no notebook matches '42'" in capsys.readouterr().err


def test_a_missing_upstream_checkpoint_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"upstream checkpoint .*nope\.pt does not exist.*03_imagenet"):
        command("market1501", tmp_path / "run", init=str(tmp_path / "nope.pt"))
    cmd = command("market1501", tmp_path / "run", nproc=4, overrides={"sfl": False, "device": "cuda"})
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert "sfl=false" in cmd and "device=cuda" in cmd


@pytest.mark.parametrize("line", [
    "Traceback (most recent call last):",
    "jlml_lib.errors.ConfigError: dataset 'x' is unknown",
    "ValueError: bad value",
    "KeyboardInterrupt",
    "[rank1]: RuntimeError: CUDA out of memory",
    "ERROR:torch.distributed.elastic.multiprocessing.api:failed (exitcode: 1)",
    "jlml train: stopped: non-finite loss at iteration 12",
    "jlml train: error: argument --profile: invalid choice: 'fast'",
])
def test_error_lines_are_recognised(line):
    assert ERROR_LINE.match(line)


@pytest.mark.parametrize("line", [
    "iteration 100/300 loss 5.1 lr 0.01",
    "mirror padding: on",               # "rror" inside a word was taken for an error
    "  terror_level = 0",
    "errors: 0, warnings: 2",
    "UserWarning: the ErrorHandler is deprecated",
    "  File \"/x/train.py\", line 3, in <module>",
])
def test_other_lines_are_not_errors(line):
    assert not ERROR_LINE.match(line)


# ---------------------------------------------------------------- notebook reuse, progress, warnings
def _tiny_notebook(folder: Path, stem: str, code: str = "print('ran', x + 1)") -> Path:
    path = folder / f"{stem}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return path


def _fake_execution(plan, path, params, started, finished, ok=True):
    """An executed copy as the runner leaves it, without a kernel."""
    out = plan.executed_dir / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(path.read_text())
    workbook.write_stamp(out, workbook.stamp_inputs(path, params), started, finished, ok)


def _record(runs: Path, name: str, mtime: float) -> None:
    path = runs / name / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    os.utime(path, (mtime, mtime))


def test_how_a_notebook_is_found_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "repo_root", lambda: tmp_path)
    a, b = _tiny_notebook(tmp_path / "nb", "04_a"), _tiny_notebook(tmp_path / "nb", "05_b")
    plan = workbook.Plan([a, b], executed_dir=tmp_path / "executed")
    assert workbook.unchanged_since(a, {}, plan) is None  # never executed
    _fake_execution(plan, a, {}, 1000.0, 1100.0)
    _fake_execution(plan, b, {}, 1200.0, 1300.0)
    _record(tmp_path / "runs", "04_a", 1050.0)  # written while 04 ran
    _record(tmp_path / "runs", "05_b", 1250.0)  # written while 05, a later notebook, ran
    assert workbook.unchanged_since(a, {}, plan) == 1100.0 and workbook.unchanged_since(b, {}, plan) == 1300.0
    # other parameters, --fresh, a failed execution: executes
    assert workbook.unchanged_since(a, {"x": 2}, plan) is None
    assert workbook.unchanged_since(a, {}, workbook.Plan([a], executed_dir=plan.executed_dir, fresh=True)) is None
    _fake_execution(plan, b, {}, 1200.0, 1300.0, ok=False)
    assert workbook.unchanged_since(b, {}, plan) is None
    _fake_execution(plan, b, {}, 1200.0, 1300.0)
    # a record written after both, by neither (e.g. `jlml train` by hand): both execute again
    _record(tmp_path / "runs", "by_hand", 2000.0)
    assert workbook.unchanged_since(a, {}, plan) is None and workbook.unchanged_since(b, {}, plan) is None
    (tmp_path / "runs" / "by_hand" / "metrics.json").unlink()
    # an earlier notebook's new record: only the later notebook executes again
    _fake_execution(plan, a, {}, 1400.0, 1500.0)
    _record(tmp_path / "runs", "04_a", 1450.0)
    assert workbook.unchanged_since(a, {}, plan) == 1500.0 and workbook.unchanged_since(b, {}, plan) is None
    # the notebook's own text (prose too) and the bytes of a file it is given
    ckpt = tmp_path / "final.pt"
    ckpt.write_bytes(b"A")
    _fake_execution(plan, a, {"init": str(ckpt)}, 1400.0, 1500.0)
    assert workbook.unchanged_since(a, {"init": str(ckpt)}, plan) == 1500.0
    ckpt.write_bytes(b"B")
    assert workbook.unchanged_since(a, {"init": str(ckpt)}, plan) is None
    nb = nbformat.read(a, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("a word more"))
    nbformat.write(nb, a)
    assert workbook.unchanged_since(a, {}, plan) is None


def test_a_second_run_skips_what_did_not_change(tmp_path, monkeypatch):
    monkeypatch.setattr(workbook, "build_tables", lambda *a: [])
    monkeypatch.setattr(workbook, "repo_root", lambda: tmp_path)
    first, second = _tiny_notebook(tmp_path / "nb", "00_a"), _tiny_notebook(tmp_path / "nb", "01_b")
    plan = workbook.Plan([first, second], executed_dir=tmp_path / "executed")
    lines = []
    assert workbook.run(plan, log=lines.append) == 0
    assert "remaining: unknown" in lines[0] and sum("done in" in line for line in lines) == 2
    timed = progress.load(tmp_path / "executed" / "timings.json")["quick"]
    assert set(timed) == {"00_a", "01_b"} and all(t > 0 for t in timed.values())
    lines.clear()
    assert workbook.run(plan, log=lines.append) == 0
    assert [line.endswith(", skipped") and "unchanged since" in line for line in lines[1:3]] == [True, True]
    assert "remaining: none" in lines[0]
    # edit the second notebook's code: only it executes, and its last time is shown
    nb = nbformat.read(second, as_version=4)
    nb.cells[-1].source = "print('ran again', x)"
    nbformat.write(nb, second)
    lines.clear()
    assert workbook.run(plan, log=lines.append) == 0
    assert "skipped" in lines[1] and lines[2].startswith("[2/2] 01_b.ipynb (last time ")
    assert "remaining: none" in lines[3] and "done in" in lines[3]
    executed = nbformat.read(tmp_path / "executed" / "01_b.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "ran again 1\n"
    assert executed.metadata[workbook.STAMP]["ok"] is True


def test_remaining_time_from_measured_times():
    assert progress.duration(42.4) == "42 s" and progress.duration(185) == "3 min 05 s"
    assert progress.duration(3720) == "1 h 02 min"
    times = {"00": 30.0, "05": 90.0}
    assert progress.remaining(times, ["00", "05"]) == "remaining ≈ 2 min 00 s"
    assert progress.remaining(times, ["05", "08"]) == "remaining ≈ 1 min 30 s + 08 (not measured yet)"
    assert progress.remaining(times, ["08"]).startswith("remaining: unknown")
    assert progress.remaining(times, []) == "remaining: none"
    # this run goes at half the last times' pace: the rest is expected in half the time
    assert progress.pace({}, times) == 1.0
    assert progress.pace({"00": 15.0, "new": 99.0}, times) == 0.5  # "new" has no last time: not counted
    assert progress.remaining(times, ["05"], speed=0.5) == "remaining ≈ 45 s"


def test_full_run_times_fall_back_to_quick_times_for_the_notebooks_it_does_not_change(tmp_path, monkeypatch):
    from jlml_lib.workbook import runner

    monkeypatch.setattr(runner, "repo_root", lambda: tmp_path)  # no published times here
    (changed,) = runner.FULL_RUN  # the notebook --full changes (08)
    timings = tmp_path / "timings.json"
    progress.record(timings, progress.QUICK, "00_setup", 30)
    progress.record(timings, progress.QUICK, changed, 300)
    full = runner.Plan(notebooks=[], full=True)
    # 08 under --full has not been measured: its quick time would mislead, so it stays unknown
    assert runner.reference_times(full, timings) == {"00_setup": 30.0}
    progress.record(timings, progress.FULL, changed, 1200)
    assert runner.reference_times(full, timings) == {"00_setup": 30.0, changed: 1200.0}
    # and a quick run takes --full's times of the notebooks it runs the same way
    progress.record(timings, progress.FULL, "01_data_preparation", 12)
    assert runner.reference_times(runner.Plan(notebooks=[]), timings) == {
        "00_setup": 30.0, changed: 300.0, "01_data_preparation": 12.0}
    # a notebook this machine never timed takes the published time (a checkout whose last run
    # skipped it); this machine's own time wins where it has one
    published = tmp_path / PUBLISHED / TIMINGS
    progress.record(published, progress.QUICK, "02_model", 19)
    progress.record(published, progress.QUICK, "00_setup", 99)
    assert runner.reference_times(runner.Plan(notebooks=[]), timings) == {
        "00_setup": 30.0, changed: 300.0, "01_data_preparation": 12.0, "02_model": 19.0}
    # another kind (a profile) never borrows the plain run's times
    assert runner.reference_times(runner.Plan(notebooks=[], full=True, params={"profile": "paper"}), timings) == {}


def test_timings_are_kept_per_kind(tmp_path):
    path = tmp_path / "timings.json"
    progress.record(path, "quick", "08", 100)
    progress.record(path, "full", "08", 900)
    progress.record(path, "quick", "08", 120)
    assert progress.load(path) == {"quick": {"08": 120.0}, "full": {"08": 900.0}}
    path.write_text("not json")
    assert progress.load(path) == {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_and_writes_every_notebook_without_warnings(path):
    """nbformat's MissingIDFieldWarning came from 05's cells without an id: papermill validates
    the notebook when it reads it and when it writes the executed copy (its own injected cell
    has an id). Every cell has a unique one, and the whole path is quiet."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    raw = json.loads(path.read_text())
    ids = [c.get("id") for c in raw["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), "every cell needs a unique id"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb = load_notebook_node(str(path))
        nb = parameterize_notebook(nb, {"seed": 1}, kernel_name="python3")
        nbformat.validate(nbformat.reads(nbformat.writes(nb), as_version=4))


def test_the_runner_stamp_keeps_the_executed_copy_valid(tmp_path):
    path = _tiny_notebook(tmp_path, "00_a")
    plan = workbook.Plan([path], executed_dir=tmp_path / "executed")
    _fake_execution(plan, path, {"x": 1}, 1.0, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb = nbformat.read(plan.executed_dir / path.name, as_version=4)
        nbformat.validate(nb)
    assert nb.metadata[workbook.STAMP]["inputs"]["parameters"] == {"x": 1}
