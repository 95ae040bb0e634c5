"""One training run from start to records, and a run per split (paper §2.2–2.3, Table 4).

:func:`run` resolves the data, trains (:func:`jlml_lib.engine.loop.fit`), writes the final
weights (:func:`jlml_lib.engine.checkpoint.save_final`), evaluates with the dataset's protocol
and writes the records; :func:`run_splits` does that for each split in ``split-NN/`` and writes
the mean ± std over splits in the run folder. The folder's layout is :class:`jlml_lib.paths.RunDir`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from jlml_lib import protocols, selection
from jlml_lib.data import ReidDataset, load_dataset, resolve_root
from jlml_lib.data.combined import COMBINED, COMBINED_PARTS
from jlml_lib.engine.checkpoint import load_checkpoint, load_init_weights, save_final
from jlml_lib.engine.config import RESUME_MAY_CHANGE, TrainConfig
from jlml_lib.engine.distributed import DistInfo, barrier, distributed_group
from jlml_lib.engine.evaluate import (classification_accuracy, device_label, evaluate_run, evaluation_keys,
                                      parse_key, record_dirs, write_evaluation, write_record)
from jlml_lib.engine.loop import FitResult, NonFiniteLoss, check_before_data, fit, resolve_device
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.io import write_json
from jlml_lib.paths import RunDir
from jlml_lib.provenance import run_start
from jlml_lib.results.intervals import seed_uncertainty, split_uncertainty

__all__ = ["run", "run_splits", "run_seeds", "load_data", "dataset_options"]

#: the record variant of an aggregate over seeds (a split aggregate has none: Tables 5/7/8's cells)
SEED_AGGREGATE = {"aggregate": "seeds"}


# ---------------------------------------------------------------- data
def dataset_options(cfg: TrainConfig) -> dict[str, Any]:
    """``load_dataset`` options of the run; split-based protocols get the run's ``split``."""
    opts = dict(cfg.data_options)
    takes_split = cfg.dataset in ("viper", "grid") or (
        cfg.dataset == "cuhk03" and opts.get("protocol", "classic") == "classic")
    if takes_split:
        opts.setdefault("split", cfg.split)
    return opts


def _component_roots(cfg: TrainConfig) -> dict[str, str | None]:
    """The union's own per-dataset roots (``data.cuhk03_root=``, ``data.market1501_root=``)."""
    if cfg.dataset != COMBINED:
        return {}
    return {part: cfg.data_options.get(f"{part}_root") or None for part in COMBINED_PARTS}


def _root_to_resolve(cfg: TrainConfig) -> bool:
    """Whether the run needs ``resolve_root`` (its own root, or a generated synthetic copy).

    The CUHK03+Market-1501 stage given both component roots loads them directly: resolving its
    absent ``data_root`` would generate a synthetic union, and the run would be recorded as
    synthetic although it trains on the user's data. Given one root only, the other would
    silently come from a synthetic copy: refused unless ``allow_mixed_sources``.
    """
    roots = _component_roots(cfg)
    if not roots or cfg.data_root:
        return True
    given = [k for k, v in roots.items() if v]
    if len(given) == len(roots):
        return False
    if given and not cfg.allow_mixed_sources:
        missing = [k for k in roots if not roots[k]]
        raise ConfigError(f"{COMBINED}: a root was given for {', '.join(given)} but not for {', '.join(missing)}, "
                          f"which would come from a SYNTHETIC copy. Give data.{missing[0]}_root=PATH too "
                          "(jlml workbook --data-root NAME=PATH), or allow_mixed_sources=true to mix on purpose.")
    return True


def components(ds: ReidDataset) -> list[dict[str, str]]:
    """Source and root of each dataset a run trains on (one, or the union's two)."""
    return list(ds.extras.get("components") or [{"dataset": ds.name, "source": ds.source, "root": str(ds.root)}])


def check_sources(cfg: TrainConfig, parts: list[dict[str, str]]) -> str:
    """The run's source: "real" or "synthetic"; a mix is an error unless ``allow_mixed_sources``."""
    sources = {p["source"] for p in parts}
    if len(sources) == 1:
        return sources.pop()
    if not cfg.allow_mixed_sources:
        raise ConfigError(f"{cfg.dataset}: the run would mix real and synthetic data: "
                          + "; ".join(f"{p['dataset']} is {p['source']} ({p['root']})" for p in parts)
                          + ". Give a real root for each (data.NAME_root=PATH), or allow_mixed_sources=true.")
    return "mixed"


