"""Table 4's learning-rate schedules and §3's training chain, as pictures (notebooks 03 and 05).

* :func:`table4_schedules` — Table 4's two rows (``results/paper/table4.csv``) beside the library's
  profiles that implement them (``engine.config``: ``pretrain`` = "Pre-train", ``paper`` = "Train"),
  checked to agree, with the iterations where each drops its learning rate.
* :func:`plot_schedules` — both Table 4 schedules at their real lengths (300K and 50K iterations),
  and a run's own schedule from its ``config.json`` and ``log.jsonl``, each labelled for what it is:
  the smoke profile is a scaled-down schedule, never "Table 4".
* :func:`plot_training_chain` — §3 "Implementation": ImageNet → CUHK03 / Market-1501 and
  ImageNet → CUHK03+Market-1501 → VIPeR / GRID, with the notebook that trains each stage.

Each plot returns its Figure (saved and closed when given a ``path``, as :mod:`jlml_lib.results.plots`).
"""
from __future__ import annotations

import dataclasses
import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jlml_lib.engine.config import TrainConfig, config_from_dict, make_config
from jlml_lib.errors import ConfigError
from jlml_lib.paths import RunDir
from jlml_lib.results.paper import load_paper_table
from jlml_lib.results.plots import _finish
from jlml_lib.results.runs import read_log

#: Table 4's ``stage_key`` -> the training profile (engine.config.PROFILES) that implements that row
STAGE_PROFILE: dict[str, str] = {"pretrain": "pretrain", "train": "paper"}
#: Table 4's columns and the TrainConfig fields they set
TABLE4_FIELDS: dict[str, str] = {"base_lr": "lr", "lr_gamma": "lr_gamma", "lr_step": "lr_step",
                                 "momentum": "momentum", "iterations": "iterations", "batch_size": "batch_size"}

#: §3 "Implementation": which model starts which stage, and the notebook that trains it
CHAIN: tuple[tuple[str, str, str], ...] = (
    ("ImageNet", "CUHK03", "04"),
    ("ImageNet", "Market-1501", "05"),
    ("ImageNet", "CUHK03+Market-1501", "06 (stage 1; 07 reuses it)"),
    ("CUHK03+Market-1501", "VIPeR", "06"),
    ("CUHK03+Market-1501", "GRID", "07"),
)


def drops(cfg: TrainConfig) -> list[int]:
    """The iterations at which ``cfg``'s step policy divides the learning rate (``TrainConfig.lr_at``)."""
    return [it for it in range(1, cfg.iterations) if cfg.lr_at(it) != cfg.lr_at(it - 1)]


def table4_schedules() -> pd.DataFrame:
    """Table 4's rows with the profile implementing each and its LR drops; raises if they disagree."""
    rows = []
    for _, r in load_paper_table(4).iterrows():
        profile = STAGE_PROFILE[r["stage_key"]]
        cfg = make_config(profile)
        wrong = {col: (r[col], getattr(cfg, f)) for col, f in TABLE4_FIELDS.items()
                 if not np.isclose(float(r[col]), float(getattr(cfg, f)))}
        if wrong or r["lr_policy"] != "step":
            raise ConfigError(f"profile {profile!r} (jlml_lib/engine/config.py) disagrees with Table 4's "
                              f"{r['stage']!r} row in results/paper/table4.csv: {wrong or r['lr_policy']} "
                              "(paper, profile); the profile must implement the row exactly.")
        rows.append({"stage": r["stage"], "profile": profile, "base_lr": cfg.lr, "lr_gamma": cfg.lr_gamma,
                     "lr_step": cfg.lr_step, "iterations": cfg.iterations, "momentum": cfg.momentum,
                     "batch_size": cfg.batch_size, "drops": drops(cfg)})
    return pd.DataFrame(rows)


def run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The run's saved settings (``config.json``)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{path} is missing: {run_dir} is not a finished training run folder "
                          "(jlml train writes config.json first); pass the run's own folder.")
    saved = json.loads(path.read_text())
    # engine.run adds what it learnt about the data (source, components, init_source) beside the settings
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return config_from_dict({k: v for k, v in saved.items() if k in fields})


def schedule_label(cfg: TrainConfig) -> str:
    """What a run's schedule is: one of Table 4's rows, or a profile's own (scaled-down) schedule."""
    for _, row in table4_schedules().iterrows():
        same = all(np.isclose(getattr(cfg, f), row[col]) for col, f in TABLE4_FIELDS.items())
        if same:
            return f"Table 4 \"{row['stage']}\" (profile '{cfg.profile}')"
    fractions = ", ".join(f"{d / cfg.iterations:.1f}" for d in drops(cfg))
    return (f"profile '{cfg.profile}': a scaled-down schedule, not Table 4 "
            f"(drops at {fractions} of the run, as Table 4's Train)")


