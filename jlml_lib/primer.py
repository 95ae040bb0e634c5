"""Re-identification's measures computed by hand, one step at a time (notebook 00's primer).

The paper measures re-id accuracy by CMC on every benchmark and adds mAP on Market-1501 (§3,
"Evaluation Protocol"). :func:`jlml_lib.evaluation.rank_metrics` computes both for thousands of
queries at once, vectorised and without sorting the gallery. This module does the same for one
query at a time, with plain loops that follow the rules line by line, so that a reader can check
every step and a notebook or a test can ``assert`` that the library gives the same numbers:

* each gallery image of a query is **good** (same identity, another camera), **junk** (same
  identity *and* same camera, or an identity in ``junk_pids``: Market-1501's ``-1`` boxes;
  skipped without taking a rank), a **distractor** (pid 0: Market-1501's ``0000`` boxes, GRID's
  775 extra people; an ordinary wrong answer) or **wrong** (another identity);
* **CMC** at rank k: the fraction of queries whose first good image has (non-junk) rank <= k;
* **AP**: ``"official"``, the trapezoid rule of Market-1501's ``compute_AP.m``, or
  ``"standard"``, the mean precision at the good images (:data:`jlml_lib.evaluation.AP_MODES`).

The worked examples (:data:`SIX_IMAGES`, :data:`FOUR_QUERIES`) are small made-up inputs, not
results: every number computed from them is checked against ``rank_metrics``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import AP_MODES, rank_metrics

#: what a gallery image is to a query (the order is the legend's order in the pictures)
STATUSES = ("good", "junk", "distractor", "wrong")
#: Market-1501's ``0000_*`` boxes and GRID's extra people: identities no query has
DISTRACTOR_PID = 0
#: identities that are junk for every query: rank_metrics' own default (Market-1501's ``-1``)
JUNK_PIDS: tuple[int, ...] = tuple(inspect.signature(rank_metrics).parameters["junk_pids"].default)


def gallery_status(q_pid: int, q_cam: int, g_pid: int, g_cam: int,
                   junk_pids: Iterable[int] = JUNK_PIDS) -> str:
    """``"good"``, ``"junk"``, ``"distractor"`` or ``"wrong"``: what gallery image (g_pid, g_cam) is to
    the query (q_pid, q_cam). Same identity and same camera is junk: that camera may have filmed the
    person a few frames apart, so finding it says nothing about matching *across* cameras."""
    if g_pid in tuple(junk_pids) or (g_pid == q_pid and g_cam == q_cam):
        return "junk"
    if g_pid == q_pid:
        return "good"
    return "distractor" if g_pid == DISTRACTOR_PID else "wrong"


def ranked_list(distances: Sequence[float], q_pid: int, q_cam: int, g_pids: Sequence[int],
                g_cams: Sequence[int], junk_pids: Iterable[int] = JUNK_PIDS) -> pd.DataFrame:
    """One query's gallery sorted by distance, nearest first (ties: gallery order, as MATLAB's
    stable ``sort``), one row per image: ``gallery`` (its index), ``distance``, ``pid``, ``camera``
    (0-based), ``status`` and ``rank``, the 1-based rank among the non-junk images (``<NA>`` for
    junk, which takes no rank)."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    if not (len(d) == len(g_pids) == len(g_cams)):
        raise DataError(f"ranked_list: {len(d)} distances but {len(g_pids)} gallery pids and {len(g_cams)} "
                        "cameras; pass one distance, pid and camera per gallery image")
    rows, r = [], 0
    for j in np.argsort(d, kind="stable"):
        status = gallery_status(q_pid, q_cam, int(g_pids[j]), int(g_cams[j]), junk_pids)
        if status != "junk":
            r += 1
        rows.append({"gallery": int(j), "distance": float(d[j]), "pid": int(g_pids[j]),
                     "camera": int(g_cams[j]), "status": status, "rank": None if status == "junk" else r})
    out = pd.DataFrame(rows)
    out["rank"] = out["rank"].astype("Int64")
    return out


def first_match(table: pd.DataFrame) -> int:
    """The rank of the first good image of a :func:`ranked_list` (0 when there is none)."""
    good = table.loc[table.status == "good", "rank"]
    return int(good.iloc[0]) if len(good) else 0


