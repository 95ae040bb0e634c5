"""08's feature layer × SFL grid (jlml_lib.workbook.selection_grid): its tables by hand, its runs' reuse and kind."""
import json

import pytest

from jlml_lib.errors import ConfigError
from jlml_lib.paths import RunDir
from jlml_lib.results.records import read_metrics
from jlml_lib.workbook import selection_grid as sg


def _row(layer, sfl, seed, wg, wl, bal, r1, lam=sg.RAISED):
    return {"feature_layer": layer, "sfl": sfl, "seed": seed, "lambda_global": lam[0], "lambda_local": lam[1],
            "wg_col_l2_hoyer": wg, "wl_within_group_hoyer_mean": wl, "wl_stripe_balance_mean": bal, "rank1": r1}


ROWS = [_row("bn", True, 0, 0.02, 0.20, 0.90, 0.5), _row("bn", True, 1, 0.04, 0.30, 0.98, 0.7),
        _row("bn", False, 0, 0.01, 0.10, 0.96, 0.4), _row("bn", False, 1, 0.01, 0.10, 0.96, 0.6)]


def test_cells_pair_sfl_on_and_off_per_layer_and_lambda():
    grid = sg.cells(["bn", "plain"], [sg.RAISED, sg.PAPER])
    assert len(grid) == 8 and len({c.name for c in grid}) == 6  # SFL off does not depend on λ: one run each
    assert sg.Cell("bn", False, *sg.RAISED).name == sg.Cell("bn", False, *sg.PAPER).name == "bn-sfl_off"
    assert sg.Cell("plain", True, 0.05, 0.005).name == "plain-sfl_on-lg0.05-ll0.005"


def test_table_is_mean_and_sample_std_over_seeds():
    t = sg.table(ROWS).set_index("sfl")
    # on: wg 0.02, 0.04 -> mean 0.03, std (ddof 1) = 0.01414; rank1 0.5, 0.7 -> 0.6 ± 0.1414
    assert t.loc[True, "wg_col_l2_hoyer"] == "0.0300 ± 0.0141"
    assert t.loc[True, "rank1"] == "0.6000 ± 0.1414"
    assert t.loc[False, "wl_within_group_hoyer_mean"] == "0.1000 ± 0.0000" and t.loc[False, "n"] == 2
    # what each equation acts on is shown; the across-group statistics of old records are not
    assert list(t.columns) == ["lambda_global", "lambda_local", "feature_layer", "wg_col_l2_hoyer",
                               "wl_within_group_hoyer_mean", "wl_stripe_balance_mean", "rank1", "n"]


def test_effects_are_on_over_off_of_the_seed_means():
    e = sg.effects(ROWS).set_index("statistic")
    assert e.loc["wg_col_l2_hoyer", "on/off"] == pytest.approx(3.0)   # 0.03 / 0.01
    assert e.loc["wl_within_group_hoyer_mean", "on/off"] == pytest.approx(2.5)  # 0.25 / 0.10
    assert e.loc["wl_stripe_balance_mean", "on/off"] == pytest.approx(0.94 / 0.96)
    assert e.loc["rank1", "sfl_on"] == pytest.approx(0.6) and e.loc["rank1", "sfl_off"] == pytest.approx(0.5)
    # a cell without its SFL-off partner has no ratio to show
    assert sg.effects(ROWS[:2]).empty


def test_old_rows_without_the_eq2_statistics_are_read():
    # a record from before issue 18: the across-group statistics only
    old = [{k: v for k, v in r.items() if not k.startswith("wl_")} | {"wl_group_l1_hoyer": 0.1} for r in ROWS]
    assert "wl_within_group_hoyer_mean" not in sg.table(old)
    assert set(sg.effects(old)["statistic"]) == {"wg_col_l2_hoyer", "rank1"}


@pytest.mark.slow
def test_grid_trains_once_reuses_and_keeps_out_of_the_tables(tmp_path):
    tiny = ["image_height=32", "image_width=16", "batch_size=8"]
    rows = sg.grid(tmp_path, layers=["plain"], lambdas=[sg.RAISED], seeds=[0], iterations=2, evaluate=False,
                   extra=tiny, log=None)
    assert [(r["feature_layer"], r["sfl"], r["iterations"]) for r in rows] == [("plain", True, 2), ("plain", False, 2)]
    assert {"wg_col_l2_hoyer", "wl_within_group_hoyer_mean", "wl_stripe_balance_mean", "wl_group_l1_hoyer",
            "wl_stripes_90_mean"} <= set(rows[0])
    on = RunDir(tmp_path / "plain-sfl_on-lg0.05-ll0.005-s0")
    stamp = on.final.stat().st_mtime_ns
    assert sg.grid(tmp_path, layers=["plain"], lambdas=[sg.RAISED], seeds=[0], iterations=2, evaluate=False,
                   extra=tiny, log=None) == rows
    assert on.final.stat().st_mtime_ns == stamp  # reused, not retrained
    # a record written before issue 18 lacks the Eq. (2) statistics: measured again from its model, not retrained
    saved = json.loads((on.path / sg.RECORD).read_text())
    for key in ("wl_within_group_hoyer_mean", "wl_stripe_balance_mean"):
        del saved["row"][key]
    (on.path / sg.RECORD).write_text(json.dumps(saved))
    assert sg.grid(tmp_path, layers=["plain"], lambdas=[sg.RAISED], seeds=[0], iterations=2, evaluate=False,
                   extra=tiny, log=None) == rows
    assert on.final.stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="choose another folder"):
        sg.run_one(sg.Cell("plain", True, *sg.RAISED), 0, tmp_path, iterations=3, evaluate=False, extra=tiny)
    groups, columns, within = sg.weights(tmp_path, sg.Cell("plain", True, *sg.RAISED), 0)
    assert groups.shape[1] == 4 and within.shape == groups.shape and list(columns) == sorted(columns, reverse=True)
    with pytest.raises(ConfigError, match="run the grid"):
        sg.weights(tmp_path, sg.Cell("bn", True, *sg.RAISED), 0)
    # evaluated, a grid run is a study of its own: its record never fills a table cell
    sg.run_one(sg.Cell("plain", False, *sg.RAISED), 1, tmp_path, iterations=2, evaluate=True, extra=tiny)
    rec = read_metrics(tmp_path / "plain-sfl_off-s1")
    assert rec["variant"]["study"] == "selection" and rec["config"]["study"] == "selection"
