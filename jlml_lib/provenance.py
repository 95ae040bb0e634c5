"""Where a run started, and whether that start is the paper's recipe (issue 19; §3 "Implementation", Table 4).

The paper: "We started by pre-training the JLML model on ImageNet (ILSVRC2012). Subsequently, for
CUHK03 or Market, [...] ImageNet → CUHK03/Market; For VIPeR or GRID, we pre-trained JLML on
CUHK03+Market [...] ImageNet → CUHK03+Market → VIPeR/GRID." A number on real data is the paper's
experiment only when its model started that way, so every run records its start
(:func:`start_of`) — in ``config.json``, ``summary.json``, the checkpoints' ``data`` and the optional
``start`` field of ``metrics.json`` — and the tables say it (:func:`start_label`) and judge it
(:func:`recipe_gap`).

A start is one of::

    {"kind": "scratch"}                                   no --init
    {"kind": "checkpoint", "path", "sha256",              the --init file and its hash;
     "dataset", "source", "profile", "iteration",         what that checkpoint's run trained on, how long;
     "start": <the checkpoint's own start>}               the chain behind it (recursively)
    {"kind": "unknown"}                                   not recorded (a record or checkpoint written
                                                          before issue 19; a bare state_dict's origin)

The chain is copied into each run's own files, so it stays readable when the upstream run folder
is gone.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from jlml_lib.errors import ConfigError, DataError

SCRATCH, CHECKPOINT, UNKNOWN = "scratch", "checkpoint", "unknown"
START_KINDS = (SCRATCH, CHECKPOINT, UNKNOWN)
UNKNOWN_START: dict[str, Any] = {"kind": UNKNOWN}
#: §3's chains: the stages a real fine-tuning run's model must have passed through, nearest first
RECIPE: dict[str, tuple[str, ...]] = {
    "market1501": ("imagenet",),
    "cuhk03": ("imagenet",),
    "viper": ("cuhk03+market1501", "imagenet"),
    "grid": ("cuhk03+market1501", "imagenet"),
}
#: Table 4's two rows: "Train" (the ``paper`` profile) and "Pre-train" (``pretrain``)
PAPER_PROFILES = ("paper", "pretrain")
#: how the tables and banners name a dataset of a chain
DATASET_LABELS = {"imagenet": "ImageNet", "cuhk03+market1501": "CUHK03+Market-1501", "market1501": "Market-1501",
                  "cuhk03": "CUHK03", "viper": "VIPeR", "grid": "GRID"}
#: the flag of a real result that did not start as Table 4 says
NOT_RECIPE = "not the paper's recipe"
NOT_RECORDED = "start not recorded: not verified as the paper's recipe"
_MAX_DEPTH = 8  # a chain longer than this is a corrupt record, not a training history


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(str(name), str(name))


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- what a checkpoint says about itself
def _legacy_start(config: Mapping[str, Any]) -> dict[str, Any]:
    """The start of a checkpoint written before starts were recorded: its config's ``init`` tells
    from scratch (None) apart from "some checkpoint" (whose origin is not recorded)."""
    if "init" in config and not config["init"]:
        return {"kind": SCRATCH}
    return dict(UNKNOWN_START)


def checkpoint_facts(ckpt: Mapping[str, Any] | None) -> dict[str, Any]:
    """Dataset, source, profile, iteration and own start of a loaded jlml checkpoint (``None``: a
    bare state_dict, which says nothing about where it came from)."""
    if not isinstance(ckpt, Mapping):
        return {"dataset": UNKNOWN, "source": UNKNOWN, "profile": UNKNOWN, "iteration": None,
                "start": dict(UNKNOWN_START)}
    data, config = ckpt.get("data") or {}, ckpt.get("config") or {}
    return {"dataset": str(data.get("dataset") or config.get("dataset") or UNKNOWN),
            "source": str(data.get("source") or UNKNOWN), "profile": str(config.get("profile") or UNKNOWN),
            "iteration": ckpt.get("iteration"),
            "start": dict(data["start"]) if isinstance(data.get("start"), Mapping) else _legacy_start(config)}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    """The jlml checkpoint at ``path`` (None when it is a bare state_dict or not a jlml checkpoint)."""
    from jlml_lib.engine.checkpoint import load_checkpoint  # torch: only when a checkpoint is read

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: --init checkpoint not found. Give the final.pt of the earlier stage "
                          "(e.g. runs/03_imagenet_pretraining/checkpoints/final.pt), or no init to train from scratch.")
    try:
        return load_checkpoint(p)
    except ConfigError:
        return None  # --init also accepts a bare state_dict; loading it later says if it is unusable


def start_of(init: str | os.PathLike | None) -> dict[str, Any]:
    """The start a run records for ``--init`` ``init`` (None: from scratch)."""
    if not init:
        return {"kind": SCRATCH}
    path = Path(init)
    ckpt = read_checkpoint(path)
    return {"kind": CHECKPOINT, "path": str(path), "sha256": sha256_of(path), **checkpoint_facts(ckpt)}


def run_start(init: str | os.PathLike | None, resumed_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """A run's start; a resumed run keeps the one its checkpoint recorded (the ``--init`` file may have
    changed since the weights were taken from it)."""
    if resumed_from is not None:
        saved = read_checkpoint(resumed_from)
        recorded = (saved or {}).get("data", {}).get("start")
        if isinstance(recorded, Mapping):
            return dict(recorded)
    return start_of(init)


# ---------------------------------------------------------------- reading it back
def record_start(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The start of a record; one written before issue 19 has none: "unknown"."""
    start = rec.get("start")
    return dict(start) if isinstance(start, Mapping) else dict(UNKNOWN_START)


