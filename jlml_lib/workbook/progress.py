"""`jlml workbook`'s progress: each notebook's last measured time and the expected remaining time.

The times live in ``results/executed/timings.json`` (``paths.TIMINGS``) as
``{kind: {notebook: seconds}}``, where ``kind`` says what was run (quick or full, profile,
device, real data: :meth:`jlml_lib.workbook.runner.Plan.kind`), since a full or GPU run of a
notebook takes another time than a quick CPU one. Only executed notebooks are timed; a skipped
one costs nothing and keeps its time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from jlml_lib.io import write_json

#: the kinds of a run without options: the quick run (the defaults) and --full
QUICK, FULL = "quick", "full"


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``: what a person reads at a glance."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def load(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Every kind's measured times ({} when there are none or the file is unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(path: str | os.PathLike, kind: str, notebook: str, seconds: float) -> None:
    """Keep ``seconds`` as the last measured time of ``notebook`` under ``kind`` (atomic)."""
    data = load(path)
    data.setdefault(kind, {})[notebook] = round(float(seconds), 1)
    write_json(path, data)


def latest(*sources: Mapping[str, Mapping[str, float]], kinds: Iterable[str]) -> dict[str, dict[str, float]]:
    """Each of ``kinds``' last measured time per notebook over several timing files, oldest
    first: a later source's time wins, a notebook it did not time keeps the earlier one (a run
    that skipped a notebook did not time it). Kinds without any time are left out."""
    merged = {k: {n: t for src in sources for n, t in src.get(k, {}).items()} for k in kinds}
    return {k: v for k, v in merged.items() if v}


def pace(measured: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """How fast this run goes against the ``reference`` times: the notebooks measured so far
    that have a reference time, their seconds now over their seconds then (1.0 before any).
    A machine twice as busy, or a faster one, shows here after the first notebook."""
    common = [n for n in measured if reference.get(n, 0) > 0]
    if not common:
        return 1.0
    return sum(measured[n] for n in common) / sum(reference[n] for n in common)


def remaining(times: Mapping[str, float], to_run: Iterable[str], *, speed: float = 1.0) -> str:
    """The expected remaining time of the notebooks ``to_run`` from their last measured
    ``times``, scaled by this run's :func:`pace` ``speed``: ``"remaining ≈ 12 min 30 s"``, with
    the notebooks never measured named (``"remaining ≈ 3 min + 08_ablations (not measured
    yet)"``, or ``"remaining: unknown"`` when none was measured)."""
    to_run = list(to_run)
    if not to_run:
        return "remaining: none"
    known = [times[n] for n in to_run if n in times]
    unknown = [n for n in to_run if n not in times]
    if not known:
        return "remaining: unknown (no measured time yet)"
    text = f"remaining ≈ {duration(sum(known) * speed)}"
    return text + (f" + {', '.join(unknown)} (not measured yet)" if unknown else "")
