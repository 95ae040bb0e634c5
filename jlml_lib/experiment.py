"""What the experiment notebooks (03–08) call: open a dataset, compare a run with the paper,
and draw training curves, CMC curves and ranked lists. Kept here so tests can reach it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import ReidDataset, load_dataset, resolve_root
from .notebook import synthetic_banner


def open_dataset(name: str, data_root: str | None = None, **options: Any) -> ReidDataset:
    """The user's copy (``data_root``) or the synthetic stand-in, loaded; a banner if synthetic.

    A ``data_root`` that does not hold the dataset raises (never a silent fall-back).
    """
    root, source = resolve_root(name, data_root)
    ds = load_dataset(name, root, **options)
    synthetic_banner(source, f"the {name} images and every number below")
    return ds


def records_under(*run_dirs: str | Path) -> list[dict]:
    from .results.tables import scan_records

    return [rec for d in run_dirs for rec in scan_records(d)[0]]


def compare(table: int, *run_dirs: str | Path) -> pd.DataFrame:
    """Paper | ours | Δ | source for the cells of ``table`` that these runs fill."""
    from .results.tables import cells_frame, fill, table_cells

    frame = cells_frame(fill(table_cells(table), records_under(*run_dirs)))
    frame = frame[["row", "column", "paper", "ours", "delta", "source"]].rename(columns={"delta": "Δ"})
    return frame.round({"ours": 2, "Δ": 2})


def plot_training(run_dir: str | Path, title: str = ""):
    """Loss terms and learning rate against iterations, from the run's ``log.jsonl``."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .launch import read_log

    log = read_log(run_dir)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
    if log.empty:
        ax1.text(0.5, 0.5, "no log", ha="center", transform=ax1.transAxes)
        return fig
    terms = [c for c in ("total", "global_ce", "local_ce", "global_reg", "local_reg") if c in log]
    long = log.melt(id_vars="iteration", value_vars=terms, var_name="term", value_name="loss")
    sns.lineplot(data=long, x="iteration", y="loss", hue="term", ax=ax1)
    ax1.set_title(f"{title} training loss (Eq. 5 terms)".strip())
    ax2.plot(log["iteration"], log["lr"], color="k")
    ax2.set(yscale="log", xlabel="iteration", ylabel="learning rate", title="step policy (Table 4)")
    fig.tight_layout()
    return fig


def plot_cmc(curves: Mapping[str, Sequence[float]], title: str = "CMC", max_rank: int = 20):
    """CMC curves (%, rank 1..max_rank) for labelled runs."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = [{"rank": r + 1, "matching rate (%)": 100 * v, "run": label}
            for label, cmc in curves.items() for r, v in enumerate(list(cmc)[:max_rank])]
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=pd.DataFrame(rows), x="rank", y="matching rate (%)", hue="run", marker="o", ax=ax)
    ax.set(ylim=(0, 100), title=title)
    return fig


def load_trained(run_dir: str | Path, device: str = "cpu"):
    """The final model of a run (``checkpoints/final.pt``) and its TrainConfig, ready for evaluation.

    The checkpoint carries its config and class count, so the model is rebuilt by the training
    engine's own builder (``trainer.build_model``).
    """
    import torch

    from .checkpoint import load_checkpoint
    from .config import config_from_dict
    from .trainer import build_model

    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / "final.pt")
    cfg = config_from_dict(ckpt["config"])
    model = build_model(cfg, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(torch.device(device)).eval(), cfg


def ranked_lists(run_dir: str | Path, ds: ReidDataset, *, n_queries: int = 4, top: int = 10,
                 device: str = "cpu", seed: int = 0):
    """Queries and their top-``top`` gallery images, green border = same person, red = not.

    Junk (same person, same camera; pid -1) is skipped exactly as the evaluation skips it.
    """
    import matplotlib.pyplot as plt
    import torch

    from .data import build_loader, open_image
    from .evaluation import pairwise_distances
    from .features import extract_features

    model, cfg = load_trained(run_dir, device)
    rng = np.random.default_rng(seed)
    q_idx = sorted(rng.choice(len(ds.query), size=min(n_queries, len(ds.query)), replace=False).tolist())
    queries = [ds.query[i] for i in q_idx]

    def feats(items):
        loader = build_loader(items, image_size=cfg.image_size, train=False, batch_size=cfg.eval_batch_size)
        return extract_features(model, loader, torch.device(device))[0]

    dist = np.asarray(pairwise_distances(feats(queries), feats(ds.gallery)))
    fig, axes = plt.subplots(len(queries), top + 1, figsize=(1.1 * (top + 1), 2.3 * len(queries)), squeeze=False)
    for row, (q, d) in enumerate(zip(queries, dist)):
        _, qp, qc = q
        order = np.argsort(d, kind="stable")
        shown = [g for g in order
                 if not (ds.gallery[g][1] == -1 or (ds.gallery[g][1] == qp and ds.gallery[g][2] == qc))][:top]
        axes[row, 0].imshow(open_image(q[0]))
        axes[row, 0].set_title(f"query\nid {qp} cam {qc + 1}", fontsize=7)
        for col, g in enumerate(shown, 1):
            ref, gp, gc = ds.gallery[g]
            ax = axes[row, col]
            ax.imshow(open_image(ref))
            colour = "limegreen" if gp == qp else "red"
            for spine in ax.spines.values():
                spine.set(color=colour, linewidth=4)
            ax.set_title(f"{col}: id {gp}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Ranked gallery (L2 on the joint feature): green = same person, red = another", fontsize=9)
    fig.tight_layout()
    return fig


def train_profile(profile: str, *, pretraining: bool = False) -> str:
    """The training profile for a notebook's ``profile`` parameter: ``paper`` means Table 4's
    "Train" row, or its "Pre-train" row for ImageNet pre-training; ``smoke`` is the quick CPU run."""
    from .errors import ConfigError

    if profile not in ("smoke", "paper"):
        raise ConfigError(f"profile must be 'smoke' (quick CPU run) or 'paper' (Table 4), not {profile!r}")
    return "pretrain" if pretraining and profile == "paper" else profile


def default_splits(profile: str, splits: str | None) -> str:
    """Which splits to train: all of them for the paper's protocol, the first one for a smoke run."""
    if splits is not None:
        return str(splits)
    return "all" if profile == "paper" else "0"


