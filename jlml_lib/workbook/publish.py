"""The quick synthetic run as the repository shows it: executed notebooks and tables to browse.

`jlml workbook` with no option (= `make workbook`) ends by copying what it made into
``results/synthetic-run/`` (``paths.PUBLISHED``), the folder that is committed, so someone browsing
the repository sees every notebook's figures and the regenerated tables without running anything
(issue 18). ``results/executed/`` and ``results/tables/`` stay the working copies (not committed:
they carry the runner's stamps and real-data results when you give real data).

On the way the copies are made machine-independent and small:

* every text in an output (streams, plain text, HTML, tracebacks) and every text file of the tables
  has the repository's folder written as ``.``, the synthetic-data cache as ``$JLML_CACHE``, the
  Python interpreter as ``python`` and the home folder as ``~``;
* the runner's stamp and papermill's input/output paths leave the notebook's metadata;
* PNG figures are re-encoded with at most 256 colours (matplotlib's figures use few; the pictures
  of people lose nothing visible), typically a third of their size.

Only a quick run on synthetic data is published: a real-data or ``--full`` run stays in
``results/executed/`` (:func:`publishable`).
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

import nbformat
from PIL import Image

from jlml_lib.data.base import cache_dir
from jlml_lib.io import write_json
from jlml_lib.paths import PUBLISHED, TABLES, TIMINGS, repo_root
from jlml_lib.workbook import progress

#: the tables' files that are copied (text is scrubbed, pictures re-encoded)
TABLE_SUFFIXES = (".md", ".csv", ".png")
#: metadata the runner and papermill write that names this machine's paths or the runner's stamp
_DROP_METADATA = ("jlml",)
_DROP_PAPERMILL = ("input_path", "output_path")


def replacements(root: Path | None = None) -> list[tuple[str, str]]:
    """(machine-specific text, its stand-in), longest first so a path inside another is replaced
    by the more specific stand-in; ``root``: the checkout the notebooks executed in."""
    pairs = {str(Path(root) if root is not None else repo_root()): ".", str(cache_dir()): "$JLML_CACHE", sys.executable: "python",
             str(Path(sys.executable).resolve()): "python", str(Path.home()): "~"}
    return sorted(((k, v) for k, v in pairs.items() if k and k not in ("/", ".")), key=lambda kv: -len(kv[0]))


def scrub(text: str, pairs: Iterable[tuple[str, str]]) -> str:
    """``text`` with every machine-specific string of ``pairs`` replaced by its stand-in."""
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def small_png(data: bytes) -> bytes:
    """A PNG re-encoded with an adaptive palette of at most 256 colours (the smaller of the two)."""
    with Image.open(io.BytesIO(data)) as im:
        rgba = im.convert("RGBA")
    out = io.BytesIO()
    rgba.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def _scrub_value(value: Any, pairs: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return scrub(value, pairs)
    if isinstance(value, list):
        return [_scrub_value(v, pairs) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, pairs) for k, v in value.items()}
    return value


def publish_notebook(src: Path, dst: Path, pairs: list[tuple[str, str]]) -> None:
    """One executed notebook, scrubbed and with small figures, written to ``dst``."""
    nb = nbformat.read(src, as_version=4)
    for key in _DROP_METADATA:
        nb.metadata.pop(key, None)
    papermill = nb.metadata.get("papermill", {})
    for key in _DROP_PAPERMILL:
        papermill.pop(key, None)
    if "parameters" in papermill:  # what the runner passed, e.g. an init checkpoint's path
        papermill["parameters"] = _scrub_value(papermill["parameters"], pairs)
    for cell in nb.cells:
        cell.source = scrub(cell.source, pairs)  # papermill's injected-parameters cell names them too
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _scrub_value(out["text"], pairs)
            if "traceback" in out:
                out["traceback"] = _scrub_value(out["traceback"], pairs)
            data = out.get("data", {})
            for mime in list(data):
                if mime == "image/png":
                    raw = base64.b64decode(data[mime])
                    data[mime] = base64.b64encode(small_png(raw)).decode("ascii")
                else:  # text/plain, text/html, text/markdown, image/svg+xml ...; JSON dicts are left
                    data[mime] = _scrub_value(data[mime], pairs)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, dst)


def publishable(params: dict[str, Any], data_roots: dict[str, str], *, full: bool, complete: bool) -> bool:
    """Whether a workbook run is the quick synthetic one the repository shows: every notebook,
    each with its defaults, no real data, not --full."""
    return complete and not params and not data_roots and not full


def publish(executed_dir: Path, tables_dir: Path | None = None, out_dir: Path | None = None, *,
            source_root: Path | None = None) -> list[Path]:
    """Copy the executed notebooks and the tables into ``out_dir`` (default ``paths.PUBLISHED``),
    replacing what was there; returns the files written. ``source_root``: the checkout they were
    made in (default this one)."""
    root = repo_root()
    tables_dir = Path(tables_dir) if tables_dir is not None else root / TABLES
    out_dir = Path(out_dir) if out_dir is not None else root / PUBLISHED
    pairs = replacements(source_root)
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    written = []
    for nb in sorted(Path(executed_dir).glob("*.ipynb")):
        publish_notebook(nb, staging / "notebooks" / nb.name, pairs)
        written.append(out_dir / "notebooks" / nb.name)
    for f in sorted(p for p in tables_dir.glob("*") if p.suffix in TABLE_SUFFIXES):
        dst = staging / "tables" / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".png":
            dst.write_bytes(small_png(f.read_bytes()))
        else:
            dst.write_text(scrub(f.read_text(), pairs))
        written.append(out_dir / "tables" / f.name)
    # the reference times a fresh clone's first ETA is computed from (quick and --full), each
    # notebook's last: this run's, else the one published before
    kept = progress.latest(progress.load(out_dir / TIMINGS), progress.load(Path(executed_dir) / TIMINGS),
                           kinds=(progress.QUICK, progress.FULL))
    if kept:
        write_json(staging / TIMINGS, kept)
        written.append(out_dir / TIMINGS)
    readme = out_dir / "README.md"
    if readme.exists():  # the folder's own README is kept
        shutil.copy2(readme, staging / "README.md")
    # swap in whole: a reader never sees half of one run and half of another
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return written
