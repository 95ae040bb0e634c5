"""Per-query results of an evaluation, saved beside its ``metrics.json`` (issue 12).

``metrics.json`` keeps the means; this file keeps what each query scored (its first good rank and
its AP), its pid and camera, so that intervals can be computed later from saved runs
(:func:`jlml_lib.uncertainty.bootstrap_ci`, per query or per identity) and two runs on the same
queries can be paired (:func:`jlml_lib.uncertainty.paired_bootstrap_diff`, Tables 9-12).

One file per record folder, i.e. per feature kind (joint in the run folder, the others in
``eval-<kind>/``), holding one or more *sections*: the result of one ranking each, named after
where its means sit in metrics.json -- :data:`TOP_SECTION` for the top-level metrics,
``"single_query"`` / ``"multi_query"`` for Market-1501's nested ones. A CUHK03-classic section
holds its gallery draws as ``(num_draws, num_queries)`` arrays (averaged per query by
:func:`jlml_lib.uncertainty.average_draws`).

Format: ``numpy.savez_compressed`` (no pickles) with one JSON string ``meta`` --
``{"format_version", "kind", "sections": {name: {"ap", "max_rank", "num_gallery",
"query_key"}}}`` -- and per section the arrays ``<name>/first_rank`` (1-based, 0 = no good
match), ``<name>/query_ap`` (NaN where not counted), ``<name>/q_pids``, ``<name>/q_camids``.
Written atomically (``jlml_lib.io.atomic_open``). Market-1501: 3,368 queries, ~60 kB.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jlml_lib.errors import DataError
from jlml_lib.evaluation import AP_MODES, query_key
from jlml_lib.io import atomic_open
from jlml_lib.paths import QUERIES as QUERIES_FILENAME  # the run-folder layout owns the file name

TOP_SECTION = "top"
FORMAT_VERSION = 1
_ARRAYS = ("first_rank", "query_ap", "q_pids", "q_camids")

__all__ = ["QUERIES_FILENAME", "TOP_SECTION", "QueryResults", "queries_path", "section_of", "write_queries",
           "read_queries"]


@dataclass(frozen=True, eq=False)  # arrays: == is defined below, element-wise
class QueryResults:
    """One ranking's per-query results; usable wherever :mod:`jlml_lib.uncertainty` takes a
    ``RankMetrics`` (it has ``first_rank``, ``query_ap``, ``ap``, ``max_rank``, ``query_key``)."""

    first_rank: np.ndarray  # (Q,), or (num_draws, Q) for CUHK03 classic
    query_ap: np.ndarray  # same shape; NaN where not counted (ap="standard", no good match)
    q_pids: np.ndarray  # (Q,)
    q_camids: np.ndarray  # (Q,)
    ap: str
    max_rank: int
    num_gallery: int
    query_key: str | None = None
    kind: str = "joint"

    def __post_init__(self) -> None:
        fr, qa = np.asarray(self.first_rank), np.asarray(self.query_ap)
        q = np.asarray(self.q_pids).shape
        if fr.ndim not in (1, 2) or qa.shape != fr.shape or q != fr.shape[-1:] or np.asarray(self.q_camids).shape != q:
            raise DataError(f"QueryResults: first_rank {fr.shape}, query_ap {qa.shape}, q_pids {q} and q_camids "
                            f"{np.asarray(self.q_camids).shape} must describe the same queries")
        if self.ap not in AP_MODES:
            raise DataError(f"QueryResults: ap must be one of {AP_MODES}, got {self.ap!r}")

    @classmethod
    def from_metrics(cls, metrics: Any, q_pids: Any, q_camids: Any, *, num_gallery: int,
                     kind: str = "joint") -> "QueryResults":
        """From a ``RankMetrics`` and the query pids/cameras it was computed with."""
        return cls(np.asarray(metrics.first_rank, np.int64), np.asarray(metrics.query_ap, np.float64),
                   np.asarray(q_pids, np.int64).reshape(-1), np.asarray(q_camids, np.int64).reshape(-1),
                   ap=metrics.ap, max_rank=len(metrics.cmc), num_gallery=int(num_gallery),
                   query_key=_key(getattr(metrics, "query_key", None), q_pids, q_camids), kind=kind)

    @classmethod
    def from_draws(cls, draws: Sequence[Any], q_pids: Any, q_camids: Any, *, num_gallery: int,
                   kind: str = "joint") -> "QueryResults":
        """From the ``RankMetrics`` of each gallery draw over one query list (CUHK03 classic)."""
        draws = list(draws)
        if not draws:
            raise DataError("QueryResults.from_draws: no draws")
        modes = {d.ap for d in draws}
        lengths = {len(d.cmc) for d in draws}
        keys = {getattr(d, "query_key", None) for d in draws}
        if len(modes) != 1 or len(lengths) != 1 or len(keys) != 1:
            raise DataError(f"QueryResults.from_draws: the draws disagree on ap {modes}, max_rank {lengths} or "
                            "query_key; every draw must rank the same queries with the same settings")
        return cls(np.stack([np.asarray(d.first_rank, np.int64) for d in draws]),
                   np.stack([np.asarray(d.query_ap, np.float64) for d in draws]),
                   np.asarray(q_pids, np.int64).reshape(-1), np.asarray(q_camids, np.int64).reshape(-1),
                   ap=draws[0].ap, max_rank=lengths.pop(), num_gallery=int(num_gallery),
                   query_key=_key(keys.pop(), q_pids, q_camids), kind=kind)

    def __eq__(self, other: object) -> bool:
        """Equal values (arrays element-wise, NaN equal to NaN): two evaluations of the same model
        on the same queries give equal results."""
        if not isinstance(other, QueryResults):
            return NotImplemented
        return all(np.array_equal(getattr(self, a), getattr(other, a), equal_nan=a == "query_ap") for a in _ARRAYS) \
            and (self.ap, self.max_rank, self.num_gallery, self.query_key, self.kind) == \
            (other.ap, other.max_rank, other.num_gallery, other.query_key, other.kind)

    __hash__ = None  # mutable arrays inside: no hash

    @property
    def num_draws(self) -> int:
        return 1 if np.ndim(self.first_rank) == 1 else int(np.shape(self.first_rank)[0])

    def metrics(self, ranks: Sequence[int] = (1, 5, 10, 20)) -> dict[str, float]:
        """``{"rank1", ..., "mAP"}`` recomputed from the queries (= the record's means)."""
        from jlml_lib.uncertainty import query_scores

        return query_scores(self).estimate(ranks)


def _key(ranked: str | None, q_pids: Any, q_camids: Any) -> str:
    # The key rank_metrics computed is the one to keep: single-shot protocols (VIPeR, GRID) rank
    # with placeholder cameras, so the real cameras stored here may give another digest.
    return ranked if ranked is not None else query_key(q_pids, q_camids)


def queries_path(directory: str | os.PathLike) -> Path:
    """The per-query file of a record folder (the folder that holds its metrics.json)."""
    return Path(directory) / QUERIES_FILENAME


def section_of(metric_path: str) -> tuple[str, str]:
    """``"single_query.rank1"`` -> ``("single_query", "rank1")``; ``"rank1"`` -> ``(TOP_SECTION, "rank1")``:
    which section holds the queries behind a metrics.json key (the tables' dotted keys)."""
    head, _, tail = metric_path.rpartition(".")
    return (head or TOP_SECTION), tail


def write_queries(directory: str | os.PathLike, sections: Mapping[str, QueryResults]) -> Path:
    """Write ``sections`` (name -> :class:`QueryResults`, one feature kind) to
    ``directory/queries.npz`` atomically; returns the path."""
    if not sections:
        raise DataError("write_queries: no sections to write")
    kinds = {r.kind for r in sections.values()}
    if len(kinds) != 1:
        raise DataError(f"write_queries: sections of different feature kinds {sorted(kinds)}; "
                        "each kind's record folder gets its own file")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": kinds.pop(), "sections": {}}
    for name, r in sections.items():
        if not name or "/" in name or name == "meta":
            raise DataError(f"write_queries: bad section name {name!r} (use e.g. {TOP_SECTION!r}, 'single_query')")
        meta["sections"][name] = {"ap": r.ap, "max_rank": int(r.max_rank), "num_gallery": int(r.num_gallery),
                                  "query_key": r.query_key}
        for a in _ARRAYS:
            arrays[f"{name}/{a}"] = np.asarray(getattr(r, a))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = queries_path(directory)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def read_queries(path: str | os.PathLike) -> dict[str, QueryResults]:
    """Read a record folder's ``queries.npz`` (``path``: the folder or the file) -> name -> QueryResults."""
    p = Path(path)
    if p.is_dir():
        p = queries_path(p)
    if not p.is_file():
        raise DataError(f"{p}: no per-query results; the run was evaluated before per-query results were saved "
                        "(re-run its evaluation) or the path is not a record folder")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            data = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(f"{p}: not a readable per-query results file ({e}); re-run the evaluation") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{p}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    out = {}
    for name, m in meta["sections"].items():
        try:
            arrs = {a: data[f"{name}/{a}"] for a in _ARRAYS}
        except KeyError as e:
            raise DataError(f"{p}: section {name!r} lacks the array {e}; the file is damaged, re-run the evaluation") from None
        out[name] = QueryResults(**arrs, ap=m["ap"], max_rank=int(m["max_rank"]), num_gallery=int(m["num_gallery"]),
                                 query_key=m["query_key"], kind=meta["kind"])
    return out
