"""`jlml book`: the static site of the executed workbook (issue 14).

Every page, image and internal link of the built site must exist; a notebook without an executed copy
gets a "not run yet" page; an executed copy whose notebook is gone stops the build. The numbers the
site shows are checked against the records and notebooks the test itself wrote.
"""
from __future__ import annotations

import base64
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from PIL import Image

from jlml_lib import book
from jlml_lib.errors import DataError
from jlml_lib.results.records import read_metrics, write_complexity, write_metrics

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


# ---------------------------------------------------------------- helpers (test_browser.py uses them too)
def execute_into(stems: list[str], executed_dir: Path, work: Path) -> None:
    """Execute ``notebooks/<stem>.ipynb`` with papermill into ``executed_dir``, one at a time, with
    their runs and tables under ``work`` (never the repository's runs/ and results/tables/)."""
    import papermill as pm

    redirect = {"out_dir": None, "runs_dir": str(work / "runs"), "tables_dir": str(work / "tables")}
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the kernels inherit it: tiny models, shared cores
    for stem in stems:
        src = ROOT / "notebooks" / f"{stem}.ipynb"
        declared = pm.inspect_notebook(str(src))
        params = {k: (v or str(work / "runs" / stem)) for k, v in redirect.items() if k in declared}
        pm.execute_notebook(str(src), str(executed_dir / src.name), parameters=params, cwd=str(ROOT),
                            kernel_name="python3", progress_bar=False)


