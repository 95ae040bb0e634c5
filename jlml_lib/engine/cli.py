"""``jlml train`` / ``python -m jlml_lib.train`` / ``torchrun -m jlml_lib.train``: the command line.

    python -m jlml_lib.train --dataset market1501 --profile smoke --out runs/market-smoke
    python -m jlml_lib.train --dataset market1501 --profile paper --data-root /data/Market-1501-v15.09.15 \\
        --init runs/imagenet/checkpoints/final.pt --out runs/market            # = `jlml train ...`
    torchrun --nproc_per_node=8 -m jlml_lib.train --profile paper ...          # DDP, same arguments

Without ``--data-root`` the run uses the synthetic copy of the dataset and every output says
so (``source: "synthetic"``). Settings: :class:`jlml_lib.engine.config.TrainConfig`; any field
can be overridden as ``key=value`` (``lr=0.001 sfl=false head=uni data.images=detected``).

The paper's chains (§3 "Implementation") are runs linked by ``--init``:
ImageNet (``--profile pretrain --dataset imagenet``) → CUHK03 / Market-1501; ImageNet →
``cuhk03+market1501`` (``--profile paper``, no evaluation) → VIPeR / GRID. ``--init`` keeps
the backbone and gives the new run fresh ID classifiers. The run folder's files are listed in
:mod:`jlml_lib.paths`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from jlml_lib.engine.config import PROFILES, TrainConfig, make_config
from jlml_lib.engine.loop import NonFiniteLoss, check_before_data
from jlml_lib.engine.run import run, run_seeds, run_splits
from jlml_lib.errors import ConfigError, is_main_process, run_cli
from jlml_lib.paths import CHECKPOINTS, LAST

__all__ = ["build_parser", "config_from_args", "parse_splits", "parse_seeds", "check_out", "resume_hint", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jlml train", description="Train / fine-tune JLML (Table 4) and evaluate it.",
        epilog="KEY=VALUE sets any TrainConfig field (see jlml_lib/engine/config.py), e.g. lr=0.001 "
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
    p.add_argument("--seeds", help="comma list: one run per seed in OUT/seed-NN, then mean ± std over seeds "
                   "(a record of its own, never mixed with a split aggregate)")
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


def parse_splits(text: str | None) -> list[int] | str | None:
    """``--splits``: ``all`` or a comma list of split numbers (0-based)."""
    if text is None:
        return None
    if text.strip() == "all":
        return "all"
    return _int_list("--splits", text, "split numbers, 0-based (e.g. 0,1,2), or all")


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds``: a comma list of distinct non-negative integers."""
    return None if text is None else _int_list("--seeds", text, "seeds (e.g. 0,1,2)")


def _int_list(option: str, text: str, what: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{option} {text!r}: expected a comma list of distinct non-negative {what}.")
    return values


def check_out(out: str | os.PathLike) -> None:
    """``--out`` must be a folder (new or existing) that can be written, checked before any data
    is loaded or file written."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; expected a run folder (new or existing). "
                          "Choose another --out.")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--out {str(out)!r}: {existing} is a file, so the run folder cannot be made "
                          "there. Choose another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {str(out)!r}: {existing} is not writable. Choose a folder you may "
                          "write to.")


def resume_hint(out: str | os.PathLike) -> str:
    """What Ctrl-C leaves to resume: the newest ``last.pt`` under ``out`` (a seed's or split's)."""
    found = sorted(Path(out).glob(f"**/{CHECKPOINTS}/{LAST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        return (f"no checkpoint had been written in {out} yet (one every ckpt_every iterations); "
                "run the same command again to start over.")
    return f"the same command with --resume continues from {found[-1]}."


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_cli("jlml train", lambda: _main(args), interrupted=lambda: resume_hint(args.out))


def _main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2, allow_nan=False))
        return 0
    splits, seeds = parse_splits(args.splits), parse_seeds(args.seeds)
    check_out(args.out)
    check_before_data(cfg, init=not args.resume)  # (engine.run checks again, per run)
    try:
        if seeds is not None:
            summary = run_seeds(cfg, args.out, seeds, splits=splits, resume=args.resume)
        elif splits is not None:
            summary = run_splits(cfg, args.out, splits, resume=args.resume)
        else:
            summary = run(cfg, args.out, resume=args.resume)
    except NonFiniteLoss as exc:
        if is_main_process():
            print(f"jlml train: stopped: {exc}", file=sys.stderr)
        return 3
    if summary.get("metrics"):
        first = next(iter(summary["metrics"].values()))
        print(json.dumps({"out": str(args.out), "source": summary.get("source"), "metrics": first},
                         default=str)[:2000])
    return 0