def _step_axes(ax, cfg: TrainConfig, title: str, log: pd.DataFrame | None = None) -> None:
    last = cfg.iterations - 1  # the last iteration run (lr_at(iterations) would be the next step's)
    its = np.unique(np.r_[np.linspace(0, last, 400).astype(int), drops(cfg), np.array(drops(cfg)) - 1])
    ax.step(its, [cfg.lr_at(int(i)) for i in its], where="post", color="k", lw=1.5, label="lr_at (library)")
    if log is not None and not log.empty and "lr" in log:
        ax.plot(log["iteration"], log["lr"], "o", ms=3, color="tab:orange", label="this run's log.jsonl")
        ax.legend(fontsize=7, loc="lower left")
    for d in drops(cfg):
        ax.axvline(d, color="0.6", ls=":", lw=1)
        ax.annotate(f"{d:,}", (d, cfg.lr), textcoords="offset points", xytext=(2, -10), fontsize=7)
    big = cfg.iterations >= 10_000
    ax.set(yscale="log", xlim=(0, cfg.iterations), xlabel="iteration" + (" (thousands)" if big else ""),
           ylabel="learning rate")
    if big:
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x / 1000:g}K"))
    ax.set_title(title, fontsize=8)


def plot_schedules(run_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None) -> Figure:
    """Table 4's Pre-train and Train learning rates at their real iteration counts, and (given
    ``run_dir``) the run's own schedule with its logged values, each titled with what it is."""
    table = table4_schedules()
    panels: list[tuple[TrainConfig, str, pd.DataFrame | None]] = []
    for _, row in table.iterrows():
        cfg = make_config(row["profile"])
        panels.append((cfg, f"Table 4 \"{row['stage']}\": step ({cfg.lr_gamma:g}, {cfg.lr_step:,}), "
                            f"{cfg.iterations:,} iterations", None))
    if run_dir is not None:
        cfg = run_config(run_dir)
        panels.append((cfg, "this run — " + schedule_label(cfg), read_log(run_dir)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.2), squeeze=False)
    for ax, (cfg, title, log) in zip(axes[0], panels):
        _step_axes(ax, cfg, title, log)
    fig.suptitle("Learning-rate schedules: Caffe's step policy, base_lr · gamma^floor(iteration / step)",
                 fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def _positions() -> dict[str, tuple[float, float]]:
    """Left to right by depth in the chain, spread vertically within a column."""
    depth: dict[str, int] = {CHAIN[0][0]: 0}
    for src, dst, _ in CHAIN:  # CHAIN lists each stage after the one it starts from
        depth[dst] = depth[src] + 1
    columns: dict[int, list[str]] = {}
    for name, d in depth.items():
        columns.setdefault(d, []).append(name)
    pos = {}
    for d, names in columns.items():
        for k, name in enumerate(names):
            pos[name] = (d, (len(names) - 1) / 2 - k)
    return pos


def plot_training_chain(path: str | os.PathLike | None = None) -> Figure:
    """§3 "Implementation" as a diagram: each box a stage, each arrow "its final weights start the
    next stage" (``--init``), labelled with the notebook that trains the stage and Table 4's row."""
    pos = _positions()
    rows = {r["profile"]: r for _, r in table4_schedules().iterrows()}
    pre, train = rows["pretrain"], rows["paper"]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    trained_by = {dst: notebook for _, dst, notebook in CHAIN}
    trained_by["ImageNet"] = "03 (1,000 classes)"
    for name, (x, y) in pos.items():
        kind = (f"Table 4 Pre-train: {pre['iterations']:,} it." if name == "ImageNet"
                else f"Table 4 Train: {train['iterations']:,} it.")
        ax.text(x, y, f"{name}\n{kind}\nnotebook {trained_by[name]}", ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round,pad=0.5", fc="lightyellow" if name == "ImageNet" else "aliceblue",
                          ec="0.3"))
    for src, dst, _ in CHAIN:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate("", xy=(x1 - 0.32, y1), xytext=(x0 + 0.32, y0),
                    arrowprops=dict(arrowstyle="->", color="0.25", lw=1.3))
    ys = [y for _, y in pos.values()]
    ax.set(xlim=(-0.5, max(x for x, _ in pos.values()) + 0.5), ylim=(min(ys) - 0.7, max(ys) + 0.7))
    ax.axis("off")
    ax.set_title("The training chain (§3 \"Implementation\"): each arrow passes a model's weights on "
                 "(new identity classifiers)", fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def chain_frame() -> pd.DataFrame:
    """:data:`CHAIN` as a table (start model, stage, notebook)."""
    return pd.DataFrame(CHAIN, columns=["starts from", "stage", "notebook"])


__all__ = ["STAGE_PROFILE", "CHAIN", "drops", "table4_schedules", "run_config", "schedule_label",
                      "plot_schedules", "plot_training_chain", "chain_frame"]