def load_data(cfg: TrainConfig, info: DistInfo) -> tuple[ReidDataset, str]:
    """The ReidDataset of the run and its source ("real", "synthetic", or "mixed" when allowed);
    rank 0 generates a synthetic copy first if needed. The source is read from the loaded
    datasets themselves (their synthetic markers), never assumed."""
    root: Path | None = None
    if _root_to_resolve(cfg):
        def resolve():
            return resolve_root(cfg.dataset, cfg.data_root, scale=cfg.synthetic_scale, seed=cfg.synthetic_seed)[0]

        if info.is_main:
            root = resolve()
        barrier(info)
        if not info.is_main:
            root = resolve()  # now cached: a read, not a second generation
    ds = load_dataset(cfg.dataset, root, **dataset_options(cfg))
    source = check_sources(cfg, components(ds))
    if len(ds.train) < cfg.batch_size:
        raise DataError(f"{cfg.dataset} ({ds.root}): {len(ds.train)} training images, fewer than one "
                        f"batch ({cfg.batch_size}); use a larger synthetic_scale or batch_size=...")
    return ds, source


def _announce_source(cfg: TrainConfig, ds: ReidDataset, source: str) -> None:
    if source == "real":
        return
    if source == "mixed":
        what = "MIXED real and synthetic data (allow_mixed_sources=true): " + "; ".join(
            f"{p['dataset']} {p['source']}" for p in components(ds))
    elif cfg.data_root or not _root_to_resolve(cfg):
        what = f"the data given is a SYNTHETIC copy of {cfg.dataset} ({ds.root}, generated by jlml)"
    else:
        what = f"no --data-root: training on SYNTHETIC {cfg.dataset} ({ds.root})"
    print(f"jlml train: {what}; results are labelled {source}.", file=sys.stderr)


def _device_kind(cfg: TrainConfig) -> str:
    return resolve_device(cfg, DistInfo()).type


# ---------------------------------------------------------------- one run
def _check_resume_config(cfg: TrainConfig, saved: dict, path: Path) -> TrainConfig:
    """The config to resume with: ``cfg``, which must match the saved one except for settings
    that do not change the weights; a missing ``--init`` is taken from the saved run (the
    checkpoint already holds those weights)."""
    if cfg.init is None and saved.get("init"):
        cfg = dataclasses.replace(cfg, init=saved["init"])
    differ = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
              if k not in RESUME_MAY_CHANGE and not _same_setting(k, saved.get(k), v)}
    if differ:
        raise ConfigError(f"--resume: {path} was written with other settings: "
                          + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
                          + ". Resume with the original arguments, or start a new run with a new --out.")
    return cfg


def _same_setting(key: str, saved: Any, now: Any) -> bool:
    """A root spelled otherwise (relative, ``~``, a symlink) is the same root."""
    if key == "data_root" and saved and now:
        return Path(saved).expanduser().resolve() == Path(now).expanduser().resolve()
    return saved == now


def _check_resume_data(last: Path, ds: ReidDataset, source: str) -> None:
    """The data a resumed run loaded must be what its checkpoint was trained on."""
    ckpt = load_checkpoint(last)
    saved = {**ckpt.get("data", {}), "num_train_pids": ckpt.get("num_classes")}
    now = {"dataset": ds.name, "source": source, "split": ds.split, "num_train_pids": ds.num_train_pids}
    differ = {k: (saved.get(k), v) for k, v in now.items() if k in saved and saved[k] != v}
    if differ:
        raise ConfigError(f"--resume: {last} was trained on other data than {ds.root} holds: "
                          + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items())
                          + ". Resume with the original --data-root, or start a new run with a new --out.")


def _start(cfg: TrainConfig, run: RunDir, resume: bool, info: DistInfo) -> tuple[TrainConfig, bool]:
    """Check the batch against the DDP world and the folder against ``--resume``."""
    if cfg.batch_size % info.world_size:
        raise ConfigError(f"batch_size={cfg.batch_size} (the global batch) is not divisible by the "
                          f"{info.world_size} DDP processes; choose --nproc_per_node dividing it.")
    if resume and run.last.exists():
        return _check_resume_config(cfg, load_checkpoint(run.last)["config"], run.last), True
    if resume:
        if info.is_main:
            print(f"jlml train: --resume but no checkpoint at {run.last}; starting at iteration 0.",
                  file=sys.stderr)
        return cfg, False
    if run.last.exists():
        raise ConfigError(f"{run.path} already holds a run ({run.last}); add --resume to continue it, "
                          "or choose a new --out.")
    return cfg, False


def run(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
        on_iteration: Callable[[int, nn.Module], None] | None = None,
        info: DistInfo | None = None) -> dict[str, Any]:
    """Train, evaluate and record one run in ``out_dir``; returns the summary dict (rank 0)."""
    if info is not None:
        return _run(cfg, RunDir(out_dir), resume=resume, on_iteration=on_iteration, info=info)
    with distributed_group(_device_kind(cfg)) as info:
        return _run(cfg, RunDir(out_dir), resume=resume, on_iteration=on_iteration, info=info)


