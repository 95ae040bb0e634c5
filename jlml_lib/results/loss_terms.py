"""The sizes of Eq. (5)'s terms in a run, from the run itself (notebooks 03 and 05).

At the start of a run from fresh weights, λ·ℓ1,2(W_L) is most of the loss, and it is nearly gone a
hundred iterations later. Both facts follow from the weights, and this module computes them from
the run's own files, never from typed numbers:

* :func:`initial_model` rebuilds the weights the run started from, exactly as
  ``engine.loop.setup`` made them (``torch.manual_seed(cfg.seed)``, then ``cfg.build_model``, then
  the ``--init`` checkpoint if any).
* :func:`start_terms` evaluates each term at iteration 0 (the two cross-entropies as ln K, the loss
  of a classifier that has not yet preferred any of the K identities: the fresh classifiers'
  weights have std 0.01, so their logits start near 0), beside the log's first and last rows and
  the final weights.
* :func:`l12_groups` breaks ℓ1,2 = Σᵢ Σⱼ ‖wⁱ_{l,j}‖₁² into its c_l·m groups of d_l weights.
* :func:`penalty_only_descent` runs the run's own SGD (learning-rate schedule, momentum, weight
  decay) on λ·ℓ1,2(W_L) and λ·ℓ2,1(W_G) alone, from the initial matrices: if the logged fall
  follows it, the fall is the regulariser's own gradient, not the cross-entropy's doing.
"""
from __future__ import annotations

import math
import os
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from jlml_lib.engine.checkpoint import load_checkpoint, load_init_weights
from jlml_lib.engine.config import TrainConfig
from jlml_lib.errors import ConfigError
from jlml_lib.losses import LOSS_TERMS, exclusive_group_lasso_l12, group_lasso_l21
from jlml_lib.model import JLML
from jlml_lib.paths import RunDir
from jlml_lib.results.plots import _finish
from jlml_lib.results.runs import read_log
from jlml_lib.results.schedule_plots import run_config

__all__ = ["initial_model", "final_model_weights", "l12_groups", "start_terms", "penalty_only_descent",
           "plot_loss_terms"]


def _num_classes(run_dir: str | os.PathLike) -> int:
    run = RunDir(run_dir)
    for ckpt in (run.final, run.last):
        if ckpt.is_file():
            return int(load_checkpoint(ckpt)["num_classes"])
    raise ConfigError(f"{run.checkpoints}: no final.pt or last.pt; the run has not saved a checkpoint yet "
                      "(let it finish, or pass a finished run's folder).")


def initial_model(run_dir: str | os.PathLike) -> tuple[JLML, TrainConfig, int]:
    """The model as the run started it (same seed, same build, same ``--init``), its config and K."""
    cfg = run_config(run_dir)
    k = _num_classes(run_dir)
    torch.manual_seed(cfg.seed)  # as engine.loop.setup, right before build_model
    model = cfg.build_model(k)
    if cfg.init:
        load_init_weights(model, cfg.init)  # a missing file is a ConfigError naming it
    return model, cfg, k


def final_model_weights(run_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_G, W_L) of the run's final checkpoint."""
    run = RunDir(run_dir)
    state = load_checkpoint(run.final if run.final.is_file() else run.last)["model"]
    return state["global_fc.0.weight"].float(), state["local_fc.0.weight"].float()


def l12_groups(W_L: torch.Tensor, m: int) -> dict[str, Any]:
    """Eq. (2)'s groups of ``W_L`` (c_l × m·d_l): their count, size, mean |w|, mean ℓ1 and mean ℓ1²,
    and ℓ1,2 itself (= groups × mean ℓ1², checked against ``losses.exclusive_group_lasso_l12``)."""
    W = W_L.detach().double()
    c_l, cols = W.shape
    d_l = cols // m
    l1 = W.reshape(c_l, m, d_l).abs().sum(dim=2)
    out = {"c_l": c_l, "m": m, "d_l": d_l, "groups": c_l * m, "mean_abs_w": float(W.abs().mean()),
           "mean_group_l1": float(l1.mean()), "mean_group_l1_squared": float(l1.square().mean()),
           "l12": float(exclusive_group_lasso_l12(W, m))}
    assert math.isclose(out["groups"] * out["mean_group_l1_squared"], out["l12"], rel_tol=1e-9)
    return out