def check_start(start: Any, where: str) -> None:
    """Refuse a malformed ``start`` field (the optional field of metrics.json)."""
    depth = 0
    while True:
        if not isinstance(start, Mapping) or start.get("kind") not in START_KINDS:
            raise DataError(f"{where}: 'start' must be {{'kind': one of {list(START_KINDS)}, ...}}, got {start!r}; "
                            "write it with jlml_lib.provenance.start_of().")
        if start["kind"] != CHECKPOINT:
            return
        depth += 1
        if depth > _MAX_DEPTH:
            raise DataError(f"{where}: 'start' chain deeper than {_MAX_DEPTH} stages; the record is corrupt.")
        start = start.get("start", UNKNOWN_START)


def chain(start: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checkpoints behind a start, nearest first, and the final non-checkpoint start last."""
    out = []
    for _ in range(_MAX_DEPTH + 1):
        out.append(dict(start))
        if start.get("kind") != CHECKPOINT:
            break
        start = start.get("start") or UNKNOWN_START
    return out


def start_label(start: Mapping[str, Any]) -> str:
    """E.g. "from scratch", "from ImageNet (real, pretrain)",
    "from CUHK03+Market-1501 (real, paper) ← ImageNet (real, pretrain)", "start unknown"."""
    stages = chain(start)
    if stages[0]["kind"] == SCRATCH:
        return "from scratch"
    if stages[0]["kind"] != CHECKPOINT:
        return "start unknown"
    parts = []
    for s in stages:
        if s["kind"] == CHECKPOINT and s.get("dataset", UNKNOWN) == UNKNOWN:
            parts.append(f"a checkpoint of unknown origin (sha256 {str(s.get('sha256'))[:12]})")
        elif s["kind"] == CHECKPOINT:
            parts.append(f"{dataset_label(s['dataset'])} ({s.get('source', UNKNOWN)}, {s.get('profile', UNKNOWN)})")
        elif s["kind"] == UNKNOWN:
            parts.append("start unknown")
    return "from " + " ← ".join(parts)


# ---------------------------------------------------------------- the paper's recipe
def start_gap(start: Mapping[str, Any], stages: tuple[str, ...]) -> str | None:
    """Why ``start`` is not the chain ``stages`` of real, Table 4 checkpoints (None when it is).

    "unknown" (not recorded) is a gap too: it cannot be shown to be the paper's recipe."""
    prev = None
    for stage in stages:
        after = f" before {dataset_label(prev)}" if prev else ""
        kind = start.get("kind")
        if kind == UNKNOWN:
            return NOT_RECORDED if prev is None else (
                f"start of the {dataset_label(prev)} checkpoint not recorded: not verified as the paper's recipe")
        if kind == SCRATCH:
            return f"{NOT_RECIPE}: no {dataset_label(stage)} start{after}"
        label = dataset_label(start.get("dataset", UNKNOWN))
        if start.get("dataset") != stage:
            what = "a checkpoint of unknown origin" if start.get("dataset", UNKNOWN) == UNKNOWN else label
            return f"{NOT_RECIPE}: starts from {what}{after}, not {dataset_label(stage)}"
        if start.get("source") != "real":
            return f"{NOT_RECIPE}: {start.get('source', UNKNOWN)} {label} start{after}"
        if start.get("profile") not in PAPER_PROFILES:
            return f"{NOT_RECIPE}: {label} start{after} has profile {start.get('profile', UNKNOWN)}"
        prev, start = stage, start.get("start") or UNKNOWN_START
    return None  # ImageNet's own start is not part of the recipe (the paper trains it from scratch)


def base_dataset(name: str) -> str:
    """"cuhk03-labeled" -> "cuhk03" (the recipe does not depend on the annotation)."""
    return str(name).lower().split("-")[0] if str(name).lower().startswith("cuhk03-") else str(name).lower()


def recipe_gap(rec: Mapping[str, Any]) -> str | None:
    """Why a REAL result is not the paper's experiment: its profile is not Table 4's, or its model did
    not start as §3 says (:data:`RECIPE`). None when it is, or when the question does not arise
    (synthetic data, which is never compared with the paper; a kind or dataset without a recipe)."""
    if rec.get("kind") != "evaluation" or rec.get("source") != "real":
        return None
    stages = RECIPE.get(base_dataset(rec.get("dataset", "")))
    if stages is None:
        return None
    if rec.get("profile") != "paper":
        return f"{NOT_RECIPE}: profile {rec.get('profile') or '-'}"
    return start_gap(record_start(rec), stages)
