"""Small helpers every notebook calls, so that no notebook holds logic the tests cannot reach.

A notebook declares its parameters once, in its cell tagged ``parameters`` (papermill's
convention); :func:`check_parameters` reads them from there, so no list is kept by hand.
"""
from __future__ import annotations

import ast
import json
import os
import types
from pathlib import Path
from typing import Any, Mapping

from IPython import get_ipython
from IPython.display import HTML, display

from jlml_lib.errors import ConfigError
from jlml_lib.paths import NOTEBOOKS, REPO_ROOT, in_repo

#: the values of the notebooks' ``profile`` parameter (and `jlml workbook --profile`): the quick
#: CPU run, or Table 4's settings
PROFILES = ("smoke", "paper")
#: notebook -> the dataset whose --data-root it takes as ``data_root`` (others take ``<name>_root``)
DATA_ROOT_OF = {"03_imagenet_pretraining": "imagenet", "04_cuhk03": "cuhk03", "05_market": "market1501",
                "06_viper": "viper", "07_grid": "grid", "08_ablations": "market1501", "10_diagnostics": "market1501"}

# names IPython puts in a kernel's namespace by itself
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def notebook_dir() -> Path:
    return REPO_ROOT / NOTEBOOKS


def notebook_path(notebook: str | os.PathLike) -> Path:
    """``"05_market"`` or ``"05_market.ipynb"`` -> notebooks/05_market.ipynb; a path to an
    ``.ipynb`` file is taken as it is."""
    p = Path(notebook)
    if p.suffix == ".ipynb" and (p.is_absolute() or len(p.parts) > 1):
        return p
    return notebook_dir() / f"{p.name.removesuffix('.ipynb')}.ipynb"


