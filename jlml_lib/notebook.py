"""Small helpers the notebooks call, so that no notebook holds logic the tests cannot reach."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigError

# names IPython puts in a kernel's namespace by itself
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_parameters(namespace: Mapping[str, Any], allowed: Iterable[str], notebook: str) -> None:
    """Fail loudly on a parameter the notebook does not know (papermill only warns).

    Call it in the cell right after the ``parameters`` cell (and papermill's injected cell) with
    ``globals()``: every public, non-module name defined by then must be a known parameter.
    """
    import types

    allowed = set(allowed)
    unknown = sorted(
        name for name, value in namespace.items()
        if not name.startswith("_") and name not in _KERNEL_NAMES and name not in allowed
        and not isinstance(value, types.ModuleType) and not callable(value)
    )
    if unknown:
        raise ConfigError(
            f"{notebook}: unknown parameter(s) {', '.join(unknown)}. "
            f"This notebook takes: {', '.join(sorted(allowed))}. Fix the -p option(s) of papermill "
            "or `jlml workbook`."
        )


def resolve_path(path: str | Path | None) -> Path | None:
    """A relative path in a notebook parameter is relative to the repository root, wherever the
    kernel was started (JupyterLab, papermill and nbval each use a different working folder)."""
    if path is None or str(path) == "":
        return None
    from .results.paper import repo_root

    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def synthetic_banner(source: str, what: str = "these numbers") -> None:
    """Display a loud banner when the data is synthetic (the notebooks call it after loading)."""
    if source == "real":
        return
    text = (f"SYNTHETIC DATA — {what} come from the procedural pedestrian generator, not from the real "
            "dataset. They show that the pipeline works and how to read the results; they are NOT a "
            "reproduction of the paper. Pass data_root=... to run on the real dataset.")
    try:
        from IPython.display import HTML, display

        display(HTML(f'<div style="background:#b00020;color:white;padding:10px;font-weight:bold;'
                     f'font-size:110%;border-radius:4px">{text}</div>'))
    except ImportError:  # plain Python
        pass
    print("!" * 20, text, "!" * 20)
