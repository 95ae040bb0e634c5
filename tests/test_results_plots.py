"""Figures of jlml_lib.results.plots: valid PNGs from fabricated records, written atomically, closed
once saved; the legend outside the bars; no backend switch at import."""
from __future__ import annotations

import subprocess
import sys

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from PIL import Image

from jlml_lib.results import plots
from jlml_lib.results.records import write_metrics
from jlml_lib.results.runs import cmc_curves
from jlml_lib.results.tables import table_frames


def _runs(root):
    common = dict(config={}, profile="smoke", protocol="standard", wall_time_s=1.0, device="cpu")
    write_metrics(root / "m", metrics={"single_query": {"rank1": 0.5, "mAP": 0.25,
                                                        "cmc": [0.5, 0.7, 0.8, 0.9]}},
                  dataset="market1501", source="synthetic", **common)
    write_metrics(root / "g", metrics={"single_query": {"rank1": 0.4, "mAP": 0.2}},
                  dataset="market1501", variant={"feature": "global"}, source="real", **common)
    return root


def _is_png(path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_saved_figures_are_pngs_and_closed(tmp_path):
    runs = _runs(tmp_path / "runs")
    frames = table_frames(runs, (9, 13))
    figs = {"cmc.png": plots.plot_cmc(cmc_curves(runs), path=tmp_path / "fig" / "cmc.png"),
            "cmc_empty.png": plots.plot_cmc(cmc_curves(tmp_path / "empty"), path=tmp_path / "fig" / "cmc_empty.png"),
            "t9.png": plots.plot_paper_vs_ours({9: frames[9]}, path=tmp_path / "fig" / "t9.png"),
            "t13.png": plots.plot_paper_vs_ours({13: frames[13]}, path=tmp_path / "fig" / "t13.png")}
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(figs)  # no temp file left
    for name, fig in figs.items():
        assert _is_png(tmp_path / "fig" / name)
        assert not plt.fignum_exists(fig.number), f"{name}: a saved figure is closed"
    fig = plots.plot_cmc({"a": [0.5, 1.0]})  # not saved: left open for the notebook to show
    assert plt.fignum_exists(fig.number)
    plt.close(fig)


def test_paper_vs_ours_panels_and_legend(tmp_path):
    runs = _runs(tmp_path / "runs")
    frames = table_frames(runs, (9, 10, 11, 12))
    fig = plots.plot_paper_vs_ours(frames)
    fig.canvas.draw()
    shown = [ax for ax in fig.get_axes() if ax.get_visible()]
    # one panel per metric column: Table 10's 24 cells are 4 panels of its 6 rows
    assert len(shown) == 4 * 4
    t10 = [ax for ax in shown if ax.get_subplotspec() is not None and "Table 10" in ax.figure.get_suptitle()]
    assert len(t10) == 4 and len(t10[0].get_yticklabels()) == 6  # the row labels, on the first panel
    assert t10[0].get_yticklabels()[0].get_text() == "UniLoss / Global Feature"  # the paper's order
    assert t10[0].get_ylim()[0] > t10[0].get_ylim()[1]  # first row on top
    # the legend names who is who and sits to the right of every panel, never on the bars
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["paper", "ours (real)", "ours (synthetic)"]
    right_edge = max(ax.get_window_extent().x1 for ax in shown)
    assert legend.get_window_extent().x0 >= right_edge
    plt.close(fig)


def test_compare_frames_plot_too(tmp_path):
    from jlml_lib.workbook.steps import compare

    runs = _runs(tmp_path / "runs")
    fig = plots.plot_paper_vs_ours({9: compare(9, runs)})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["paper", "ours (real)", "ours (synthetic)"]
    plt.close(fig)


def test_training_curves_and_table13(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(
        f'{{"iteration": {i}, "total": {5 - i / 100}, "global_ce": 2.0, "local_ce": 2.0, "global_reg": 0.1, '
        f'"local_reg": 0.1, "lr": {0.01 if i < 200 else 0.001}}}\n' for i in range(0, 300, 50)))
    fig = plots.plot_training(run, "smoke:", path=tmp_path / "train.png")
    assert _is_png(tmp_path / "train.png")
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {
        "total", "global_ce", "local_ce", "global_reg", "local_reg"}
    frame = pd.DataFrame({"model": ["AlexNet", "JLML-ResNet39"], "paper FLOPs": [7.25e8, 1.54e9],
                          "our MACs": [7.1e8, 0.79e9], "our FLOPs (2×MACs)": [1.42e9, 1.58e9],
                          "paper params (M)": [61.1, 7.2], "our params (M)": [57.0, 7.79]})
    plots.plot_table13(frame, path=tmp_path / "t13.png")
    assert _is_png(tmp_path / "t13.png")


@pytest.mark.parametrize("module", ["jlml_lib.results.plots"])
def test_importing_does_not_switch_the_backend(module):
    code = (f"import matplotlib; matplotlib.use('svg'); import {module}; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
