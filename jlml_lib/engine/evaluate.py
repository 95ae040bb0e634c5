"""Evaluation and records at the end of a training run (paper §2.3; design §8).

* re-id datasets: ``protocols.evaluate`` on each requested feature kind (joint 1,024-d by
  default, L2 distance; ``eval_normalize`` L2-normalises features first, off by default);
  one ``metrics.json`` per kind via ``records.write_metrics`` — joint in the run folder, the
  others in ``eval-<kind>/`` — with the ablation switches as the record's ``variant``; beside
  each, its per-query results (``queries.npz``) and in it their 95% intervals (issue 12,
  :func:`write_evaluation`);
* ImageNet pre-training (no query/gallery): top-1 of the ID classifiers on the validation
  images, kept in ``summary.json`` (no table reads it).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from jlml_lib import protocols
from jlml_lib.data import build_loader
from jlml_lib.engine.config import TrainConfig
from jlml_lib.engine.distributed import DistInfo
from jlml_lib.paths import JOINT, RunDir
from jlml_lib.results.intervals import run_uncertainty
from jlml_lib.results.queries import write_queries
from jlml_lib.results.records import write_metrics

__all__ = ["record_dataset_name", "device_label", "limit_test_set", "evaluate_run", "record_dirs",
           "classification_accuracy", "write_record", "write_evaluation"]


def record_dataset_name(cfg: TrainConfig) -> str:
    """The ``dataset`` key of metrics.json (jlml_lib.results.records): CUHK03 names its images."""
    if cfg.dataset == "cuhk03":
        return "cuhk03-" + str(cfg.data_options.get("images", "labeled"))
    return cfg.dataset


def device_label(device: torch.device, info: DistInfo) -> str:
    name = "cpu" if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{name} x{info.world_size} (DDP)" if info.distributed else name


# ---------------------------------------------------------------- evaluation
class _Normalised(nn.Module):
    """The model with L2-normalised test features (``eval_normalize=true``; off by default, §2.3)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    @torch.no_grad()
    def features(self, x, kind: str = "joint"):
        return nn.functional.normalize(self.model.features(x, kind), dim=1)


#: the key of a re-ranked evaluation in a run's metrics: "joint+rerank" (its own records and variant)
RERANK = "+rerank"


def evaluation_keys(cfg: TrainConfig) -> list[str]:
    """The evaluations a run records: each feature kind, and each re-ranked when ``eval_rerank``."""
    kinds = cfg.feature_kinds()
    return kinds + ([k + RERANK for k in kinds] if cfg.eval_rerank else [])


def parse_key(key: str) -> tuple[str, bool]:
    """``"joint+rerank"`` -> ``("joint", True)``."""
    return key.removesuffix(RERANK), key.endswith(RERANK)


def limit_test_set(ds, limit: int):
    """``ds`` with its first ``limit`` queries and a gallery that keeps them evaluable (``eval_limit``,
    the preflight's quick evaluation): every gallery image of those queries' identities, plus the
    first ``limit`` other gallery images (negatives and distractors); Market-1501's ``gt_bbox`` (the
    multi-query boxes) keeps those identities' boxes. ``limit`` 0 (or beyond the queries): ``ds``."""
    if not limit or limit >= len(ds.query):
        return ds
    query = ds.query[:limit]
    pids = {p for _, p, _ in query}
    others = [i for i, g in enumerate(ds.gallery) if g[1] not in pids][:limit]
    keep = set(others) | {i for i, g in enumerate(ds.gallery) if g[1] in pids}
    gallery = [g for i, g in enumerate(ds.gallery) if i in keep]  # in the gallery's own order
    extras = dict(ds.extras)
    if extras.get("gt_bbox"):
        extras["gt_bbox"] = [b for b in extras["gt_bbox"] if b[1] in pids]
    return dataclasses.replace(ds, query=query, gallery=gallery, extras=extras)


