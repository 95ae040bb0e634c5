"""The published quick run (results/synthetic-run): machine paths replaced, figures smaller, whole."""
import base64
import io
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
from PIL import Image  # noqa: E402

from jlml_lib.data.base import cache_dir  # noqa: E402
from jlml_lib.workbook import publish  # noqa: E402


def _figure_png() -> bytes:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [1, 3, 2], label="cmc")
    ax.imshow([[0, 1], [1, 0]], extent=(0, 1, 0, 1), alpha=0.5)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _executed(tmp_path, root):
    nb = nbformat.v4.new_notebook()
    nb.metadata["jlml"] = {"stamp": "x"}
    nb.metadata["papermill"] = {"input_path": f"{root}/notebooks/a.ipynb", "output_path": "o", "duration": 1.0}
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout",
                               text=f"$ {sys.executable} -m jlml_lib.train --out {root}/runs/05_market\n"
                                    f"data in {cache_dir()}/synthetic/market1501\n"),
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(_figure_png()).decode(),
                                                     "text/plain": f"<Figure at {root}/x>"}),
        nbformat.v4.new_output("error", ename="E", evalue="v", traceback=[f"File {root}/jlml_lib/a.py"]),
    ]
    nb.cells.append(cell)
    nb.cells.insert(0, nbformat.v4.new_code_cell(f'init = "{root}/runs/03/final.pt"'))  # papermill's injected cell
    nb.metadata["papermill"]["parameters"] = {"init": f"{root}/runs/03/final.pt"}
    path = tmp_path / "executed" / "a.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    return path


def test_published_copy_names_no_machine_path_and_keeps_the_figure(tmp_path):
    root = tmp_path / "checkout"
    src = _executed(tmp_path, root)
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "table6.md").write_text(f"| x | from {root}/runs/05 |\n")
    (tables / "table6.png").write_bytes(_figure_png())
    (tables / "ignored.json").write_text("{}")
    out = tmp_path / "published"
    written = publish.publish(src.parent, tables, out, source_root=root)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "notebooks/a.ipynb", "tables/table6.md", "tables/table6.png"]
    text = (out / "notebooks" / "a.ipynb").read_text()
    for machine in (str(root), sys.executable, str(cache_dir())):
        assert machine not in text
    assert "python -m jlml_lib.train --out ./runs/05_market" in text and "$JLML_CACHE/synthetic" in text
    nb = nbformat.read(out / "notebooks" / "a.ipynb", as_version=4)
    assert "jlml" not in nb.metadata and "input_path" not in nb.metadata["papermill"]
    assert nb.cells[0].source == 'init = "./runs/03/final.pt"'
    assert nb.metadata["papermill"]["parameters"] == {"init": "./runs/03/final.pt"}
    png = base64.b64decode(nb.cells[1].outputs[1]["data"]["image/png"])
    original = base64.b64decode(nbformat.read(src, as_version=4).cells[1].outputs[1]["data"]["image/png"])
    assert len(png) <= len(original)
    with Image.open(io.BytesIO(png)) as a, Image.open(io.BytesIO(original)) as b:
        assert a.size == b.size
    assert (out / "tables" / "table6.md").read_text() == "| x | from ./runs/05 |\n"
    # publishing again replaces the whole folder (no file of an earlier run is left)
    (out / "notebooks" / "stale.ipynb").write_text("{}")
    publish.publish(src.parent, tables, out, source_root=root)
    assert not (out / "notebooks" / "stale.ipynb").exists()


def test_only_the_quick_synthetic_complete_run_is_published():
    assert publish.publishable({}, {}, full=False, complete=True)
    assert not publish.publishable({"profile": "paper"}, {}, full=False, complete=True)
    assert not publish.publishable({}, {"market1501": "/data"}, full=False, complete=True)
    assert not publish.publishable({}, {}, full=True, complete=True)
    assert not publish.publishable({}, {}, full=False, complete=False)


def test_the_quick_runs_times_travel_with_the_published_copy(tmp_path):
    """A fresh clone's first ETA comes from the published run's times (quick and --full kinds
    without options only)."""
    from jlml_lib.paths import TIMINGS
    from jlml_lib.workbook import progress

    src = _executed(tmp_path, tmp_path / "checkout")
    progress.record(src.parent / TIMINGS, progress.QUICK, "a", 12.0)
    progress.record(src.parent / TIMINGS, "quick profile=paper", "a", 999.0)
    progress.record(src.parent / TIMINGS, progress.FULL, "b", 300.0)
    (tmp_path / "tables").mkdir()
    publish.publish(src.parent, tmp_path / "tables", tmp_path / "out", source_root=tmp_path / "checkout")
    assert progress.load(tmp_path / "out" / TIMINGS) == {progress.QUICK: {"a": 12.0}, progress.FULL: {"b": 300.0}}
    # a later run that skipped "a" (unchanged) and timed "c": "a" keeps its published time
    (src.parent / TIMINGS).unlink()
    progress.record(src.parent / TIMINGS, progress.QUICK, "c", 7.0)
    publish.publish(src.parent, tmp_path / "tables", tmp_path / "out", source_root=tmp_path / "checkout")
    assert progress.load(tmp_path / "out" / TIMINGS) == {progress.QUICK: {"a": 12.0, "c": 7.0},
                                                         progress.FULL: {"b": 300.0}}
