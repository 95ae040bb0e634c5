"""Train / fine-tune JLML and evaluate it with the dataset's protocol (paper §2.2, Table 4).

    python -m jlml_lib.train --dataset market1501 --profile smoke --out runs/market-smoke
    python -m jlml_lib.train --dataset market1501 --profile paper --data-root /data/Market-1501-v15.09.15 \\
        --init runs/imagenet/checkpoints/final.pt --out runs/market            # = `jlml train ...`
    torchrun --nproc_per_node=8 -m jlml_lib.train --profile paper ...          # DDP, same arguments

Without ``--data-root`` the run uses the synthetic copy of the dataset and every output says
so (``source: "synthetic"``). Settings: :class:`jlml_lib.config.TrainConfig`; any field can be
overridden as ``key=value`` (``lr=0.001 sfl=false head=uni data.images=detected``).

The paper's chains (§3 "Implementation") are runs linked by ``--init``:
ImageNet (``--profile pretrain --dataset imagenet``) → CUHK03 / Market-1501; ImageNet →
``cuhk03+market1501`` (``--profile paper``, no evaluation) → VIPeR / GRID. ``--init`` keeps
the backbone and gives the new run fresh ID classifiers.

Output folder: ``config.json``, ``log.jsonl`` (every ``log_every`` iterations),
``checkpoints/last.pt`` (resumable, atomic; ``--resume`` continues it), ``checkpoints/final.pt``
(weights for ``--init``), ``summary.json`` (training facts) and ``metrics.json``
(:func:`jlml_lib.results.records.write_metrics`; more feature kinds in ``eval-<kind>/``).
``--splits all`` trains one run per split in ``split-NN/`` and writes the mean ± std over
splits (``protocols.aggregate``) as ``DIR/metrics.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from jlml_lib.checkpoint import (FORMAT, VERSION, checkpoint_dir, last_checkpoint, load_checkpoint,
                                 load_init_weights)
from jlml_lib.config import PROFILES, RESUME_MAY_CHANGE, TrainConfig, make_config
from jlml_lib.distributed import DistInfo, barrier, cleanup, init_distributed
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.io import torch_save, write_json
from jlml_lib.train_eval import (classification_accuracy, device_label, evaluate_run, record_dataset_name,
                                  record_dirs, write_record)
from jlml_lib.trainer import NonFiniteLoss, fit, resolve_device

__all__ = ["run", "run_splits", "record_dataset_name", "main", "build_parser"]

SPLIT_DATASETS = ("viper", "grid", "cuhk03")


# ---------------------------------------------------------------- data
def dataset_options(cfg: TrainConfig) -> dict[str, Any]:
    opts = dict(cfg.data_options)
    takes_split = cfg.dataset in ("viper", "grid") or (
        cfg.dataset == "cuhk03" and opts.get("protocol", "classic") == "classic")
    if takes_split:
        opts.setdefault("split", cfg.split)
    return opts


def load_data(cfg: TrainConfig, info: DistInfo):
    """The ReidDataset of the run; rank 0 generates a synthetic copy first if needed."""
    from jlml_lib.data import load_dataset, resolve_root

    def resolve():
        return resolve_root(cfg.dataset, cfg.data_root, scale=cfg.synthetic_scale, seed=cfg.synthetic_seed)

    if info.is_main:
        root, source = resolve()
    barrier(info)
    if not info.is_main:
        root, source = resolve()  # now cached: a read, not a second generation
    ds = load_dataset(cfg.dataset, root, **dataset_options(cfg))
    if len(ds.train) < cfg.batch_size:
        raise DataError(f"{cfg.dataset} ({root}): {len(ds.train)} training images, fewer than one "
                        f"batch ({cfg.batch_size}); use a larger synthetic_scale or batch_size=...")
    return ds, source


# ---------------------------------------------------------------- one run
def _check_resume_config(cfg: TrainConfig, saved: dict, path: Path) -> TrainConfig:
    """The config to resume with: ``cfg``, which must match the saved one except for settings
    that do not change the weights; a missing ``--init`` is taken from the saved run (the
    checkpoint already holds those weights)."""
    if cfg.init is None and saved.get("init"):
        cfg = dataclasses.replace(cfg, init=saved["init"])
    differ = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
              if k not in RESUME_MAY_CHANGE and saved.get(k) != v}
    if differ:
        raise ConfigError(f"--resume: {path} was written with other settings: "
                          + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
                          + ". Resume with the original arguments, or start a new run with a new --out.")
    return cfg


def run(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
        on_iteration: Callable[[int, nn.Module], None] | None = None,
        info: DistInfo | None = None) -> dict[str, Any]:
    """Train, evaluate and record one run in ``out_dir``; returns the summary dict (rank 0)."""
    out_dir = Path(out_dir)
    own_group = info is None
    info = init_distributed("cuda" if resolve_device(cfg, DistInfo()).type == "cuda" else "cpu") \
        if info is None else info
    try:
        return _run(cfg, out_dir, resume, on_iteration, info)
    finally:
        if own_group:
            cleanup(info)


def _run(cfg, out_dir, resume, on_iteration, info) -> dict[str, Any]:
    t_start = time.perf_counter()
    if cfg.batch_size % info.world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} (the global batch) is not divisible by the "
                          f"{info.world_size} DDP processes; choose --nproc_per_node dividing it.")
    ckpt_path = last_checkpoint(out_dir)
    if resume and ckpt_path.exists():
        cfg = _check_resume_config(cfg, load_checkpoint(ckpt_path)["config"], ckpt_path)
    elif resume:
        if info.is_main:
            print(f"jlml train: --resume but no checkpoint at {ckpt_path}; starting at iteration 0.",
                  file=sys.stderr)
        resume = False
    elif ckpt_path.exists():
        raise ConfigError(f"{out_dir} already holds a run ({ckpt_path}); add --resume to continue it, "
                          "or choose a new --out.")
    device = resolve_device(cfg, info)
    ds, source = load_data(cfg, info)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", {**cfg.to_dict(), "source": source})
        if source == "synthetic":
            print(f"jlml train: no --data-root: training on SYNTHETIC {cfg.dataset} ({ds.root}); "
                  "results are labelled synthetic.", file=sys.stderr)
    barrier(info)

    init_info: dict[str, Any] = {}

    def init(model: nn.Module) -> None:
        init_info.update(load_init_weights(model, cfg.init))

    data_info = {"dataset": cfg.dataset, "source": source, "split": ds.split, "num_train_pids": ds.num_train_pids}
    try:
        result = fit(cfg, ds.train, ds.num_train_pids, out_dir, info=info, resume=resume,
                     init=init if cfg.init else None, data_info=data_info, on_iteration=on_iteration)
    except NonFiniteLoss:
        barrier(info)
        raise
    summary: dict[str, Any] = {}
    if info.is_main:
        model = result.model
        torch_save({"format": FORMAT, "version": VERSION, "iteration": result.iteration,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "config": cfg.to_dict(), "num_classes": ds.num_train_pids, "data": data_info},
                   checkpoint_dir(out_dir) / "final.pt")
        summary = {"dataset": cfg.dataset, "source": source, "split": ds.split, "protocol": ds.protocol,
                   "profile": cfg.profile,
                   "iterations": result.iteration, "train_wall_time_s": result.wall_time_s,
                   "images_per_s": result.images_per_s, "last_log": result.last_log,
                   "device": device_label(device, info), "world_size": info.world_size,
                   "init": init_info.get("path"), "resumed": resume}
        metrics = {}
        if cfg.evaluate and ds.query and ds.gallery:
            metrics = evaluate_run(cfg, model, ds, device)
        elif cfg.evaluate and ds.extras.get("val"):
            summary["val_accuracy"] = classification_accuracy(cfg, model, ds.extras["val"], device)
        wall = time.perf_counter() - t_start
        summary["wall_time_s"] = wall
        dirs = record_dirs(out_dir, list(metrics))
        for kind, m in metrics.items():
            for d in dirs[kind]:
                write_record(cfg, d, metrics=m, feature=kind, protocol=ds.protocol, source=source, wall=wall,
                             device=summary["device"],
                             extra={"split": ds.split, "num_splits": ds.num_splits, "iterations": result.iteration,
                                    "init": init_info.get("path"), "eval_normalize": cfg.eval_normalize})
        summary["metrics"] = metrics
        write_json(out_dir / "summary.json", summary)
    barrier(info)
    return summary


def run_splits(cfg: TrainConfig, out_dir: str | Path, splits: Sequence[int] | str, *,
               resume: bool = False) -> dict[str, Any]:
    """One run per split in ``out_dir/split-NN``; their mean ± std (protocols.aggregate) in ``out_dir``."""
    from jlml_lib import protocols

    out_dir = Path(out_dir)
    info = init_distributed("cuda" if resolve_device(cfg, DistInfo()).type == "cuda" else "cpu")
    try:
        if splits == "all":
            ds, _ = load_data(cfg, info)
            splits = list(range(ds.num_splits))
        t0 = time.perf_counter()
        summaries = []
        for k in splits:
            sub = dataclasses.replace(cfg, split=int(k))
            split_dir = out_dir / f"split-{int(k):02d}"
            done = (split_dir / "summary.json").exists()
            if done and resume:  # finished before the interruption: keep it
                summaries.append(json.loads((split_dir / "summary.json").read_text()))
                continue
            summaries.append(_run(sub, split_dir, resume, None, info))
        summary: dict[str, Any] = {"splits": list(splits)}
        if info.is_main and cfg.evaluate and all(s.get("metrics") for s in summaries):
            dirs = record_dirs(out_dir, cfg.feature_kinds())
            for kind in cfg.feature_kinds():
                agg = protocols.aggregate([s["metrics"][kind] for s in summaries])
                for d in dirs[kind]:
                    write_record(cfg, d, metrics=agg, feature=kind, protocol=summaries[0]["protocol"],
                                 source=summaries[0]["source"], wall=time.perf_counter() - t0,
                                 device=summaries[0]["device"],
                                 extra={"splits": list(splits), "aggregated_over": len(splits)})
                summary.setdefault("metrics", {})[kind] = agg
            write_json(out_dir / "summary.json", summary)
        return summary
    finally:
        cleanup(info)



# ---------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jlml train", description="Train / fine-tune JLML (Table 4) and evaluate it.",
        epilog="KEY=VALUE sets any TrainConfig field (see jlml_lib/config.py), e.g. lr=0.001 "
               "head=uni sfl=false shared_conv1=false amp=off workers=8 data.images=detected. "
               "Under torchrun the same arguments train with DDP (batch_size is the global batch).")
    p.add_argument("--dataset", help="market1501, cuhk03, viper, grid, imagenet, cuhk03+market1501 "
                   "(default: the profile's: market1501, or imagenet for pretrain)")
    p.add_argument("--profile", choices=PROFILES, default="smoke",
                   help="smoke (CPU, minutes), paper (Table 4 Train), pretrain (Table 4 Pre-train)")
    p.add_argument("--out", required=True, help="run folder (config, log, checkpoints, metrics)")
    p.add_argument("--data-root", help="the real dataset; omitted: a synthetic copy (labelled so)")
    p.add_argument("--init", help="checkpoint whose backbone starts this run (fresh ID classifiers)")
    p.add_argument("--iterations", type=int, help="override the profile's iteration count")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt")
    p.add_argument("--splits", help="'all' or a comma list: one run per split, then mean ± std")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields: dict[str, Any] = {}
    if args.dataset:
        fields["dataset"] = args.dataset
    if args.data_root:
        fields["data_root"] = args.data_root
    if args.init:
        fields["init"] = args.init
    if args.iterations is not None:
        fields["iterations"] = args.iterations
    return make_config(args.profile, args.overrides, **fields)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg = config_from_args(args)
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        if args.splits:
            splits = "all" if args.splits == "all" else [int(s) for s in args.splits.split(",")]
            summary = run_splits(cfg, args.out, splits, resume=args.resume)
        else:
            summary = run(cfg, args.out, resume=args.resume)
    except NonFiniteLoss as exc:
        print(f"jlml train: stopped: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, DataError) as exc:
        print(f"jlml train: {exc}", file=sys.stderr)
        return 2
    if summary.get("metrics"):
        first = next(iter(summary["metrics"].values()))
        print(json.dumps({"out": str(args.out), "source": summary.get("source"), "metrics": first},
                         default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