def evaluate_run(cfg: TrainConfig, model: nn.Module, ds, device: torch.device) -> dict[str, dict]:
    """The dataset's protocol for each requested feature kind -> {key: metrics dict}; features are
    extracted once per kind and, with ``eval_rerank``, ranked again after k-reciprocal re-ranking.
    ``eval_limit``: a slice of the test set only (:func:`limit_test_set`)."""
    ds = limit_test_set(ds, cfg.eval_limit)
    net = _Normalised(model) if cfg.eval_normalize else model
    net.eval()
    results = {}
    for kind in cfg.feature_kinds():
        sets = protocols.feature_sets(net, ds, image_size=cfg.image_size, device=device,
                                      batch_size=cfg.eval_batch(device), kind=kind, flip=cfg.eval_flip,
                                      workers=cfg.workers)
        for rerank in (False, True) if cfg.eval_rerank else (False,):
            out = protocols.evaluate_features(ds.protocol, sets["query"], sets["gallery"], ap=cfg.ap,
                                              seed=cfg.seed, gt_bbox=sets["gt_bbox"], rerank=rerank or None)
            results[kind + (RERANK if rerank else "")] = protocols.describe(out, ds, kind=kind, flip=cfg.eval_flip)
    return results


def record_dirs(out_dir: Path, keys: Sequence[str]) -> dict[str, list[Path]]:
    """Where each evaluation's metrics.json goes: joint in ``out_dir``, other kinds in ``eval-<kind>/``,
    re-ranked ones in ``eval-<kind>-rerank/``.

    Without joint, the first kind is also written to ``out_dir`` so the run folder always holds
    one record.
    """
    dirs = {k: [RunDir(out_dir).eval_dir(*parse_key(k))] for k in keys}
    if keys and JOINT not in dirs:
        dirs[keys[0]].append(out_dir)
    return dirs


@torch.no_grad()
def classification_accuracy(cfg: TrainConfig, model: nn.Module, items, device: torch.device) -> dict:
    """Top-1 of each ID classifier on held-out items (ImageNet val after pre-training)."""
    model.eval()
    hits: dict[str, int] = {}
    total = 0
    for x, y, _ in build_loader(items, image_size=cfg.image_size, train=False,
                                batch_size=cfg.eval_batch(device), workers=cfg.workers):
        out = model(x.to(device))
        y = y.to(device)
        for k, logits in (("global", out.global_logits), ("local", out.local_logits), ("joint", out.joint_logits)):
            if logits is not None:  # MultiLoss: global and local classifiers; UniLoss: the joint one
                hits[k] = hits.get(k, 0) + int((logits.argmax(1) == y).sum())
        total += len(y)
    return {f"top1_{k}": v / total for k, v in hits.items()}


def write_record(cfg: TrainConfig, out_dir: Path, *, metrics: dict, feature: str, protocol: str,
                 source: str, wall: float, device: str, extra: dict, variant_extra: dict | None = None,
                 selection: dict | None = None, uncertainty: dict | None = None, start: dict | None = None) -> Path:
    """One metrics.json; ``variant_extra`` adds a run kind's own variant key (e.g. seed aggregates),
    ``uncertainty`` its intervals (:mod:`jlml_lib.results.intervals`), ``start`` where the model
    started (:mod:`jlml_lib.provenance`)."""
    feature, rerank = parse_key(feature)
    variant_extra = {**(variant_extra or {}), **({"rerank": True} if rerank else {})}
    return write_metrics(out_dir, metrics=metrics, config=cfg.to_dict(), dataset=record_dataset_name(cfg),
                         source=source, profile=cfg.profile, protocol=protocol, wall_time_s=wall,
                         device=device, extra=extra, variant={**cfg.variant(feature), **(variant_extra or {})},
                         selection=selection, uncertainty=uncertainty, start=start)


def write_evaluation(cfg: TrainConfig, dirs: Sequence[Path], *, metrics: dict, feature: str, **record) -> None:
    """One evaluation's records: in each folder of ``dirs`` its ``queries.npz`` first, then its
    ``metrics.json`` with the cluster-bootstrap intervals of the saved queries. ``metrics`` is the
    protocol's result; its per-query results are taken out of it (it is JSON-ready afterwards)."""
    queries = protocols.pop_queries(metrics)
    uncertainty = run_uncertainty(queries)
    for d in dirs:
        if queries:  # written first: a record folder with a metrics.json always has its queries
            write_queries(d, queries)
        write_record(cfg, d, metrics=metrics, feature=feature, uncertainty=uncertainty, **record)
