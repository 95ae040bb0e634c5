"""Rendering on several processes, with the same bytes as on one.

:func:`jlml_lib.data.synthetic.render.render` draws each batch of :data:`BATCH` shots from a
generator seeded by those shots' own seeds, and a template depends only on its person and
viewpoint. So a shot list cut at multiples of ``BATCH`` renders the same pixels in any
process, and templates can be drawn in any grouping: the output of ``generate`` does not
depend on ``workers`` (tested).

Worker processes are *forked* after the templates exist, so they share the studio's
~600 MB of templates copy-on-write instead of redrawing or pickling them; each task ships only
its shots, sizes and file names. Where ``fork`` is unavailable (Windows, or macOS where it is
unsafe) rendering stays in the calling process.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

BATCH = 256  # render()'s batch: the unit that must never be split across processes

# (rgb, alpha, cameras) of the studio being rendered; set in the parent just before the fork,
# read by the workers (which inherit it), never pickled
_SHARED: dict[str, Any] = {}


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def effective_workers(workers: int) -> int:
    return max(1, int(workers)) if can_fork() else 1


def save_image(arr: np.ndarray, path: str | Path, quality: int | None) -> None:
    """``quality`` for JPEG files; None for formats without one (VIPeR's BMPs)."""
    im = Image.fromarray(arr)
    if quality is None:
        im.save(path)
    else:
        im.save(path, quality=int(quality))


def ordered_map(fn: Callable, tasks: Sequence, workers: int) -> Iterator:
    """``map(fn, tasks)`` in order, on ``workers`` forked processes when that is > 1."""
    workers = min(effective_workers(workers), len(tasks))
    if workers <= 1:
        yield from map(fn, tasks)
        return
    # a pool per call: forked *after* the caller set _SHARED, so the workers see it. Python
    # 3.12 warns that forking a process with threads may deadlock; the only other threads here
    # are idle BLAS/torch pools (OpenBLAS re-initialises after fork) and the workers run
    # numpy and PIL only
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks",
                                category=DeprecationWarning)
        pool = mp.get_context("fork").Pool(workers)
    with pool:
        yield from pool.imap(fn, tasks)


def chunks(n: int, size: int = BATCH) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


# ---------------------------------------------------------------- tasks run in the workers

def _render_task(task: tuple) -> list[np.ndarray] | None:
    from jlml_lib.data.synthetic.render import render

    shots, sizes, paths, quality = task
    rgb, alpha, cams = _SHARED["templates"]
    out = []
    for j, arr in render(shots, rgb, alpha, cams, sizes, batch=BATCH):
        if paths is None:
            out.append(arr)
        else:
            save_image(arr, paths[j], None if quality is None else quality[j])
    return None if paths is not None else out


def render_parallel(shots: Any, rgb: np.ndarray, alpha: np.ndarray, cams: Any, out_sizes: Any,
                    workers: int, *, paths: Sequence[str | Path] | None = None,
                    quality: Sequence[int] | None = None) -> Iterable[tuple[int, np.ndarray]]:
    """Render ``shots``; with ``paths`` each worker saves its images and nothing is yielded,
    else ``(i, array)`` is yielded in order (the caller writes them, e.g. into one HDF5 file)."""
    n = len(shots.template)
    per_image = np.asarray(out_sizes).ndim == 2
    tasks = []
    for sl in chunks(n):
        sub = type(shots)(*(getattr(shots, f)[sl] for f in shots.__dataclass_fields__))
        tasks.append((sub, out_sizes[sl] if per_image else out_sizes,
                      None if paths is None else list(paths[sl]),
                      None if quality is None else list(quality[sl])))
    _SHARED["templates"] = (rgb, alpha, cams)
    try:
        i = 0
        for res in ordered_map(_render_task, tasks, workers):
            if res is not None:
                for arr in res:
                    yield i, arr
                    i += 1
    finally:
        _SHARED.pop("templates", None)
