"""The workbook: notebook hygiene, parameter checking, launching, and `jlml workbook` driving papermill."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
import papermill as pm
import pytest
import torch

import jlml_lib.workbook
from jlml_lib.errors import ConfigError
from jlml_lib.workbook import notebook
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
    plan = workbook.Plan(workbook.select(["05"]), {"profile": "paper", "device": "cuda", "unused": 3},
                         {"market1501": "/data/m", "viper": "/data/v"})
    params = workbook.notebook_parameters(plan.notebooks[0], plan)
    assert params["profile"] == "paper" and params["device"] == "cuda" and params["data_root"] == "/data/m"
    assert "unused" not in params
    # the ImageNet checkpoint of 03 is passed on only when it exists
    monkeypatch.setattr(workbook, "repo_root", lambda: tmp_path)
    assert "init" not in workbook.notebook_parameters(plan.notebooks[0], plan)
    ckpt = tmp_path / "runs" / "03_imagenet_pretraining" / "checkpoints" / "final.pt"  # where 03 leaves it
    ckpt.parent.mkdir(parents=True)
    # one that fits this real paper-profile plan: real ImageNet, Table 4's pre-train row (tests/test_provenance.py
    # checks the ones that do not fit)
    torch.save({"format": "jlml-checkpoint", "version": 1, "iteration": 3, "model": {}, "num_classes": 2,
                "config": {"profile": "pretrain", "dataset": "imagenet", "data_root": "/data/imagenet"},
                "data": {"dataset": "imagenet", "source": "real"}}, ckpt)
    assert workbook.notebook_parameters(plan.notebooks[0], plan)["init"] == str(ckpt)


def test_the_workbook_runs_the_full_selection_grid_nbval_the_reduced_one():
    """08's defaults are the quick grid (nbval runs them); ``jlml workbook`` passes the full one."""
    path = workbook.select(["08"])[0]
    defaults = {k: notebook.parameter_default("08_ablations", k) for k in workbook.FULL_RUN["08_ablations"]}
    assert defaults["sfl_seeds"] < 3 and defaults["sfl_iterations"] is not None and not defaults["sfl_paper_lambda"]
    params = workbook.notebook_parameters(path, workbook.Plan([path]))
    assert params["sfl_seeds"] == 3 and params["sfl_iterations"] is None and params["sfl_paper_lambda"] is True
    # a value given to the workbook wins
    assert workbook.notebook_parameters(path, workbook.Plan([path], {"sfl_seeds": 5}))["sfl_seeds"] == 5


@pytest.mark.slow
def test_jlml_workbook_only_02_runs_through_papermill():
    out = subprocess.run([sys.executable, "-m", "jlml_lib.cli", "workbook", "--only", "02"], cwd=ROOT,
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