def start_terms(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Each term of Eq. (5) at iteration 0 (from the initial weights), in the log's first and last
    rows (each a mean over ``log_every`` iterations), and on the final weights (regularisers)."""
    model, cfg, k = initial_model(run_dir)
    log = read_log(run_dir)
    if log.empty:
        raise ConfigError(f"{RunDir(run_dir).log} is empty or missing: the run logged nothing to compare with.")
    on = cfg.sfl
    W_G, W_L = model.global_fc_weight.detach().double(), model.local_fc_weight.detach().double()
    G_end, L_end = final_model_weights(run_dir)
    reg0 = {"global_reg": cfg.lambda_global * float(group_lasso_l21(W_G)) if on else 0.0,
            "local_reg": cfg.lambda_local * float(exclusive_group_lasso_l12(W_L, cfg.m)) if on else 0.0}
    reg_end = {"global_reg": cfg.lambda_global * float(group_lasso_l21(G_end.double())) if on else 0.0,
               "local_reg": cfg.lambda_local * float(exclusive_group_lasso_l12(L_end.double(), cfg.m)) if on else 0.0}
    ce = math.log(k)
    at0 = {"global_ce": ce, "local_ce": ce, **reg0}  # UniLoss logs its one CE under both names
    at0["total"] = (at0["global_ce"] + (at0["local_ce"] if cfg.head == "multi" else 0.0)
                    + reg0["global_reg"] + reg0["local_reg"])
    how = {"global_ce": f"ln K, K = {k} identities", "local_ce": f"ln K, K = {k} identities",
           "global_reg": f"λ_global·ℓ2,1(W_G), λ = {cfg.lambda_global:g}",
           "local_reg": f"λ_local·ℓ1,2(W_L), λ = {cfg.lambda_local:g}", "total": "sum (Eq. 5)"}
    first, last = log.iloc[0], log.iloc[-1]
    rows = []
    for term in LOSS_TERMS:
        rows.append({"term": term, "iteration 0": at0[term], "how (iteration 0)": how[term],
                     f"log, iteration {int(first['iteration'])}": float(first[term]),
                     f"log, iteration {int(last['iteration'])}": float(last[term]),
                     "final weights": reg_end.get(term, np.nan)})
    return pd.DataFrame(rows).set_index("term")


def penalty_only_descent(run_dir: str | os.PathLike, iterations: int | None = None) -> pd.DataFrame:
    """λ·ℓ1,2(W_L) and λ·ℓ2,1(W_G) at each iteration of SGD on the two penalties alone, with the run's
    own learning rate (``lr_at``), momentum and weight decay, from the run's initial W_L and W_G.

    ``iterations``: how many steps (default: the run's, at most 5,000 — the fall is over long before)."""
    model, cfg, _ = initial_model(run_dir)
    n = min(cfg.iterations, 5_000) if iterations is None else int(iterations)
    W_G = model.global_fc_weight.detach().clone().requires_grad_(True)
    W_L = model.local_fc_weight.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([W_G, W_L], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    rows = []
    for it in range(n):
        g = cfg.lambda_global * group_lasso_l21(W_G)
        l = cfg.lambda_local * exclusive_group_lasso_l12(W_L, cfg.m)
        rows.append({"iteration": it, "global_reg": g.item(), "local_reg": l.item()})
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(it)  # W_G and W_L are backbone weights: lr_mult 1 (engine.loop.step)
        opt.zero_grad()
        (g + l).backward()
        opt.step()
    return pd.DataFrame(rows)


def _window_means(sim: pd.DataFrame, log: pd.DataFrame, every: int) -> pd.DataFrame:
    """The simulation averaged over the same windows as the log (a row at t = mean of t-every .. t-1)."""
    out = []
    for t in log["iteration"]:
        w = sim[(sim["iteration"] >= t - every) & (sim["iteration"] < t)]
        if len(w):
            out.append({"iteration": int(t), "global_reg": w["global_reg"].mean(), "local_reg": w["local_reg"].mean()})
    return pd.DataFrame(out)


def plot_loss_terms(run_dir: str | os.PathLike, title: str = "", *, terms: pd.DataFrame | None = None,
                    descent: pd.DataFrame | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Left: every term of Eq. (5) from the run's log (log scale), iteration 0 from the initial weights.
    Right: the logged λ·ℓ1,2 and λ·ℓ2,1 beside SGD on the penalties alone. ``terms`` / ``descent``:
    :func:`start_terms` / :func:`penalty_only_descent` of this run, when already computed."""
    log = read_log(run_dir)
    terms = start_terms(run_dir) if terms is None else terms
    cfg = run_config(run_dir)
    if descent is None:
        descent = penalty_only_descent(run_dir, int(log["iteration"].max()))
    sim = _window_means(descent, log, cfg.log_every)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    colours = dict(zip(LOSS_TERMS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for term in LOSS_TERMS:
        if (log[term] > 0).any():
            x = np.r_[0, log["iteration"]]
            ax1.plot(x, np.r_[terms.loc[term, "iteration 0"], log[term]], color=colours[term], label=term)
    ax1.set(yscale="log", xlabel="iteration", ylabel="loss (log scale)",
            title=f"{title} Eq. 5's terms (iteration 0: from the initial weights)".strip())
    ax1.legend(fontsize=7)
    for term, style in (("local_reg", "-"), ("global_reg", "--")):
        ax2.plot(log["iteration"], log[term], style, color=colours[term], lw=2, label=f"{term}: the run's log")
        if not sim.empty:
            ax2.plot(sim["iteration"], sim[term], style, color="k", lw=1,
                     label=f"{term}: SGD on the penalties alone")
    ax2.set(yscale="log", xlabel="iteration", ylabel="λ · penalty (log scale)",
            title="the fall of λ·ℓ1,2 is its own gradient's doing")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, path)
