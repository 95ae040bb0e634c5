"""Run records: every result a run produces is one ``metrics.json`` (design §8).

``jlml tables`` (:mod:`jlml_lib.results.tables`) fills the paper-vs-ours tables from these files
only, so a number in ``results/tables/`` is never typed by hand. A folder may hold one record;
put several evaluations of one run in sub-folders (e.g. ``<run>/eval-global/metrics.json``).

Schema (``schema_version`` 1) — keys of ``metrics.json``
---------------------------------------------------------
Written by the caller (required)::

    kind          "evaluation" | "dataset_stats" | "complexity"
    dataset       "market1501" | "cuhk03-labeled" | "cuhk03-detected" | "viper" | "grid"
                  (dataset_stats: also "cuhk03"; complexity: "" — not tied to a dataset)
    protocol      the dataset's protocol name (``ReidDataset.protocol``), e.g. "market1501",
                  "cuhk03-classic" / "cuhk03-new" (only a protocol containing "classic" fills
                  Table 5), "viper", "grid"
    source        "real" | "synthetic"  (synthetic numbers are always labelled as such)
    profile       "smoke" | "paper" | ...  (the training profile)
    metrics       dict, see below
    config        dict, the run's full configuration
    wall_time_s   float, seconds
    device        str, e.g. "cpu", "cuda", "cuda x4 (DDP)"
    variant       dict, ablation switches; missing keys take the full-JLML default:
                  {"feature": "joint"|"global"|"local", "loss": "multi"|"uni",
                   "shared_conv1": bool, "sfl": bool}   (default joint/multi/true/true)
    extra         dict, anything else (free). Read by the tables: ``aggregated_over`` (int, the
                  number of splits a mean covers: the record with most splits fills a cell,
                  the newest among equals) and ``convention`` (complexity records).

Added by :func:`write_metrics`::

    schema_version  1
    run_id          "<UTC yyyymmddTHHMMSSZ>-<8 hex>" (unique, sorts by time)
    created         ISO-8601 UTC timestamp (the newest record wins a table cell)
    git             {"commit": sha | "unknown", "dirty": bool | None}
    versions        {"python", "torch", "torchvision", "numpy", "jlml_lib"}
    hardware        {"platform", "machine", "cpu_model", "cpu_count", "cuda_devices": [names]}
                    (no hostname, no user name)

Optional, added when given (older records lack them and are read as before)::

    selection        the trained model's group-sparsity statistics (issue 11)
    intervals        {section: {metric: {"estimate", "low", "high"}}} (issue 12): the 95% interval of
                     each metric, fractions like the metrics; ``section`` is "top" for the top-level
                     metrics, "single_query" / "multi_query" for Market-1501's nested ones
                     (``jlml_lib.results.queries.section_of`` maps a dotted metric key to it)
    interval_method  {"name", "over", "level", ...}: how ``intervals`` was computed -- "cluster-bootstrap"
                     (one evaluation, test identities resampled), "split-stratified-bootstrap" (a split
                     aggregate) or "t-over-seeds" (a seed aggregate); ``jlml_lib.results.intervals``
    t_summary        aggregates only: {"over": "splits" | "seeds", "level", "sections": {section:
                     {metric: {"mean", "std", "n", "interval"}}}}: sample std and t-interval of the mean
    start            where the run's model started (issue 19, :mod:`jlml_lib.provenance`): {"kind":
                     "scratch"}, or {"kind": "checkpoint", "path", "sha256", "dataset", "source",
                     "profile", "iteration", "start": <that checkpoint's own start>}; a record without
                     it reads as {"kind": "unknown"} (``provenance.record_start``)

Beside every evaluation's metrics.json (issue 12), ``queries.npz`` keeps what each query scored
(``jlml_lib.results.queries``); a split or seed aggregate has none (its splits' and seeds' do).

``metrics`` by kind (nested dicts are read as dotted keys: ``{"single_query": {"rank1": x}}``
is ``single_query.rank1``; every accuracy is a **fraction in [0, 1]**, tables show %):

- ``evaluation`` on ``market1501`` (Tables 6, 9–12): ``single_query.rank1``,
  ``single_query.mAP``, ``multi_query.rank1``, ``multi_query.mAP``. The output of
  ``protocols.evaluate`` for each query type fits as is (``cmc`` list, ``rank5`` ... are kept
  and plotted). The variant selects the table row: Table 6 needs the default variant;
  Table 9 varies ``feature``; Table 10 ``loss`` × ``feature``; Table 11 ``shared_conv1``;
  Table 12 ``sfl`` (the other switches at their default).
- ``evaluation`` on ``cuhk03-labeled`` / ``cuhk03-detected`` (protocol "…classic…", Table 5),
  ``viper`` (Table 7), ``grid`` (Table 8): ``rank1``, ``rank5``, ``rank10``, ``rank20``
  (optionally ``cmc``, ``mAP``, ``*_std``), default variant. A mean over splits may store a
  metric as the number or as ``{"mean": m, "std": s}``; put ``extra.aggregated_over = N``.
- ``dataset_stats`` (Table 2), dataset ``viper`` | ``grid`` | ``cuhk03`` | ``market1501``:
  ``cams``, ``ids``, ``train_ids``, ``test_ids``, ``labelled``, ``detected`` (integers).
- ``complexity`` (Table 13): ``{model_key: {"flops": float, "params": int, ...}}`` with
  model_key in ``jlml_resnet39``, ``alexnet``, ``vgg16``, ``resnet50``, ``googlenet``; ``params``
  is a plain count (Table 13 shows millions); say the counting convention in ``extra``.

Use :func:`write_metrics` for evaluations, :func:`write_dataset_stats` and
:func:`write_complexity` for the other two kinds; read with :func:`read_metrics`.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import uuid
from pathlib import Path
from typing import Any, Mapping

from jlml_lib import __version__
from jlml_lib.engine.config import STUDIES
from jlml_lib.errors import DataError
from jlml_lib.io import write_json
from jlml_lib.model import FEATURE_KINDS, FEATURE_LAYERS, HEADS
from jlml_lib.paths import METRICS, REPO_ROOT
from jlml_lib.provenance import check_start

SCHEMA_VERSION = 1
KINDS = ("evaluation", "dataset_stats", "complexity")
SOURCES = ("real", "synthetic")
# A run kind added later (feature layer, seed aggregate, ...) gets its own key here with a default
# equal to what every earlier record was, so old records keep their cells and new kinds never
# take a cell that is not theirs.
DEFAULT_VARIANT: dict[str, Any] = {"feature": "joint", "loss": "multi", "shared_conv1": True, "sfl": True,
                                   "feature_layer": "bn", "aggregate": "none", "rerank": False, "lambda": "paper",
                                   "study": "none", "trained_on": "same"}
#: issue 20: the training data of a model that `jlml evaluate` tested ("same": a run's own evaluation, every
#: record before); the tested-on dataset is the record's ``dataset``. Any other value never fills a cell.
TRAINED_ON = ("same", "market1501", "cuhk03-labeled", "cuhk03-detected", "viper", "grid", "cuhk03+market1501",
              "imagenet")
VARIANT_CHOICES: dict[str, tuple] = {
    "feature": FEATURE_KINDS,
    "loss": HEADS,
    "shared_conv1": (True, False),
    "sfl": (True, False),
    "feature_layer": FEATURE_LAYERS,     # issue 11: Linear→BN→ReLU ("bn", every record before) or "plain"
    "aggregate": ("none", "seeds"),      # "seeds": mean over --seeds runs (a split mean stays "none")
    "rerank": (False, True),             # issue 13: k-reciprocal re-ranked evaluation (beyond the paper)
    "lambda": ("paper", "custom"),       # Eq. (5)'s λ: the paper's 5e-4 for both terms, or another (with SFL on)
    "study": STUDIES,                    # a run made for a study beyond the tables (08's selection grid)
    "trained_on": TRAINED_ON,            # issue 20: `jlml evaluate` of a model trained on this dataset
}
#: a dataset_stats record's metrics: Table 2's columns (the tables read them from here)
STATS_KEYS = ("cams", "ids", "train_ids", "test_ids", "labelled", "detected")
REQUIRED_KEYS = (
    "schema_version", "kind", "run_id", "created", "dataset", "protocol", "source", "profile",
    "metrics", "config", "wall_time_s", "device", "variant",
)
METRICS_FILENAME = METRICS  # the old name; jlml_lib.paths owns it
#: optional top-level fields of an evaluation record about its uncertainty (issue 12)
UNCERTAINTY_KEYS = ("intervals", "interval_method", "t_summary")


# ---------------------------------------------------------------- provenance helpers
def git_state(cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}``; ``"unknown"``/``None`` outside a git checkout."""
    cwd = Path(cwd) if cwd is not None else REPO_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        # untracked (not ignored) files count: an uncommitted new module changes results too
        status = subprocess.run(["git", "status", "--porcelain"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": bool(status.strip())}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "jlml_lib": __version__}
    for name in ("torch", "torchvision", "numpy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware_description() -> dict[str, Any]:
    """CPU model and core count, CUDA device names; deliberately no hostname."""
    cuda: list[str] = []
    try:  # imported here: a broken CUDA/torch install must not stop a record from being written
        import torch

        if torch.cuda.is_available():
            cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a result from being recorded
        cuda = []
    return {"platform": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "cuda_devices": cuda}


def new_run_id(now: _dt.datetime | None = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- validation
def normalize_variant(variant: Mapping[str, Any] | None, *, where: str = "variant") -> dict[str, Any]:
    """Fill missing ablation switches with the full-JLML defaults; reject unknown ones."""
    out = dict(DEFAULT_VARIANT)
    for key, value in dict(variant or {}).items():
        if key not in VARIANT_CHOICES:
            raise DataError(f"{where}: unknown variant key {key!r}; expected some of "
                            f"{sorted(VARIANT_CHOICES)} (defaults {DEFAULT_VARIANT}).")
        if value not in VARIANT_CHOICES[key] or type(value) is not type(VARIANT_CHOICES[key][0]):
            raise DataError(f"{where}: variant {key}={value!r}; expected one of {VARIANT_CHOICES[key]}.")
        out[key] = value
    return out


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "."))
        else:
            flat[name] = value
    return flat


def _is_fraction_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf == "mAP" or (leaf.startswith("rank") and leaf[4:].isdigit())


def _check_record(rec: Mapping[str, Any], where: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; a metrics.json needs {list(REQUIRED_KEYS)}. "
                        "Write it with jlml_lib.results.records.write_metrics().")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise DataError(f"{where}: schema_version {rec['schema_version']!r}, this jlml_lib reads "
                        f"{SCHEMA_VERSION}; re-run the evaluation or upgrade jlml_lib.")
    if rec["kind"] not in KINDS:
        raise DataError(f"{where}: kind {rec['kind']!r}; expected one of {KINDS}.")
    if rec["source"] not in SOURCES:
        raise DataError(f"{where}: source {rec['source']!r}; expected one of {SOURCES}.")
    if not isinstance(rec["metrics"], Mapping) or not isinstance(rec["config"], Mapping):
        raise DataError(f"{where}: 'metrics' and 'config' must be JSON objects.")
    normalize_variant(rec["variant"], where=where)
    for key, value in flatten_metrics(rec["metrics"]).items():
        if _is_fraction_key(key) and isinstance(value, (int, float)) and not (
                math.isfinite(value) and 0.0 <= value <= 1.0):
            raise DataError(f"{where}: metric {key} = {value!r}; accuracies are stored as fractions "
                            "in [0, 1] (the tables convert to %). Divide percentages by 100.")
    _check_uncertainty(rec, where)
    if "start" in rec:
        check_start(rec["start"], where)
    if rec["kind"] == "dataset_stats":
        absent = [k for k in STATS_KEYS if k not in rec["metrics"]]
        if absent:
            raise DataError(f"{where}: dataset_stats record lacks {absent} (needs {list(STATS_KEYS)}).")
    if rec["kind"] == "complexity":
        for model, vals in rec["metrics"].items():
            if not isinstance(vals, Mapping) or "flops" not in vals or "params" not in vals:
                raise DataError(f"{where}: complexity entry {model!r} needs 'flops' and 'params'.")


def _check_interval(value: Any, where: str) -> None:
    ok = isinstance(value, Mapping) and all(
        isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool) and math.isfinite(value[k])
        for k in ("estimate", "low", "high"))
    if not ok or value["low"] > value["high"]:
        raise DataError(f"{where}: expected {{'estimate', 'low', 'high'}} finite numbers with low <= high, got {value!r}")


def _check_uncertainty(rec: Mapping[str, Any], where: str) -> None:
    """The optional issue-12 fields, when present: interval triples where intervals are expected."""
    intervals = rec.get("intervals")
    if intervals is not None:
        if not isinstance(intervals, Mapping) or not all(isinstance(v, Mapping) for v in intervals.values()):
            raise DataError(f"{where}: 'intervals' must be {{section: {{metric: interval}}}}")
        for section, metrics in intervals.items():
            for metric, value in metrics.items():
                _check_interval(value, f"{where}: intervals.{section}.{metric}")
        if not isinstance(rec.get("interval_method"), Mapping) or "name" not in rec["interval_method"]:
            raise DataError(f"{where}: 'intervals' without an 'interval_method' naming how they were computed")
    t = rec.get("t_summary")
    if t is not None:
        if not isinstance(t, Mapping) or not isinstance(t.get("sections"), Mapping):
            raise DataError(f"{where}: 't_summary' must hold 'over', 'level' and 'sections'")
        for section, metrics in t["sections"].items():
            for metric, value in metrics.items():
                _check_interval(value.get("interval") if isinstance(value, Mapping) else None,
                                f"{where}: t_summary.{section}.{metric}")


# ---------------------------------------------------------------- write / read
def write_metrics(out_dir: str | os.PathLike, *, metrics: dict, config: dict, dataset: str,
                  source: str, profile: str, protocol: str, wall_time_s: float, device: str,
                  extra: dict | None = None, variant: dict | None = None,
                  kind: str = "evaluation", selection: dict | None = None,
                  uncertainty: Mapping[str, Any] | None = None, start: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/metrics.json`` atomically, with provenance; returns its path.

    ``selection`` (optional, since issue 11): the group-sparsity statistics of the trained
    model's feature layers (:func:`jlml_lib.selection.summary`), stored beside the metrics.
    ``uncertainty`` (optional, since issue 12): some of :data:`UNCERTAINTY_KEYS`, stored as
    top-level fields (:mod:`jlml_lib.results.intervals` computes them).
    ``start`` (optional, since issue 19): where the run's model started (:func:`jlml_lib.provenance.start_of`)."""
    path = Path(out_dir) / METRICS
    now = _dt.datetime.now(_dt.timezone.utc)
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": new_run_id(now),
        "created": now.isoformat(timespec="microseconds"),
        "dataset": dataset,
        "protocol": protocol,
        "source": source,
        "profile": profile,
        "variant": normalize_variant(variant, where=str(path)),
        "metrics": metrics,
        "config": config,
        "wall_time_s": float(wall_time_s),
        "device": device,
        "extra": dict(extra or {}),
        "git": git_state(),
        "versions": library_versions(),
        "hardware": hardware_description(),
    }
    if selection is not None:
        record["selection"] = dict(selection)
    if start is not None:
        record["start"] = dict(start)
    unknown = set(uncertainty or {}) - set(UNCERTAINTY_KEYS)
    if unknown:
        raise DataError(f"{path} (not written): unknown uncertainty field(s) {sorted(unknown)}; "
                        f"expected some of {list(UNCERTAINTY_KEYS)}")
    record.update({k: v for k, v in (uncertainty or {}).items() if v is not None})
    # validate before writing: a bad record is refused here, not discovered by `jlml tables`
    _check_record(json.loads(json.dumps(record, default=str)), f"{path} (not written)")
    return write_json(path, record)


def write_dataset_stats(out_dir: str | os.PathLike, *, dataset: str, source: str, cams: int,
                        ids: int, train_ids: int, test_ids: int, labelled: int, detected: int,
                        protocol: str = "", profile: str = "", config: dict | None = None,
                        wall_time_s: float = 0.0, device: str = "cpu",
                        extra: dict | None = None) -> Path:
    """A Table 2 record (one dataset)."""
    stats = dict(cams=cams, ids=ids, train_ids=train_ids, test_ids=test_ids,
                 labelled=labelled, detected=detected)
    return write_metrics(out_dir, metrics={k: int(v) for k, v in stats.items()}, config=config or {},
                         dataset=dataset, source=source, profile=profile, protocol=protocol,
                         wall_time_s=wall_time_s, device=device, extra=extra, kind="dataset_stats")


def write_complexity(out_dir: str | os.PathLike, *, models: Mapping[str, Mapping[str, Any]],
                     convention: str, config: dict | None = None, wall_time_s: float = 0.0,
                     device: str = "cpu", extra: dict | None = None) -> Path:
    """A Table 13 record: ``models = {"jlml_resnet39": {"flops": ..., "params": ...}, ...}``.

    Complexity does not depend on data, so ``source`` is "real" (a measured model, nothing
    synthetic about it); ``convention`` (e.g. "multiply-accumulates at 224x224, classifiers
    excluded") goes into ``extra``.
    """
    return write_metrics(out_dir, metrics={k: dict(v) for k, v in models.items()}, config=config or {},
                         dataset="", source="real", profile="", protocol="", wall_time_s=wall_time_s,
                         device=device, extra={"convention": convention, **(extra or {})},
                         kind="complexity")


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate one record (a ``metrics.json`` file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such metrics file; a run writes it with write_metrics().") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); delete it and re-run the evaluation.") from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(rec).__name__}.")
    _check_record(rec, str(path))
    rec["variant"] = normalize_variant(rec["variant"], where=str(path))
    return rec
