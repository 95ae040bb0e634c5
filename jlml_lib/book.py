"""`jlml book`: the executed workbook as a static HTML site, nothing re-executed.

    jlml book                      # results/executed/*.ipynb -> build/book/html/index.html
    jlml book --executed DIR --tables DIR --runs DIR --out DIR

Sphinx + MyST-NB render the executed copies exactly as papermill left them (``nb_execution_mode =
"off"`` in ``docs/book/conf.py``). The pages: a landing page (the README's opening and the state of
the book), one page per notebook of ``notebooks/`` in its ``NN_`` order -- the executed copy, or a
"not run yet" page naming the command that runs it -- the regenerated tables of
``results/tables/`` with their plots, and every run record under ``runs/``. Every number on these
pages comes from an executed notebook, a generated table or a ``metrics.json``; none is typed here.

An executed copy whose notebook no longer exists in ``notebooks/`` stops the build (a
``DataError`` naming it): the book must not show a notebook the workbook no longer has.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from jlml_lib.errors import DataError
from jlml_lib.io import write_text
from jlml_lib.paths import REPO_ROOT
from jlml_lib.results.records import DEFAULT_VARIANT
from jlml_lib.results.tables import scan_records

NOTEBOOK_NAME = re.compile(r"^(\d\d)_\w+$")   # notebooks/NN_name.ipynb: NN is the reading order
CONF_DIR = REPO_ROOT / "docs" / "book"
DEFAULT_OUT = REPO_ROOT / "build" / "book"
NOT_RUN = "not run yet"


# ---------------------------------------------------------------- what goes in
def notebook_order(notebooks_dir: Path) -> list[Path]:
    """The workbook's notebooks, ``NN_name.ipynb``, in reading order."""
    return sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(p.stem))


def match_executed(notebooks: list[Path], executed_dir: Path) -> dict[str, Path | None]:
    """``{stem: executed copy or None}`` in notebook order; an orphaned executed copy is an error."""
    executed = {p.stem: p for p in Path(executed_dir).glob("*.ipynb")} if Path(executed_dir).is_dir() else {}
    known = {p.stem for p in notebooks}
    orphans = sorted(stem for stem in executed if stem not in known)
    if orphans:
        names = ", ".join(str(executed[s]) for s in orphans)
        raise DataError(f"executed notebook(s) {names} have no notebook in {notebooks[0].parent if notebooks else 'notebooks/'}"
                        " any more; the book would show a notebook the workbook no longer has. Delete the "
                        "executed copy, or restore the notebook and re-run it with `jlml workbook --only NN`.")
    return {p.stem: executed.get(p.stem) for p in notebooks}


def notebook_title(nb: Any, fallback: str) -> str:
    """The first markdown heading of a notebook (its page title)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def readme_opening(readme: Path) -> str:
    """The README up to its first ``## `` section: the project's own introduction."""
    text = Path(readme).read_text(encoding="utf-8")
    return text.split("\n## ", 1)[0].strip() + "\n"


# ---------------------------------------------------------------- pages
def _md_cell_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def provenance_note(nb: Any, nn: str) -> str:
    """A MyST admonition saying when and how papermill executed this copy, and whether it failed."""
    pm = nb.metadata.get("papermill")
    if pm:
        params = ", ".join(f"`{k}={v!r}`" for k, v in pm.get("parameters", {}).items()) or "the notebook's defaults"
        took = f" in {pm['duration']:.0f} s" if isinstance(pm.get("duration"), (int, float)) else ""
        when = f"Executed by papermill on {str(pm.get('start_time', '?'))[:19].replace('T', ' ')} UTC{took} with {params}."
    else:  # saved from JupyterLab, say: outputs without a record of when or with what
        when = "An executed copy without papermill's record of when and with which parameters it ran."
    lines = [":::{note}", f"{when} This page shows that run's outputs; nothing was re-executed to build it.", ":::"]
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors or (pm or {}).get("exception"):
        what = f"{errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else "an exception"
        lines += ["", ":::{warning}", f"This run **failed** ({_md_cell_text(what)}); the outputs stop there. Fix the "
                  f"cause and re-run it with `jlml workbook --only {nn}`.", ":::"]
    return "\n".join(lines)


