"""``jlml evaluate``: any trained model on any test set the registry knows, and a cross-dataset matrix.

    jlml evaluate runs/05_market --dataset market1501                    # the run's own test set
    jlml evaluate runs/05_market --dataset viper --split 3 --rerank      # cross-dataset, re-ranked too
    jlml evaluate model.pt --dataset cuhk03 --protocol new --data-root /data/cuhk03_release

The evaluation is the training run's (:mod:`jlml_lib.engine.evaluate`): the same features
(:func:`jlml_lib.protocols.feature_sets` with the run's image size, batch, flip and normalisation),
the same protocol code (:func:`jlml_lib.protocols.evaluate_features`, the run's AP convention and
seed), and the same records (:func:`jlml_lib.engine.evaluate.write_evaluation`: ``metrics.json``
with cluster-bootstrap intervals and ``queries.npz`` beside it). So on the run's own data it
reproduces the run's metrics exactly (tests/test_evaluate_model.py).

Two things differ from a run's own record:

* the record's variant carries ``trained_on`` (:data:`jlml_lib.results.records.TRAINED_ON`): the
  model's training data; the record's ``dataset`` is the tested-on data. A run's own records have
  ``trained_on = "same"``, so an evaluation made here never fills a paper-table cell;
* features are cached under ``$JLML_CACHE/features/`` keyed by the checkpoint's SHA-256, the image
  lists and every setting that changes a feature, so evaluating again (re-ranking, the other AP
  convention) costs the ranking only. The key holds image paths, not pixels: regenerate a dataset
  in place and pass ``--no-cache``.

Without ``--data-root`` the test set is the synthetic copy (labelled so in the record); on the
model's own training dataset it is exactly the run's data (its root, scale and split).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from jlml_lib import protocols
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.inference import AMP_MODES, TrainedModel, amp_context, file_sha256, load_model
from jlml_lib.paths import EVALUATIONS, FEATURE_CACHE, in_repo

__all__ = ["PROTOCOL_OPTIONS", "trained_on", "test_config", "load_test_data", "evaluate_model",
           "cross_dataset_matrix", "plot_cross_dataset_matrix", "main"]

#: ``--protocol`` per dataset: CUHK03's classic / new split (data option), Market-1501 with or without
#: the multi-query evaluation (its ``gt_bbox`` images); VIPeR and GRID have one protocol each
PROTOCOL_OPTIONS: dict[str, tuple[str, ...]] = {"cuhk03": ("classic", "new"),
                                                "market1501": ("multi-query", "single-query")}
#: the datasets a re-id model can be tested on (the others have no query/gallery)
TEST_DATASETS = ("market1501", "cuhk03", "viper", "grid")


def trained_on(tm: TrainedModel) -> str:
    """The variant value ``trained_on`` of a model: the record dataset name of its training data."""
    from jlml_lib.engine.evaluate import record_dataset_name

    return record_dataset_name(tm.config)


def test_config(tm: TrainedModel, dataset: str, *, data_root: str | None = None, protocol: str | None = None,
                split: int | None = None, images: str | None = None, synthetic_scale: float | None = None,
                ap: str | None = None, rerank: bool = False, features: str | None = None):
    """The model's TrainConfig pointed at the test data: its architecture, evaluation settings and
    seed stay, the dataset part is the test set's. On the model's own dataset with nothing else
    given it is the run's config (its data root, scale, seed and split)."""
    if dataset not in TEST_DATASETS:
        raise ConfigError(f"--dataset {dataset!r}: expected one of {TEST_DATASETS} (a test set with query and "
                          "gallery images)")
    allowed = PROTOCOL_OPTIONS.get(dataset, ())
    if protocol is not None and protocol not in allowed:
        raise ConfigError(f"--protocol {protocol!r} for {dataset}: expected one of {allowed}" if allowed else
                          f"--protocol: {dataset} has a single protocol; leave --protocol out")
    cfg = tm.config
    same = dataset == cfg.dataset and data_root is None and synthetic_scale is None
    opts = dict(cfg.data_options) if same else {}
    if dataset == "cuhk03":
        opts["protocol"] = protocol or opts.get("protocol", "classic")
        opts["images"] = images or opts.get("images", "labeled")
    elif images is not None:
        raise ConfigError("--images is CUHK03's (labeled / detected)")
    fields = dict(dataset=dataset, data_options=opts, split=cfg.split if same and split is None else int(split or 0),
                  data_root=cfg.data_root if same else data_root, eval_rerank=bool(rerank),
                  synthetic_scale=cfg.synthetic_scale if same else synthetic_scale,
                  synthetic_seed=cfg.synthetic_seed if same else 0)
    if ap is not None:
        fields["ap"] = ap
    if features is not None:
        fields["eval_features"] = features
    return dataclasses.replace(cfg, **fields).validate()