def ap_by_hand(table: pd.DataFrame, convention: str) -> tuple[float, pd.DataFrame]:
    """AP of one query from its :func:`ranked_list`, and the steps: one row per non-junk image.

    ``"official"`` (``compute_AP.m``): at rank r with h good images so far, recall = h/ngood and
    precision = h/r; AP += (recall - old recall) × (old precision + precision) / 2, starting from
    old recall 0 and old precision 1 — a trapezoid under the precision-recall curve.
    ``"standard"``: AP = (1/ngood) Σ precision at the ranks of the good images.
    A query without a good image has AP 0 in the official code and is not counted in the standard one
    (``NaN`` here).
    """
    if convention not in AP_MODES:
        raise ConfigError(f"ap_by_hand: convention must be one of {AP_MODES}, got {convention!r}")
    ngood = int((table.status == "good").sum())
    steps, h, ap = [], 0, 0.0
    old_recall, old_precision = 0.0, 1.0
    for row in table[table.status != "junk"].itertuples():
        hit = row.status == "good"
        h += hit
        recall, precision = (h / ngood if ngood else 0.0), h / row.rank
        if convention == "official":
            term = (recall - old_recall) * (old_precision + precision) / 2
        else:
            term = precision / ngood if hit else 0.0
        ap += term
        steps.append({"rank": int(row.rank), "status": row.status, "good so far": h, "recall": recall,
                      "precision": precision, "added to AP": term, "AP so far": ap})
        old_recall, old_precision = recall, precision
    if ngood == 0:
        ap = 0.0 if convention == "official" else float("nan")
    return ap, pd.DataFrame(steps).set_index("rank")


def cmc_by_hand(first_matches: Sequence[int], max_rank: int) -> pd.DataFrame:
    """CMC built rank by rank from each query's first-match rank (0 = never matched): at rank k, the
    queries whose first good image has rank k join those already matched; ``CMC`` is their fraction
    of all the queries given. One row per rank 1..max_rank."""
    first = [int(f) for f in first_matches]
    if not first:
        raise DataError("cmc_by_hand: no queries; pass one first-match rank per query")
    rows, matched = [], 0
    for k in range(1, max_rank + 1):
        new = [q for q, f in enumerate(first) if f == k]
        matched += len(new)
        rows.append({"rank": k, "queries first matched here": new, "matched so far": matched,
                     "CMC": matched / len(first)})
    return pd.DataFrame(rows).set_index("rank")


@dataclass(frozen=True)
class Example:
    """Queries and a gallery small enough to rank by hand: identities (pids), 0-based cameras, and
    ``distances[i][j]`` from query i to gallery image j (made up; smaller = more alike)."""

    q_pids: tuple[int, ...]
    q_cams: tuple[int, ...]
    g_pids: tuple[int, ...]
    g_cams: tuple[int, ...]
    distances: tuple[tuple[float, ...], ...]

    def ranked(self, query: int = 0) -> pd.DataFrame:
        """:func:`ranked_list` of one query."""
        return ranked_list(self.distances[query], self.q_pids[query], self.q_cams[query], self.g_pids,
                           self.g_cams)

    def library(self, ap: str):
        """``rank_metrics`` on the same inputs: the library's answer to compare with the hand's."""
        return rank_metrics(np.asarray(self.distances), self.q_pids, self.g_pids, self.q_cams, self.g_cams,
                            ap=ap, max_rank=len(self.g_pids))


#: one query (person 7, camera 0) and six gallery images, already in distance order: a wrong
#: person, a junk image (person 7 again, same camera), a true match, a distractor (0000), a
#: Market-1501 junk box (-1), a second true match
SIX_IMAGES = Example(q_pids=(7,), q_cams=(0,), g_pids=(3, 7, 7, 0, -1, 7), g_cams=(2, 0, 1, 3, 4, 5),
                     distances=((0.1, 0.2, 0.3, 0.4, 0.5, 0.6),))

#: four queries against eight gallery images (persons 1-4 and a distractor, cameras 0-2)
FOUR_QUERIES = Example(
    q_pids=(1, 2, 3, 4), q_cams=(0, 1, 0, 0),
    g_pids=(1, 1, 2, 2, 3, 3, 4, 0), g_cams=(1, 2, 0, 2, 1, 0, 2, 1),
    distances=((0.2, 0.5, 0.4, 0.9, 0.7, 0.8, 0.6, 0.3),
               (0.8, 0.6, 0.9, 0.4, 0.2, 0.5, 0.7, 0.3),
               (0.3, 0.7, 0.6, 0.8, 0.4, 0.1, 0.9, 0.5),
               (0.4, 0.1, 0.7, 0.2, 0.8, 0.6, 0.5, 0.3)))