def split_curves(run_dir: str | Path, feature: str = "joint") -> dict[str, list[float]]:
    """The CMC of every split of a multi-split run (``split-NN`` folders), for plotting."""
    from .launch import read_record

    curves = {}
    for d in sorted(Path(run_dir).glob("split-*")):
        rec = read_record(d, feature)
        curves[d.name] = rec["metrics"]["cmc"]
    return curves


def reid_pretraining(out_dir: str | Path, *, init: str | None, profile: str, cuhk03_root: str | None = None,
                     market1501_root: str | None = None, iterations: int | None = None, nproc: int = 1,
                     overrides: Mapping[str, Any] | None = None) -> Path:
    """The ImageNet → CUHK03+Market-1501 stage of the VIPeR/GRID chain (§3 "Implementation").

    Returns its ``checkpoints/final.pt``. 06 and 07 share the stage: a finished one is reused
    when it was trained with the same profile, start checkpoint, data and switches; otherwise it
    is trained again (a smoke model is never reused for a paper run).
    """
    from .launch import train

    out_dir = Path(out_dir)
    final = out_dir / "checkpoints" / "final.pt"
    opts = dict(overrides or {})
    if cuhk03_root:
        opts["data.cuhk03_root"] = cuhk03_root
    if market1501_root:
        opts["data.market1501_root"] = market1501_root
    if final.exists() and _same_stage(out_dir, train_profile(profile), init, iterations, opts):
        print(f"reusing the CUHK03+Market-1501 model {final} (same profile, init, data and settings)")
        return final
    train("cuhk03+market1501", out_dir, profile=train_profile(profile), init=init, iterations=iterations,
          nproc=nproc, overrides={**opts, "evaluate": False}, log_every_line=10)
    return final


def _same_stage(out_dir: Path, profile: str, init: str | None, iterations: int | None,
                opts: Mapping[str, Any]) -> bool:
    try:
        cfg = json.loads((out_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {"profile": profile, "init": str(init) if init else None}
    if iterations is not None:
        wanted["iterations"] = int(iterations)
    data = {k.removeprefix("data."): str(v) for k, v in opts.items() if k.startswith("data.")}
    same = all(cfg.get(k) == v for k, v in wanted.items()) and {
        k: str(v) for k, v in cfg.get("data_options", {}).items()} == data
    return same and all(str(cfg.get(k)).lower() == str(v).lower() for k, v in opts.items()
                        if not k.startswith("data.") and k in cfg)


#: Tables 9–12: the switches of each variant trained on Market-1501 (every other setting as JLML).
#: Table 9 needs no extra model: it evaluates the full model's global, local and joint features.
ABLATIONS: dict[str, dict[str, Any]] = {
    "jlml": {},                              # the full model (Tables 9–12's reference rows)
    "uniloss": {"head": "uni"},              # Table 10
    "no_shared_conv1": {"shared_conv1": False},  # Table 11
    "no_sfl": {"sfl": False},                # Table 12
}


def plot_ablations(tables: Mapping[int, pd.DataFrame]):
    """Paper vs ours bars for the ablation tables (one panel per table)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4.5), squeeze=False)
    for ax, (n, frame) in zip(axes[0], tables.items()):
        cells = frame["row"] + " · " + frame["column"]
        long = pd.concat([pd.DataFrame({"cell": cells, "%": frame["paper"], "who": "paper"}),
                          pd.DataFrame({"cell": cells, "%": frame["ours"], "who": "ours"})]).dropna()
        sns.barplot(data=long, y="cell", x="%", hue="who", ax=ax, orient="h")
        ax.set(title=f"Table {n}", ylabel="")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def update_tables(table: int, runs_dir: str | Path = "runs", tables_dir: str | Path = "results/tables") -> Path:
    """Rebuild ``results/tables/`` from every run's metrics.json; return Table ``table``'s Markdown."""
    from .notebook import resolve_path
    from .results.tables import build_tables

    out = resolve_path(tables_dir)
    build_tables(resolve_path(runs_dir), out)
    return out / f"table{table}.md"