class _Refs(HTMLParser):
    """Collects ids, links (<a href>), and resources (<img src>, <script src>, <link href>) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "script" and a.get("src"):
            self.resources.append(a["src"])
        elif tag == "link" and a.get("href"):  # stylesheets and icons are loaded; index/search/next are links
            (self.resources if a.get("rel") in ("stylesheet", "icon", "preload") else self.links).append(a["href"])


def check_site(html: Path) -> dict[Path, _Refs]:
    """Every page's internal links, anchors, images and assets resolve inside the site; no asset is
    fetched from the network; every image is a readable PNG/SVG. Returns the parsed pages."""
    pages = {}
    for page in sorted(html.rglob("*.html")):
        refs = _Refs()
        refs.feed(page.read_text(encoding="utf-8"))
        pages[page] = refs
    problems = []
    for page, refs in pages.items():
        for url in refs.resources + refs.images:
            if urlsplit(url).scheme in ("http", "https") or url.startswith("//"):
                problems.append(f"{page.name}: fetches {url} from the network")
                continue
            if url.startswith("data:"):
                continue
            target = (page.parent / unquote(urlsplit(url).path)).resolve()
            if not target.is_file():
                problems.append(f"{page.name}: missing {url}")
            elif target.suffix == ".png":
                with Image.open(target) as im:
                    im.verify()
        for url in refs.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # an outward link (footer credits); followed by a reader, never loaded
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            if not target.exists():
                problems.append(f"{page.name}: broken link {url}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[next(p for p in pages if p.resolve() == target)].ids
                if parts.fragment not in ids:
                    problems.append(f"{page.name}: link {url} to an anchor that does not exist")
    assert not problems, "\n".join(problems)
    return pages


def _text(page: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 12), color).save(buf, format="PNG")
    return buf.getvalue()


def _workbook(tmp: Path) -> dict[str, Path]:
    """A two-notebook workbook: 00 executed (with a PNG output), 01 not; a table with its plot; two runs."""
    nbs, ex, tables, runs = (tmp / d for d in ("notebooks", "executed", "tables", "runs"))
    for d in (nbs, ex, tables):
        d.mkdir()
    for stem, title in (("00_alpha", "00 · Alpha"), ("01_beta", "01 · Beta")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat {stem} does."),
                                             nbformat.v4.new_code_cell("show()")])
        nbformat.write(nb, nbs / f"{stem}.ipynb")
    done = nbformat.read(nbs / "00_alpha.ipynb", as_version=4)
    done.cells[1].outputs = [nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(_png("red")).decode(), "text/plain": "<Figure>"})]
    done.metadata["papermill"] = {"parameters": {"seed": 3}, "start_time": "2025-01-02T03:04:05", "duration": 7.0,
                                  "input_path": "notebooks/00_alpha.ipynb", "exception": None}
    nbformat.write(done, ex / "00_alpha.ipynb")
    (tables / "table2.md").write_text("# Table 2: Settings\n\n| row | ours |\n|---|---|\n| VIPeR cams | 2 · zebra-cell |\n")
    (tables / "table2_paper_vs_ours.png").write_bytes(_png("blue"))
    (tables / "cmc.png").write_bytes(_png("green"))
    write_metrics(runs / "a", metrics={"rank1": 0.25, "rank5": 0.5, "rank10": 0.75, "rank20": 1.0},
                  config={"seed": 17}, dataset="viper", source="synthetic", profile="smoke", protocol="viper",
                  wall_time_s=12.0, device="cpu")
    write_complexity(runs / "b", models={"jlml_resnet39": {"flops": 1e9, "params": 7}}, convention="test")
    return {"notebooks_dir": nbs, "executed_dir": ex, "tables_dir": tables, "runs_dir": runs}


# ---------------------------------------------------------------- tests
def test_notebook_order_is_the_nn_prefix(tmp_path):
    for name in ("10_k", "02_b", "00_a", "notes", "2_x"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in book.notebook_order(tmp_path)] == ["00_a", "02_b", "10_k"]


def test_an_orphaned_executed_copy_fails_the_build_naming_it(tmp_path, capsys):
    dirs = _workbook(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(), dirs["executed_dir"] / "07_gone.ipynb")
    with pytest.raises(DataError, match=r"07_gone\.ipynb.*no notebook"):
        book.build(**dirs, out_dir=tmp_path / "book", readme=README)
    assert not (tmp_path / "book" / "html").exists()
    argv = [f"--{k.split('_')[0]}={v}" for k, v in dirs.items()] + [f"--out={tmp_path / 'book'}"]
    assert book.main(argv) == 1
    assert "07_gone.ipynb" in capsys.readouterr().err


@pytest.mark.slow
def test_book_of_a_small_workbook(tmp_path):
    dirs = _workbook(tmp_path)
    index = book.build(**dirs, out_dir=tmp_path / "book", readme=README, log=lambda *_: None)
    html = index.parent
    pages = check_site(html)
    for page in ("index", "notebooks/00_alpha", "notebooks/01_beta", "tables", "runs"):
        assert html / f"{page}.html" in pages
    # landing page: the README's opening, then what the book holds (counted from the inputs)
    landing = _text(index)
    assert "Person Re-Identification by Deep Joint Learning" in landing
    assert "1 of 2 notebooks have been executed" in landing
    assert "2 run record(s) (1 real, 1 synthetic)" in landing
    # the executed page shows its stored image (not re-executed: "show()" is not even defined)
    executed = html / "notebooks" / "00_alpha.html"
    assert len(pages[executed].images) == 1 and "Executed by papermill on 2025-01-02 03:04:05" in _text(executed)
    assert "seed=3" in _text(executed)
    not_run = _text(html / "notebooks" / "01_beta.html")
    assert "Not run yet" in not_run and "jlml workbook --only 01" in not_run and "What 01_beta does." in not_run
    # the tables page: the generated table as is, and both plots
    assert "2 · zebra-cell" in _text(html / "tables.html")
    assert len(pages[html / "tables.html"].images) == 2
    # every run: id, source, profile, seed and commit from its metrics.json
    runs = _text(html / "runs.html")
    for sub in ("a", "b"):
        rec = read_metrics(dirs["runs_dir"] / sub)
        assert rec["run_id"] in runs and str(rec["git"]["commit"])[:10] in runs
    assert "synthetic" in runs and "smoke" in runs and " 17 " in runs
    # once 01 is executed its page is the executed copy, and the stale "not run" page is gone; its run
    # failed (saved from JupyterLab with a traceback): the page says so and how to re-run it
    failed = nbformat.read(dirs["notebooks_dir"] / "01_beta.ipynb", as_version=4)
    failed.cells[1].outputs = [nbformat.v4.new_output("error", ename="NameError", evalue="name 'show' is not defined",
                                                      traceback=[])]
    nbformat.write(failed, dirs["executed_dir"] / "01_beta.ipynb")
    src = tmp_path / "book" / "src"
    assert book.write_sources(src, **dirs, readme=README) == {"00_alpha": "executed", "01_beta": "executed"}
    assert not (src / "notebooks" / "01_beta.md").exists()
    note = nbformat.read(src / "notebooks" / "01_beta.ipynb", as_version=4).cells[1].source
    assert "without papermill's record" in note and "**failed** (NameError: name 'show' is not defined)" in note
    assert "jlml workbook --only 01" in note


@pytest.mark.slow
def test_book_of_executed_workbook_notebooks(tmp_path, monkeypatch):
    """02 (Table 13) and 09 (every table) executed here by papermill, then the book built from them."""
    # a shell's non-inline backend (CI exports Agg) reaches the kernels: the notebooks still show their figures
    monkeypatch.setenv("MPLBACKEND", "Agg")
    executed = tmp_path / "executed"
    executed.mkdir()
    execute_into(["02_model", "09_paper_tables"], executed, tmp_path)
    index = book.build(notebooks_dir=ROOT / "notebooks", executed_dir=executed, tables_dir=tmp_path / "tables",
                       runs_dir=tmp_path / "runs", out_dir=tmp_path / "book", readme=README, log=lambda *_: None)
    html = index.parent
    pages = check_site(html)
    stems = [p.stem for p in book.notebook_order(ROOT / "notebooks")]
    for stem in stems:
        text = _text(html / "notebooks" / f"{stem}.html")
        assert ("Not run yet" in text) == (stem not in ("02_model", "09_paper_tables")), stem
    assert pages[html / "notebooks" / "09_paper_tables.html"].images  # 09's plots, as executed
    table_pngs = sorted(p.name for p in (tmp_path / "tables").glob("*.png"))
    shown = {Path(src).name for src in pages[html / "tables.html"].images}
    assert table_pngs and set(table_pngs) <= shown
    rec = read_metrics(tmp_path / "runs" / "02_model")
    assert rec["run_id"] in _text(html / "runs.html")
    assert f"2 of {len(stems)} notebooks have been executed" in _text(index)