def declared_parameters(notebook: str | os.PathLike) -> list[str]:
    """The names assigned in the notebook's cell tagged ``parameters``, in order."""
    path = notebook_path(notebook)
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: cannot read the notebook ({exc}); check its name.") from None
    tagged = [c for c in cells
              if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ConfigError(f"{path}: expected exactly one code cell tagged 'parameters', found {len(tagged)}.")
    source = tagged[0]["source"]
    tree = ast.parse(source if isinstance(source, str) else "".join(source))
    names: list[str] = []
    for node in tree.body:  # papermill's rule: top-level assignments of one name
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def parameter_default(notebook: str | os.PathLike, name: str) -> Any:
    """The value the notebook's ``parameters`` cell assigns to ``name`` (a literal), so that another
    notebook can follow it (10 diagnoses the run 05 trains into) without spelling it again."""
    path = notebook_path(notebook)
    if name not in declared_parameters(path):
        raise ConfigError(f"{path.name} has no parameter {name!r}; it takes: {', '.join(declared_parameters(path))}")
    cell = next(c for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", []))
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    value = None
    for node in ast.parse(source).body:  # the last assignment wins, as when the cell runs
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and any(
                isinstance(t, ast.Name) and t.id == name
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            value = ast.literal_eval(node.value)
    return value


def check_parameters(namespace: Mapping[str, Any], notebook: str | os.PathLike) -> None:
    """Fail loudly on a parameter the notebook does not declare (papermill only warns).

    Call it in the cell right after the ``parameters`` cell (and papermill's injected cell) with
    ``globals()`` and the notebook's name, e.g. ``check_parameters(globals(), "05_market")``: every
    public, non-module, non-callable name defined by then must be assigned in the parameters cell.
    """
    allowed = set(declared_parameters(notebook))
    unknown = sorted(
        name for name, value in namespace.items()
        if not name.startswith("_") and name not in _KERNEL_NAMES and name not in allowed
        and not isinstance(value, types.ModuleType) and not callable(value)
    )
    if unknown:
        raise ConfigError(
            f"{notebook_path(notebook).name}: unknown parameter(s) {', '.join(unknown)}. "
            f"This notebook takes: {', '.join(sorted(allowed))}. Fix the -p option(s) of papermill "
            "or `jlml workbook`."
        )
    if "init" in allowed:  # 04-08: say it here, at the top, when the run will not be the paper's recipe
        recipe_banner(namespace, notebook)


def _real_data(namespace: Mapping[str, Any], notebook: str | os.PathLike) -> bool:
    """Whether the notebook's ``data_root`` holds a real copy of its dataset (False for a synthetic
    copy, no root, or one that does not hold the dataset: opening it says why, a cell later)."""
    from jlml_lib.data.base import find_dataset_dir, source_of
    from jlml_lib.errors import DataError

    name, root = DATA_ROOT_OF.get(notebook_path(notebook).stem), resolve_path(namespace.get("data_root"))
    if name is None or root is None:
        return False
    try:
        return source_of(name, find_dataset_dir(name, root)) == "real"
    except (DataError, ConfigError, OSError):
        return False


def recipe_gap(namespace: Mapping[str, Any], notebook: str | os.PathLike) -> str | None:
    """Why a notebook's run on REAL data with the ``paper`` profile will not be the paper's experiment
    (§3: every re-id model starts from ImageNet; ``init`` is that checkpoint for 04-08), or None: no
    init (from scratch), or an init that is not a real, Table 4 ImageNet model."""
    from jlml_lib.provenance import CHECKPOINT, checkpoint_facts, read_checkpoint, start_gap

    if namespace.get("profile") != "paper" or not _real_data(namespace, notebook):
        return None
    init = resolve_path(namespace.get("init"))
    if init is None:
        return "no init: this run trains from scratch, with no ImageNet start"
    try:
        facts = checkpoint_facts(read_checkpoint(init))
    except ConfigError:
        return None  # a missing init is refused by the training itself, with its own message
    gap = start_gap({"kind": CHECKPOINT, **facts}, ("imagenet",))
    return f"init {init}: {gap.split(': ', 1)[-1]}" if gap else None


def recipe_banner(namespace: Mapping[str, Any], notebook: str | os.PathLike) -> str | None:
    """The banner of a real, paper-profile notebook run whose start is not Table 4's (issue 19), shown
    once by :func:`check_parameters`; returns its text (None: nothing to say)."""
    from jlml_lib.paths import IMAGENET_STAGE, RunDir

    gap = recipe_gap(namespace, notebook)
    if gap is None:
        return None
    text = (f"NOT THE PAPER'S RECIPE — {gap}. The paper (§3, Table 4) starts every re-id model from JLML "
            "pre-trained on ImageNet (ILSVRC2012): run 03_imagenet_pretraining on ImageNet with profile paper, "
            f"then pass -p init {RunDir(IMAGENET_STAGE).final} (jlml workbook passes it). The numbers below are "
            "real, but the tables mark them \"not the paper's recipe\" and never as a reproduction of the paper.")
    _banner(text, "#e65100")
    return text


def resolve_path(path: str | os.PathLike | None) -> Path | None:
    """A path parameter: relative ones are relative to the repository root, wherever the kernel
    was started (JupyterLab, papermill and nbval each use a different working folder); None or
    "" stay None."""
    if path is None or str(path) == "":
        return None
    return in_repo(path)


def _in_kernel() -> bool:
    """True in a Jupyter kernel (which renders HTML), False in plain Python or a terminal IPython."""
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def synthetic_banner(source: str, what: str = "these numbers") -> None:
    """Say once, loudly, that the data is synthetic: a red HTML banner in a notebook, the plain
    text elsewhere. Nothing for real data."""
    if source == "real":
        return
    text = (f"SYNTHETIC DATA — {what} come from the procedural pedestrian generator, not from the real "
            "dataset. They show that the pipeline works and how to read the results; they are NOT a "
            "reproduction of the paper. Pass data_root=... to run on the real dataset.")
    _banner(text, "#b00020")


def _banner(text: str, colour: str) -> None:
    """A coloured HTML banner in a notebook, the plain text elsewhere."""
    if _in_kernel():
        display(HTML(f'<div style="background:{colour};color:white;padding:10px;font-weight:bold;'
                     f'font-size:110%;border-radius:4px">{text}</div>'))
    else:
        print("!" * 20, text, "!" * 20)
