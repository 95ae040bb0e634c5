"""Issue 18's teaching figures and frames: Table 4's schedules and the training chain
(results.schedule_plots), Eq. 5's terms from a run (results.loss_terms), the paper's whole comparison
(results.comparison) and 09's CMC legend (results.plots.cmc_legend_curves).

References are independent of the code under test: the paper's CSVs read with the csv module, the
expected value of PyTorch's default Linear initialisation, and the homogeneity of Eqs. 1-2."""
from __future__ import annotations

import csv
import json
import math

import matplotlib.pyplot as plt
import pytest
import torch

from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError
from jlml_lib.paths import REPO_ROOT, RunDir
from jlml_lib.results import comparison, schedule_plots
from jlml_lib.results.records import write_metrics
from jlml_lib.results.tables import scan_records


def _csv(n: int) -> list[dict]:
    with open(REPO_ROOT / "results" / "paper" / f"table{n}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _fake_run(root, *, iterations=None, shrink_final=1.0, lr=None):
    """A smoke run's folder: config.json (with engine.run's extra keys), log.jsonl, final.pt."""
    from jlml_lib.engine.checkpoint import save_final

    iterations = iterations or make_config("smoke").iterations  # the shipped smoke length
    over = {"iterations": iterations} if lr is None else {"iterations": iterations, "lr": lr}
    cfg = make_config("smoke", over)
    run = RunDir(root)
    run.path.mkdir(parents=True)
    run.config.write_text(json.dumps({**cfg.to_dict(), "source": "synthetic", "components": {}, "init_source": None}))
    run.log.write_text("".join(json.dumps({"iteration": it, "total": 20.0 - it / 30, "global_ce": 3.0,
                                           "local_ce": 3.0, "global_reg": 0.14, "local_reg": 14.0 / it,
                                           "lr": cfg.lr_at(it - 1)}) + "\n"
                               for it in range(10, iterations + 1, 10)))
    torch.manual_seed(cfg.seed)
    model = cfg.build_model(7)
    with torch.no_grad():
        model.local_fc_weight.mul_(shrink_final)
    save_final(run.path, model=model, iteration=iterations, config=cfg.to_dict(), num_classes=7, data={})
    return run.path, cfg


# ---------------------------------------------------------------- Table 4 and the chain
def test_table4_schedules_come_from_the_csv_and_the_profiles():
    frame = schedule_plots.table4_schedules().set_index("stage")
    for row in _csv(4):
        got = frame.loc[row["stage"]]
        step, its = int(row["lr_step"]), int(row["iterations"])
        assert (got["iterations"], got["lr_step"]) == (its, step)
        assert got["drops"] == list(range(step, its, step))  # 20K, 40K and 100K, 200K
    assert set(frame["profile"]) == {"pretrain", "paper"}


def test_a_profile_that_drifts_from_table4_is_refused(monkeypatch):
    real = schedule_plots.make_config
    monkeypatch.setattr(schedule_plots, "make_config",
                        lambda p: real(p, {"lr_step": 30_000}) if p == "paper" else real(p))
    with pytest.raises(ConfigError, match="Train"):
        schedule_plots.table4_schedules()


def test_schedules_are_drawn_at_their_lengths_and_labelled(tmp_path):
    run, cfg = _fake_run(tmp_path / "run")
    fig = schedule_plots.plot_schedules(run)
    pre, train, own = fig.get_axes()
    assert pre.get_xlim() == (0, 300_000) and train.get_xlim() == (0, 50_000)
    assert own.get_xlim() == (0, cfg.iterations)
    assert "Pre-train" in pre.get_title() and "Train" in train.get_title()
    # the smoke run's drops are its own scaled-down schedule, never called Table 4's
    assert "not Table 4" in own.get_title() and "profile 'smoke'" in own.get_title()
    drop_lines = [line.get_xdata()[0] for line in own.get_lines() if line.get_linestyle() == ":"]
    assert drop_lines == [cfg.lr_step, 2 * cfg.lr_step] and cfg.lr_step == 0.4 * cfg.iterations
    plt.close(fig)
    assert schedule_plots.schedule_label(make_config("paper")).startswith('Table 4 "Train"')


def test_training_chain_diagram():
    fig = schedule_plots.plot_training_chain()
    (ax,) = fig.get_axes()
    texts = " ".join(t.get_text() for t in ax.texts)
    for name in ("ImageNet", "CUHK03", "Market-1501", "CUHK03+Market-1501", "VIPeR", "GRID"):
        assert name in texts
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    assert len(arrows) == 5  # ImageNet -> 3 stages, CUHK03+Market-1501 -> VIPeR, GRID
    plt.close(fig)


# ---------------------------------------------------------------- Eq. 5's terms
def test_start_terms_from_the_initial_weights(tmp_path):
    from jlml_lib.results import loss_terms

    run, cfg = _fake_run(tmp_path / "run", shrink_final=0.5)
    terms = loss_terms.start_terms(run)
    # nn.Linear's default init is U(-b, b), b = 1/sqrt(fan_in): E|w| = b/2, E w² = b²/3
    c_l, d_l, c_g = 512, 256, 512
    l12 = c_l * cfg.m * (d_l * (1 / math.sqrt(cfg.m * d_l)) / 2) ** 2  # = c_l·d_l/4
    l21 = c_g * math.sqrt(c_g / 3 / c_g)  # each column: sqrt(c_g · b²/3), b² = 1/c_g
    assert terms.loc["local_reg", "iteration 0"] == pytest.approx(cfg.lambda_local * l12, rel=0.02)
    assert terms.loc["global_reg", "iteration 0"] == pytest.approx(cfg.lambda_global * l21, rel=0.02)
    assert terms.loc["global_ce", "iteration 0"] == pytest.approx(math.log(7))
    assert terms.loc["total", "iteration 0"] == pytest.approx(terms["iteration 0"].drop("total").sum())
    # Eq. 2 is homogeneous of degree 2: W_L halved in the final checkpoint -> a quarter of the penalty
    assert terms.loc["local_reg", "final weights"] == pytest.approx(terms.loc["local_reg", "iteration 0"] / 4)
    assert terms.loc["local_reg", "log, iteration 10"] == pytest.approx(1.4)  # read from the log, not computed
    groups = loss_terms.l12_groups(torch.ones(2, 8), m=4)  # 8 groups of 2 ones: ℓ1 = 2, ℓ1² = 4
    assert (groups["groups"], groups["d_l"], groups["l12"]) == (8, 2, 32.0)


def test_penalty_only_descent_is_the_runs_sgd_on_the_penalties(tmp_path):
    from jlml_lib.results import loss_terms

    run, cfg = _fake_run(tmp_path / "run")
    terms = loss_terms.start_terms(run)
    walk = loss_terms.penalty_only_descent(run, cfg.lr_step)  # the first LR stage, at the base LR
    assert len(walk) == cfg.lr_step
    assert walk.loc[0, "local_reg"] == pytest.approx(terms.loc["local_reg", "iteration 0"], rel=1e-5)
    # Eq. 2's gradient on each weight is 2·λ·(its group's ℓ1 norm): large at the start, so λ·ℓ1,2
    # loses most of itself within the first LR stage (16.4 -> 2.7 over 48 steps, measured); Eq. 1's
    # is λ·w/‖w‖₂ per column: W_G hardly moves
    assert walk["local_reg"].iloc[-1] < 0.2 * walk.loc[0, "local_reg"]
    assert walk["global_reg"].iloc[-1] > 0.95 * walk.loc[0, "global_reg"]
    frozen, _ = _fake_run(tmp_path / "frozen", lr=1e-12)  # (lr must be > 0) no step -> no fall
    still = loss_terms.penalty_only_descent(frozen, 5)
    assert still["local_reg"].iloc[-1] == pytest.approx(still.loc[0, "local_reg"], rel=1e-6)
    fig = loss_terms.plot_loss_terms(run, terms=terms, descent=walk)
    assert len(fig.get_axes()) == 2
    plt.close(fig)


# ---------------------------------------------------------------- Tables 5-8 and Table 3
def _market_run(root, rank1=0.5):
    common = dict(config={}, profile="smoke", protocol="market1501", wall_time_s=1.0, device="cpu")
    write_metrics(root, metrics={"single_query": {"rank1": rank1, "mAP": 0.25, "cmc": [rank1, 0.7, 0.8]},
                                 "multi_query": {"rank1": 0.6, "mAP": 0.3, "cmc": [0.6, 0.8, 0.9]}},
                  dataset="market1501", source="synthetic", **common)
    return root


def test_comparison_has_every_paper_row_plus_ours(tmp_path):
    table3 = {r["method_key"]: r for r in _csv(3)}
    records = scan_records(_market_run(tmp_path / "runs" / "m"))[0]
    frame = comparison.comparison_frame(6, records)
    paper_rows = _csv(6)
    assert len(frame) == len(paper_rows) + 1
    for (_, got), row in zip(frame.iterrows(), paper_rows):
        assert got["method"] == row["method"] and got["category"] == table3[row["method_key"]]["category"]
        assert got["SQ_R1"] == float(row["SQ_R1"]) if row["SQ_R1"] != "-" else math.isnan(got["SQ_R1"])
        generic = table3[row["method_key"]]["metric_generic"] == "L2"
        assert (got["metric_kind"] == "generic") == generic  # §2.3: L2 vs camera-pair specific
    ours = frame.iloc[-1]
    assert ours["method"].startswith(comparison.OURS) and "synthetic" in ours["method"]
    assert (ours["SQ_R1"], ours["MQ_mAP"]) == (50.0, 30.0)  # the record's fractions, in %
    assert ours["source"].startswith("synthetic") and ours["metric"] == "L2"


def test_table5_has_both_annotations_and_no_run_without_records():
    frame = comparison.comparison_frame(5)
    assert len(frame) == len(_csv(5)) + 2
    ours = frame[frame["method"].str.startswith(comparison.OURS)]
    assert list(ours["annotation"]) == ["labelled", "detected"] and set(ours["source"]) == {"no run"}
    assert list(frame["annotation"][:len(frame) // 2]) == ["labelled"] * (len(frame) // 2)
    with pytest.raises(ConfigError, match="competitor"):
        comparison.comparison_frame(9)


def test_comparison_plot_marks_ours(tmp_path):
    records = scan_records(_market_run(tmp_path / "runs" / "m"))[0]
    frame = comparison.comparison_frame(6, records)
    fig = comparison.plot_comparison(frame, "Table 6")
    axes = fig.get_axes()
    assert len(axes) == 4  # SQ_R1, SQ_mAP, MQ_R1, MQ_mAP
    hatched = [p for p in axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_width() == pytest.approx(50.0)
    assert len(fig.legends[0].get_texts()) == 4  # categories A, B, C and ours
    plt.close(fig)


# ---------------------------------------------------------------- 09's CMC legend
def test_cmc_legend_marks_reranking_and_skips_split_members(tmp_path):
    from jlml_lib.results.plots import cmc_legend_curves, plot_cmc_overview

    common = dict(config={}, profile="smoke", wall_time_s=1.0, device="cpu", source="synthetic")
    _market_run(tmp_path / "m")
    write_metrics(tmp_path / "m" / "eval-joint-rerank", metrics={"single_query": {"rank1": 0.7, "mAP": 0.4,
                  "cmc": [0.7, 0.9]}}, dataset="market1501", protocol="market1501", variant={"rerank": True},
                  **common)
    for k in range(2):
        write_metrics(tmp_path / "v" / f"split-{k:02d}", metrics={"rank1": 0.2, "cmc": [0.2, 0.4]},
                      dataset="viper", protocol="viper", **common)
    write_metrics(tmp_path / "v", metrics={"rank1": 0.2, "cmc": [0.2, 0.4]}, dataset="viper", protocol="viper",
                  extra={"aggregated_over": 2}, **common)
    curves = cmc_legend_curves(scan_records(tmp_path)[0])
    assert len(curves["viper"]) == 1  # the mean over the splits, not each split again
    market = curves["market1501"]
    assert len(market) == 3  # single-query, multi-query, re-ranked single-query
    reranked = [label for label, c in market.items() if c["rerank"]]
    assert len(reranked) == 1 and "re-ranked" in reranked[0] and reranked[0].startswith("single-query")
    fig = plot_cmc_overview(scan_records(tmp_path)[0])
    assert len(fig.get_axes()) == 2
    dashed = [line for ax in fig.get_axes() for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    plt.close(fig)