def load_test_data(cfg, protocol: str | None = None):
    """``(ReidDataset, source)`` of a test config, through the training run's own data path."""
    from jlml_lib.data import load_dataset, resolve_root
    from jlml_lib.engine.run import check_sources, components, dataset_options

    root, _ = resolve_root(cfg.dataset, cfg.data_root, scale=cfg.synthetic_scale, seed=cfg.synthetic_seed)
    ds = load_dataset(cfg.dataset, root, **dataset_options(cfg))
    if not ds.query or not ds.gallery:
        raise DataError(f"{cfg.dataset} ({ds.root}): no query/gallery images to evaluate on")
    if protocol == "single-query":  # Market-1501 without the multi-query means (no gt_bbox extraction)
        ds.extras = {k: v for k, v in ds.extras.items() if k != "gt_bbox"}
    return ds, check_sources(cfg, components(ds))


# ---------------------------------------------------------------- the feature cache
def _plain(value: Any) -> Any:
    """JSON for numpy scalars (some loaders give numpy ids and cameras): their Python value."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not part of a feature cache key")


def _cache_key(sha: str, ds, settings: Mapping[str, Any]) -> str:
    h = hashlib.sha256(sha.encode())
    for part in ("query", "gallery"):
        h.update(json.dumps([part, getattr(ds, part)], default=_plain).encode())
    h.update(json.dumps(["gt_bbox", ds.extras.get("gt_bbox") or []], default=_plain).encode())
    h.update(json.dumps(settings, sort_keys=True, default=_plain).encode())
    return h.hexdigest()[:40]


def _cache_file(key: str) -> Path:
    from jlml_lib.data.base import cache_dir

    return cache_dir() / FEATURE_CACHE / f"{key}.npz"


def _save_sets(path: Path, sets: Mapping[str, Any]) -> None:
    from jlml_lib.io import atomic_open

    arrays = {f"{part}_{i}": np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
              for part, fs in sets.items() if fs is not None for i, x in enumerate(fs)}
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _load_sets(path: Path) -> dict[str, Any] | None:
    try:
        with np.load(path) as z:
            def part(name):
                return (torch.from_numpy(z[f"{name}_0"]), z[f"{name}_1"], z[f"{name}_2"]) if f"{name}_0" in z else None
            return {p: part(p) for p in ("query", "gallery", "gt_bbox")}
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is extracted again


def cached_feature_sets(tm: TrainedModel, cfg, ds, *, kind: str, device: Any, amp: str = "off",
                        cache: bool = True, workers: int = 0) -> tuple[dict[str, Any], bool]:
    """:func:`jlml_lib.protocols.feature_sets` of the model on ``ds``, read from the cache when this model
    (file hash), these image lists and settings were extracted before. Returns ``(sets, from_cache)``."""
    batch = cfg.eval_batch(device)
    settings = {"image_size": list(cfg.image_size), "kind": kind, "flip": cfg.eval_flip,
                "normalize": cfg.eval_normalize, "amp": amp, "batch": batch, "device": torch.device(device).type}
    path = _cache_file(_cache_key(file_sha256(tm.checkpoint), ds, settings)) if cache else None
    if path is not None and path.is_file():
        sets = _load_sets(path)
        if sets is not None:
            return sets, True
    with amp_context(amp, device):
        sets = protocols.feature_sets(tm.net(cfg.eval_normalize), ds, image_size=cfg.image_size, device=device,
                                      batch_size=batch, kind=kind, flip=cfg.eval_flip, workers=workers)
    if path is not None:
        _save_sets(path, sets)
    return sets, False


# ---------------------------------------------------------------- one evaluation
def default_out(tm: TrainedModel, cfg, protocol: str | None) -> Path:
    """``runs/evaluations/<model>-on-<dataset>[-<protocol>][-split-NN]`` (the model: its run folder's name)."""
    ckpt = tm.checkpoint
    name = ckpt.parent.parent.name if ckpt.parent.name == "checkpoints" else ckpt.stem
    parts = [name, "on", cfg.dataset.replace("+", "-")]
    if cfg.dataset == "cuhk03":
        parts += [cfg.data_options.get("images", "labeled"), cfg.data_options.get("protocol", "classic")]
    elif protocol:
        parts.append(protocol)
    if cfg.dataset in ("viper", "grid") or (cfg.dataset == "cuhk03" and cfg.data_options.get("protocol") == "classic"):
        parts.append(f"split-{cfg.split:02d}")
    return in_repo(EVALUATIONS) / "-".join(parts)


def evaluate_model(model: str | Path | TrainedModel, dataset: str, *, data_root: str | None = None,
                   protocol: str | None = None, split: int | None = None, images: str | None = None,
                   rerank: bool = False, ap: str | None = None, features: str | None = None,
                   synthetic_scale: float | None = None, out: str | Path | None = None, amp: str = "off",
                   device: str = "cpu", cache: bool = True, workers: int = 0, write: bool = True) -> dict[str, Any]:
    """Evaluate a trained model on a test set; returns ``{"out", "source", "cached", "metrics": {key: result}}``
    (keys as a run's: ``joint``, ``joint+rerank``, ...) and, with ``write``, the records in ``out``."""
    from jlml_lib.engine.evaluate import RERANK, record_dirs, write_evaluation
    from jlml_lib.engine.evaluate import record_dataset_name
    from jlml_lib.engine.run import _record_source  # a mixed-source test set is recorded as synthetic, as in a run

    t0 = time.perf_counter()
    tm = model if isinstance(model, TrainedModel) else load_model(model, device)
    cfg = test_config(tm, dataset, data_root=data_root, protocol=protocol, split=split, images=images,
                      synthetic_scale=synthetic_scale, ap=ap, rerank=rerank, features=features)
    ds, source = load_test_data(cfg, protocol)
    if source != "real":
        print(f"jlml evaluate: testing on {source.upper()} {dataset} ({ds.root}); results are labelled so.",
              file=sys.stderr)
    results, cached = {}, []
    for kind in cfg.feature_kinds():
        sets, hit = cached_feature_sets(tm, cfg, ds, kind=kind, device=device, amp=amp, cache=cache, workers=workers)
        cached.append(hit)
        for rr in (False, True) if rerank else (False,):  # as engine.evaluate.evaluate_run
            res = protocols.evaluate_features(ds.protocol, sets["query"], sets["gallery"], ap=cfg.ap, seed=cfg.seed,
                                              gt_bbox=sets["gt_bbox"], rerank=rr or None)
            results[kind + (RERANK if rr else "")] = protocols.describe(res, ds, kind=kind, flip=cfg.eval_flip)
    out_dir = Path(out) if out is not None else default_out(tm, cfg, protocol)
    if write:
        wall = time.perf_counter() - t0
        model_info = {"checkpoint": str(tm.checkpoint), "sha256": file_sha256(tm.checkpoint),
                      "trained_on": trained_on(tm), "training_split": tm.config.split,
                      "training_source": _training_source(tm)}
        dirs = record_dirs(out_dir, list(results))
        for key, m in results.items():
            write_evaluation(cfg, dirs[key], metrics=m, feature=key, protocol=ds.protocol,
                             source=_record_source(source), wall=wall, device=torch.device(device).type,
                             extra={"evaluated_by": "jlml evaluate", "model": model_info, "tested_on": record_dataset_name(cfg),
                                    "split": ds.split, "num_splits": ds.num_splits, "features_cached": all(cached),
                                    "amp": amp, "eval_normalize": cfg.eval_normalize},
                             variant_extra={"trained_on": model_info["trained_on"]})
    else:
        for m in results.values():
            protocols.pop_queries(m)
    return {"out": out_dir, "source": source, "cached": all(cached), "metrics": results}


def _training_source(tm: TrainedModel) -> str:
    from jlml_lib.engine.checkpoint import load_checkpoint

    return str(load_checkpoint(tm.checkpoint).get("data", {}).get("source", "unknown"))


# ---------------------------------------------------------------- the cross-dataset matrix
def _section_key(metrics: Mapping[str, Any], metric: str) -> str:
    """Market-1501's single-query numbers sit under ``single_query`` (the top level repeats them)."""
    return f"single_query.{metric}" if isinstance(metrics.get("single_query"), Mapping) else metric


def cross_dataset_matrix(models: Mapping[str, str | Path], datasets: Sequence[str] | Mapping[str, Mapping[str, Any]],
                         *, out_root: str | Path, data_roots: Mapping[str, str] | None = None,
                         device: str = "cpu", **options: Any) -> pd.DataFrame:
    """Every model tested on every dataset: one row per (trained on, tested on) with Rank-1 and mAP (%)
    and their 95% intervals, the data source, and the record folder (``out_root/<model>/<dataset>``).

    ``models``: ``{row label: run folder or checkpoint}``; ``datasets``: names, or ``{column label:
    evaluate_model options}`` (e.g. ``{"cuhk03 new": {"dataset": "cuhk03", "protocol": "new"}}``).
    The diagonal is each model on its own data: the run's own result, reproduced.
    """
    from jlml_lib.results.intervals import record_interval
    from jlml_lib.results.records import read_metrics

    specs = {d: {"dataset": d} for d in datasets} if not isinstance(datasets, Mapping) else dict(datasets)
    rows = []
    for label, model in models.items():
        tm = load_model(model, device)
        for col, spec in specs.items():
            spec = dict(spec)
            name = spec.pop("dataset", col)
            root = (data_roots or {}).get(name)
            res = evaluate_model(tm, name, data_root=root, out=Path(out_root) / label / col, device=device,
                                 **{**options, **spec})
            rec = read_metrics(res["out"])
            row = {"trained_on": label, "tested_on": col, "source": rec["source"]}
            for metric, column in (("rank1", "Rank-1"), ("mAP", "mAP")):
                key = _section_key(rec["metrics"], metric)
                value = rec["metrics"].get(key.split(".")[0])
                value = value.get(metric) if isinstance(value, Mapping) else value
                iv = record_interval(rec, key)
                row[column] = 100 * value if value is not None else np.nan
                row[f"{column} low"] = 100 * iv.low if iv else np.nan
                row[f"{column} high"] = 100 * iv.high if iv else np.nan
            row["record"] = str(res["out"])
            rows.append(row)
    return pd.DataFrame(rows)


def plot_cross_dataset_matrix(frame: pd.DataFrame, metric: str = "Rank-1", title: str = "", path=None):
    """The matrix as an annotated heat map: rows trained on, columns tested on, each cell
    ``value`` and ``[low, high]`` (%); the diagonal (a model on its own data) is outlined."""
    import matplotlib.pyplot as plt

    from jlml_lib.results.plots import _finish

    rows = list(dict.fromkeys(frame["trained_on"]))
    cols = list(dict.fromkeys(frame["tested_on"]))
    grid = frame.pivot(index="trained_on", columns="tested_on", values=metric).reindex(index=rows, columns=cols)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(cols), 1.2 + 0.9 * len(rows)))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for _, r in frame.iterrows():
        i, j = rows.index(r["trained_on"]), cols.index(r["tested_on"])
        text = "-" if pd.isna(r[metric]) else f"{r[metric]:.1f}"
        if not pd.isna(r.get(f"{metric} low")):
            text += f"\n[{r[f'{metric} low']:.1f}, {r[f'{metric} high']:.1f}]"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if (pd.isna(r[metric]) or r[metric] < 50) else "black")
        if str(r["trained_on"]).split()[0] == str(r["tested_on"]).split()[0]:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="red"))
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    sources = sorted(set(frame["source"]))
    ax.set_title(title or f"{metric} (%) across datasets ({', '.join(sources)} data)")
    fig.colorbar(im, ax=ax, label=f"{metric} (%)")
    fig.tight_layout()
    return _finish(fig, path)


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jlml evaluate", description="Evaluate a trained model on a test set with "
                                "the training run's protocol code; records in --out (metrics.json, queries.npz).")
    p.add_argument("model", help="a run folder of `jlml train` or a checkpoint (.pt)")
    p.add_argument("--dataset", required=True, choices=TEST_DATASETS)
    p.add_argument("--data-root", help="the real test set; omitted: a synthetic copy (the run's own for its dataset)")
    p.add_argument("--protocol", help="cuhk03: classic | new; market1501: multi-query (default) | single-query")
    p.add_argument("--images", choices=("labeled", "detected"), help="CUHK03's crops (default labeled)")
    p.add_argument("--split", type=int, help="test split (VIPeR/GRID 0-9, CUHK03 classic 0-19); default the "
                   "model's own on its dataset, else 0")
    p.add_argument("--rerank", action="store_true", help="also k-reciprocal re-ranked (its own record)")
    p.add_argument("--ap", choices=("official", "standard"), help="AP convention (default the run's)")
    p.add_argument("--features", help="comma list of joint, global, local (default the run's eval_features)")
    p.add_argument("--synthetic-scale", type=float, help="scale of the synthetic test copy (default the dataset's)")
    p.add_argument("--out", help=f"record folder (default {EVALUATIONS}/<model>-on-<dataset>...)")
    p.add_argument("--amp", choices=AMP_MODES, default="off", help="bf16: bfloat16 autocast while extracting")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-cache", action="store_true", help="extract the features again (ignore the cache)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        res = evaluate_model(args.model, args.dataset, data_root=args.data_root, protocol=args.protocol,
                             split=args.split, images=args.images, rerank=args.rerank, ap=args.ap,
                             features=args.features, synthetic_scale=args.synthetic_scale, out=args.out,
                             amp=args.amp, device=args.device, cache=not args.no_cache)
    except (ConfigError, DataError) as exc:
        print(f"jlml evaluate: {exc}", file=sys.stderr)
        return 2
    for key, m in res["metrics"].items():
        sq = m.get("single_query", m)
        print(f"{key}: Rank-1 {100 * sq['rank1']:.1f}%  mAP {100 * sq['mAP']:.1f}%  ({res['source']} data"
              f"{', cached features' if res['cached'] else ''})")
    print(f"records: {res['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