def executed_page(src: Path, dest: Path) -> str:
    """Copy an executed notebook into the book with its provenance note after the title cell."""
    nb = nbformat.read(src, as_version=4)
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("#") else 0
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(provenance_note(nb, NOTEBOOK_NAME.match(src.stem).group(1))))
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return notebook_title(nb, src.stem)


def not_run_page(notebook: Path, dest: Path) -> str:
    """A page for a notebook without an executed copy: its introduction and how to run it."""
    nb = nbformat.read(notebook, as_version=4)
    title = notebook_title(nb, notebook.stem)
    intro = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    intro = "\n".join(line for line in intro.splitlines() if not line.startswith("# "))
    nn = NOTEBOOK_NAME.match(notebook.stem).group(1)
    write_text(dest, f"# {title}\n\n:::{{warning}}\n**{NOT_RUN.capitalize()}** — `jlml workbook --only {nn}` "
                     f"executes `notebooks/{notebook.name}` into `results/executed/`; then `jlml book` "
                     f"shows its outputs here.\n:::\n\n{intro.strip()}\n")
    return title


def _demote(markdown: str) -> str:
    """One heading level down, so a generated table's ``# Table N`` becomes a section of the page."""
    return re.sub(r"^(#{1,5}) ", r"#\1 ", markdown, flags=re.MULTILINE)