def _run(cfg: TrainConfig, run: RunDir, *, resume: bool, info: DistInfo,
         on_iteration: Callable[[int, nn.Module], None] | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg, resume = _start(cfg, run, resume, info)
    device = check_before_data(cfg, info, init=not resume)  # refused before the data is loaded
    # where the model starts (issue 19): recorded in config.json, the checkpoints and every record
    start = run_start(cfg.init, run.last if resume else None)
    ds, source = load_data(cfg, info)
    if resume:
        _check_resume_data(run.last, ds, source)  # before config.json is rewritten
    if info.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        write_json(run.config, {**cfg.to_dict(), "source": source, "components": components(ds),
                                "init_source": _init_source(cfg.init), "start": start})
        _announce_source(cfg, ds, source)
    barrier(info)

    init_info: dict[str, Any] = {}

    def init(model: nn.Module) -> None:
        init_info.update(load_init_weights(model, cfg.init))

    data_info = {"dataset": cfg.dataset, "source": source, "split": ds.split, "num_train_pids": ds.num_train_pids,
                 "components": components(ds), "start": start}  # the chain travels with the weights
    try:
        result = fit(cfg, ds.train, ds.num_train_pids, run.path, info=info, resume=resume,
                     init=init if cfg.init else None, data_info=data_info, on_iteration=on_iteration)
    except NonFiniteLoss:
        barrier(info)
        raise
    summary: dict[str, Any] = {}
    if info.is_main:
        save_final(run.path, model=result.model, iteration=result.iteration, config=cfg.to_dict(),
                   num_classes=ds.num_train_pids, data=data_info)
        summary = _finish(cfg, run, ds, source, result, device_label(device, info), info,
                          init_path=init_info.get("path"), resumed=resume, t_start=t_start, start=start)
    barrier(info)
    return summary


def _finish(cfg: TrainConfig, run: RunDir, ds: ReidDataset, source: str, result: FitResult, device: str,
            info: DistInfo, *, init_path: str | None, resumed: bool, t_start: float,
            start: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the trained model (re-id protocol, or ImageNet val top-1) and write the records."""
    summary: dict[str, Any] = {
        "dataset": cfg.dataset, "source": source, "split": ds.split, "protocol": ds.protocol,
        "profile": cfg.profile, "iterations": result.iteration, "train_wall_time_s": result.wall_time_s,
        "images_per_s": result.images_per_s, "last_log": result.last_log, "device": device,
        "world_size": info.world_size, "init": init_path, "resumed": resumed, "components": components(ds),
        "start": start}
    metrics = {}
    if cfg.evaluate and ds.query and ds.gallery:
        metrics = evaluate_run(cfg, result.model, ds, resolve_device(cfg, info))
    elif cfg.evaluate and ds.extras.get("val"):
        summary["val_accuracy"] = classification_accuracy(cfg, result.model, ds.extras["val"],
                                                          resolve_device(cfg, info))
    wall = time.perf_counter() - t_start
    summary["wall_time_s"] = wall
    # what Eqs. 1-2 did to W_G / W_L (issue 11), next to the accuracy in every record
    summary["selection"] = sel = selection.summary(result.model)
    dirs = record_dirs(run.path, list(metrics))
    record_source = _record_source(source)
    for kind, m in metrics.items():  # queries.npz + metrics.json (with intervals) in each record folder
        write_evaluation(cfg, dirs[kind], metrics=m, feature=kind, protocol=ds.protocol, source=record_source,
                         wall=wall, device=device,
                         extra={"split": ds.split, "num_splits": ds.num_splits, "iterations": result.iteration,
                                "init": init_path, "init_source": _init_source(init_path),
                                "components": components(ds), "mixed_sources": source == "mixed",
                                "eval_normalize": cfg.eval_normalize}, selection=sel, start=start)
    summary["metrics"] = metrics
    write_json(run.summary, summary)
    return summary


def _record_source(source: str) -> str:
    """A mix (allowed with allow_mixed_sources) is never presented as real: recorded as synthetic,
    with ``extra.mixed_sources`` and each component's source beside it."""
    return "synthetic" if source == "mixed" else source


def _init_source(init: str | None) -> str | None:
    """The data source the ``--init`` checkpoint was trained on (recorded, never refused)."""
    if not init:
        return None
    try:
        return load_checkpoint(init).get("data", {}).get("source", "unknown")
    except ConfigError:
        return "unknown"  # a bare state_dict (--init accepts one) says nothing about its data


# ---------------------------------------------------------------- one run per split
def run_splits(cfg: TrainConfig, out_dir: str | Path, splits: Sequence[int] | str, *,
               resume: bool = False) -> dict[str, Any]:
    """One run per split in ``out_dir/split-NN``; their mean ± std (protocols.aggregate) in ``out_dir``."""
    run = RunDir(out_dir)
    with distributed_group(_device_kind(cfg)) as info:
        if splits == "all":
            ds, _ = load_data(cfg, info)
            splits = list(range(ds.num_splits))
        t0 = time.perf_counter()
        summaries = []
        for k in splits:
            split = run.split(k)
            if resume and split.summary.exists():  # finished before the interruption: keep it
                summaries.append(json.loads(split.summary.read_text()))
                continue
            summaries.append(_run(dataclasses.replace(cfg, split=int(k)), split, resume=resume, info=info))
        summary: dict[str, Any] = {"splits": list(splits), "start": summaries[0].get("start") if summaries else None}
        if info.is_main and cfg.evaluate and all(s.get("metrics") for s in summaries):
            summary["metrics"] = _write_aggregate(cfg, run, summaries, list(splits), time.perf_counter() - t0)
            write_json(run.summary, summary)
        return summary


def _write_aggregate(cfg: TrainConfig, run: RunDir, summaries: list[dict], splits: list[int],
                     wall: float) -> dict[str, dict]:
    dirs = record_dirs(run.path, evaluation_keys(cfg))
    out = {}
    for kind in evaluation_keys(cfg):
        per_split = [s["metrics"][kind] for s in summaries]
        agg = protocols.aggregate(per_split)
        # the split-stratified bootstrap from the splits' queries.npz, and t over the splits (issue 12)
        uncertainty = split_uncertainty([run.split(k).eval_dir(*parse_key(kind)) for k in splits], per_split)
        for d in dirs[kind]:
            write_record(cfg, d, metrics=agg, feature=kind, protocol=summaries[0]["protocol"],
                         source=_record_source(summaries[0]["source"]), wall=wall, device=summaries[0]["device"],
                         extra={"splits": splits, "aggregated_over": len(splits)}, uncertainty=uncertainty,
                         start=summaries[0].get("start"))  # every split starts from the same --init
        out[kind] = agg
    return out


# ---------------------------------------------------------------- one run per seed
def run_seeds(cfg: TrainConfig, out_dir: str | Path, seeds: Sequence[int], *, splits: Sequence[int] | str | None = None,
              resume: bool = False) -> dict[str, Any]:
    """One run per seed in ``out_dir/seed-NN`` (each over ``splits`` when given), then their mean,
    sample std over seeds in ``out_dir`` — a record marked as aggregated over seeds, with its own
    variant (:data:`SEED_AGGREGATE`) so it never fills a single run's or a split aggregate's cell."""
    run_dir = RunDir(out_dir)
    t0 = time.perf_counter()
    summaries = []
    for s in seeds:
        sub, folder = dataclasses.replace(cfg, seed=int(s)), run_dir.seed(s)
        if resume and folder.summary.exists() and json.loads(folder.summary.read_text()).get("metrics"):
            summaries.append(json.loads(folder.summary.read_text()))
        elif splits is not None:
            summaries.append(run_splits(sub, folder.path, splits, resume=resume))
        else:
            summaries.append(run(sub, folder.path, resume=resume))
    summary: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
    if cfg.evaluate and summaries and all(s.get("metrics") for s in summaries):
        first = _first_record(run_dir.seed(seeds[0]))
        dirs = record_dirs(run_dir.path, evaluation_keys(cfg))
        for kind in evaluation_keys(cfg):
            per_seed = [s["metrics"][kind] for s in summaries]
            agg = protocols.aggregate(per_seed, over="seeds")
            uncertainty = seed_uncertainty(per_seed)  # a t-interval over seeds, marked as such
            for d in dirs[kind]:
                write_record(cfg, d, metrics=agg, feature=kind, protocol=first["protocol"], source=first["source"],
                             wall=time.perf_counter() - t0, device=first["device"], variant_extra=SEED_AGGREGATE,
                             extra={"seeds": summary["seeds"], "aggregated_over_seeds": len(seeds),
                                    "splits": summaries[0].get("splits")}, uncertainty=uncertainty,
                             start=summaries[0].get("start"))
            summary.setdefault("metrics", {})[kind] = agg
        write_json(run_dir.summary, summary)
    return summary


def _first_record(run: RunDir) -> dict[str, Any]:
    """Protocol, source and device of a finished run (its summary, or its first split's)."""
    for folder in (run, *run.splits()):
        if folder.summary.exists():
            s = json.loads(folder.summary.read_text())
            if "protocol" in s:
                return {"protocol": s["protocol"], "source": _record_source(s["source"]), "device": s["device"]}
    raise DataError(f"{run.path}: no finished run (summary.json) to describe the seed aggregate")
