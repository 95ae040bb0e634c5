"""Figures of jlml_lib.results.plots: valid PNGs from fabricated records (written atomically)."""
from __future__ import annotations

from PIL import Image

from jlml_lib.results.plots import plot_cmc, plot_paper_vs_ours
from jlml_lib.results.records import write_metrics


def _runs(root):
    common = dict(config={}, source="synthetic", profile="smoke", protocol="standard",
                  wall_time_s=1.0, device="cpu")
    write_metrics(root / "m", metrics={"single_query": {"rank1": 0.5, "mAP": 0.25,
                                                        "cmc": [0.5, 0.7, 0.8, 0.9]}},
                  dataset="market1501", **common)
    write_metrics(root / "g", metrics={"single_query": {"rank1": 0.4, "mAP": 0.2}},
                  dataset="market1501", variant={"feature": "global"}, **common)
    return root


def test_plots_are_pngs(tmp_path):
    runs = _runs(tmp_path / "runs")
    paths = [plot_cmc(runs, tmp_path / "fig" / "cmc.png"),
             plot_cmc(tmp_path / "empty", tmp_path / "fig" / "cmc_empty.png"),
             plot_paper_vs_ours(9, runs, tmp_path / "fig" / "t9.png"),
             plot_paper_vs_ours(13, runs, tmp_path / "fig" / "t13.png")]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == sorted(p.name for p in paths)