def tables_page(tables_dir: Path, dest_dir: Path) -> str:
    """``results/tables/table<N>.md`` in table order, each followed by its plots (copied beside)."""
    tables_dir = Path(tables_dir)
    found = sorted(tables_dir.glob("table*.md"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    parts = ["# The paper's tables, regenerated", ""]
    (dest_dir / "tables").mkdir(parents=True, exist_ok=True)
    if not found:
        parts.append(f"No tables yet in `{tables_dir}`: `jlml tables` (or `make workbook`) writes them from the "
                     "runs' `metrics.json`.")
    pngs = sorted(tables_dir.glob("*.png"))
    for md in found:
        parts.append(_demote(md.read_text(encoding="utf-8")).strip())
        for png in [p for p in pngs if p.stem == md.stem or p.stem.startswith(md.stem + "_")]:
            parts.append(f"\n![{png.stem}](tables/{png.name})")
            pngs.remove(png)
        parts.append("")
    if pngs:  # e.g. cmc.png (every run's CMC), or a table's plot whose table has not been generated yet
        parts += ["## Other figures", ""] + [f"![{png.stem}](tables/{png.name})\n" for png in pngs]
    for png in tables_dir.glob("*.png"):
        shutil.copy2(png, dest_dir / "tables" / png.name)
    write_text(dest_dir / "tables.md", "\n".join(parts) + "\n")
    return parts[0][2:]


def runs_page(runs_dir: Path, dest: Path) -> tuple[str, dict[str, int]]:
    """Every ``metrics.json`` under ``runs_dir``: data source, profile, device, seed, commit."""
    records, bad = scan_records(runs_dir)
    records.sort(key=lambda r: r["created"])
    counts = {src: sum(r["source"] == src for r in records) for src in ("real", "synthetic")}
    lines = ["# Every run", "",
             f"{len(records)} record(s) under `{runs_dir}` ({counts['real']} real, {counts['synthetic']} "
             f"synthetic), {len(bad)} unreadable. A **synthetic** record comes from procedurally generated "
             "data: it shows the pipeline working, it is not a reproduction of the paper.", "",
             "| run | kind | dataset | variant | data | profile | device | seed | git commit | wall time | folder |",
             "|---|---|---|---|---|---|---|---|---|---:|---|"]
    for rec in records:
        variant = ", ".join(f"{k}={v}" for k, v in rec["variant"].items() if DEFAULT_VARIANT[k] != v) or "default"
        git = rec.get("git", {})
        commit = str(git.get("commit", "unknown"))[:10] + (" (dirty)" if git.get("dirty") else "")
        folder = Path(rec["_path"]).parent
        folder = folder.relative_to(runs_dir) if folder.is_relative_to(runs_dir) else folder
        cells = [rec["run_id"], rec["kind"], rec["dataset"] or "—", variant, f"**{rec['source']}**",
                 rec["profile"] or "—", rec["device"], rec["config"].get("seed", "—"), commit,
                 f"{rec['wall_time_s']:.0f} s", f"`{folder}`"]
        lines.append("| " + " | ".join(_md_cell_text(str(c)) for c in cells) + " |")
    if bad:
        lines += ["", "## Unreadable records", ""] + [f"- `{p}`: {_md_cell_text(e)}" for p, e in bad]
    write_text(dest, "\n".join(lines) + "\n")
    return "Every run", counts


def write_sources(src: Path, *, notebooks_dir: Path, executed_dir: Path, tables_dir: Path, runs_dir: Path,
                  readme: Path) -> dict[str, str]:
    """Write the book's source folder; return ``{stem: "executed" | NOT_RUN}`` in order."""
    notebooks = notebook_order(notebooks_dir)
    if not notebooks:
        raise DataError(f"{notebooks_dir}: no NN_name.ipynb notebook found; the book lists the workbook's notebooks.")
    pairs = match_executed(notebooks, executed_dir)
    if src.exists():
        shutil.rmtree(src)  # a page of a deleted notebook must not survive from an earlier build
    (src / "notebooks").mkdir(parents=True)
    state, entries = {}, []
    for nb in notebooks:
        done = pairs[nb.stem]
        if done is not None:
            title = executed_page(done, src / "notebooks" / nb.name)
        else:
            title = not_run_page(nb, src / "notebooks" / f"{nb.stem}.md")
        state[nb.stem] = "executed" if done is not None else NOT_RUN
        entries.append((nb.stem, title, state[nb.stem]))
    tables_page(tables_dir, src)
    _, counts = runs_page(Path(runs_dir), src / "runs.md")
    ran = sum(s == "executed" for s in state.values())
    where = executed_dir.resolve()
    shown = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where
    contents = "\n".join(f"- [{title}](notebooks/{stem}) — {s}" for stem, title, s in entries)
    index = [readme_opening(readme), "## This book", "",
             f"{ran} of {len(state)} notebooks have been executed into `{shown}/`; their pages show "
             f"that run's outputs unchanged. The [tables](tables) are regenerated from {counts['real'] + counts['synthetic']} "
             f"run record(s) ({counts['real']} real, {counts['synthetic']} synthetic), all listed under "
             "[every run](runs).", "", contents, "",
             "```{toctree}", ":hidden:", ":caption: Notebooks", ""] + [f"notebooks/{s}" for s, _, _ in entries] + [
             "```", "", "```{toctree}", ":hidden:", ":caption: Results", "", "tables", "runs", "```", ""]
    write_text(src / "index.md", "\n".join(index))
    return state


# ---------------------------------------------------------------- build
def build(*, notebooks_dir: Path, executed_dir: Path, tables_dir: Path, runs_dir: Path, out_dir: Path,
          readme: Path = REPO_ROOT / "README.md", log=print) -> Path:
    """Write the sources into ``out_dir/src`` and the site into ``out_dir/html``; return its index.html."""
    out_dir = Path(out_dir)
    state = write_sources(out_dir / "src", notebooks_dir=Path(notebooks_dir), executed_dir=Path(executed_dir),
                          tables_dir=Path(tables_dir), runs_dir=Path(runs_dir), readme=Path(readme))
    html = out_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-c", str(CONF_DIR),
           "-d", str(out_dir / "doctrees"), str(out_dir / "src"), str(html)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.stderr.strip():
        log(done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"sphinx-build failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}")
    ran = sum(s == "executed" for s in state.values())
    log(f"jlml book: {ran} executed notebook(s), {len(state) - ran} {NOT_RUN} -> {html / 'index.html'}")
    return html / "index.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jlml book", description=__doc__.split("\n")[0])
    p.add_argument("--notebooks", type=Path, default=REPO_ROOT / "notebooks", help="the workbook (default notebooks/)")
    p.add_argument("--executed", type=Path, default=REPO_ROOT / "results" / "executed",
                   help="papermill's executed copies (default results/executed/)")
    p.add_argument("--tables", type=Path, default=REPO_ROOT / "results" / "tables",
                   help="the regenerated tables and plots (default results/tables/)")
    p.add_argument("--runs", type=Path, default=REPO_ROOT / "runs", help="searched for metrics.json (default runs/)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="sources in OUT/src, site in OUT/html (default build/book/)")
    args = p.parse_args(argv)
    try:
        build(notebooks_dir=args.notebooks, executed_dir=args.executed, tables_dir=args.tables,
              runs_dir=args.runs, out_dir=args.out)
    except (DataError, RuntimeError) as err:
        print(f"jlml book: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
