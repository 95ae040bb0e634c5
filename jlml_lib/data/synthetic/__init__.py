"""Synthetic pedestrians written in each dataset's exact original format (design §1, §4).

``generate(name, root, *, scale, seed, structure_only)`` (contract) writes the dataset folder
under ``root`` exactly as the real one is distributed, and a marker ``JLML_SYNTHETIC.json``
*beside* it (never inside, so ``verify`` and the loaders see the original structure) that
records generator, version, scale and seed; ``load_dataset`` reads it to report
``source="synthetic"``. Every number computed on such data must be labelled synthetic.

* ``scale`` shrinks identities (and images with them, so images per identity stay real);
  ``plan(name, 1.0)`` gives the real counts. For ImageNet it shrinks classes and images per
  class (see :func:`jlml_lib.data.manifests.plan`).
* ``structure_only=True`` writes the same files with tiny (8×4) two-colour images: the real
  counts at scale 1 in seconds, for testing manifests and ``verify`` end to end.
* Deterministic for a seed: same files, same bytes.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from jlml_lib.errors import ConfigError
from jlml_lib.data.base import MARKER, read_marker  # MARKER: one owner, data.base; re-exported
from jlml_lib.io import write_json

GENERATOR = "jlml_lib.data.synthetic"
VERSION = 1  # bump when the output of a given (name, scale, seed) changes


def _writers() -> dict[str, Callable[..., Path]]:
    from jlml_lib.data.synthetic import cuhk03, grid, imagenet, market1501, viper

    return {"market1501": market1501.write, "cuhk03": cuhk03.write, "viper": viper.write,
            "grid": grid.write, "imagenet": imagenet.write}


def default_scale(name: str) -> float:
    from jlml_lib.data.base import get_spec

    return get_spec(name).default_scale


def generate(name: str, root: str | os.PathLike, *, scale: float | None = None, seed: int = 0,
             structure_only: bool = False, workers: int = 1) -> Path:
    """Write synthetic ``name`` under ``root``; return the path to pass to ``load_dataset``.

    ``cuhk03+market1501`` writes both datasets side by side and returns ``root``. ``workers``
    processes draw the images (Linux; the files are the same for any number).
    """
    root = Path(root).expanduser()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}.")
    _check_target(root, ["cuhk03", "market1501"] if name == "cuhk03+market1501" else [name])
    if name == "cuhk03+market1501":
        for part in ("cuhk03", "market1501"):
            generate(part, root, scale=scale, seed=seed, structure_only=structure_only,
                     workers=workers)
        return root
    writers = _writers()
    if name not in writers:
        raise ConfigError(f"unknown dataset {name!r}; synthetic data exists for "
                          f"{sorted(writers) + ['cuhk03+market1501']}.")
    scale = default_scale(name) if scale is None else scale
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    from jlml_lib.data.manifests import plan

    plan(name, scale)  # validates scale
    root.mkdir(parents=True, exist_ok=True)
    ddir = writers[name](root, scale=float(scale), seed=seed, structure_only=structure_only,
                         workers=workers)
    _mark(root, name, ddir.name, scale=float(scale), seed=seed, structure_only=structure_only)
    return ddir


def _check_target(root: Path, names: list[str]) -> None:
    """Refuse to write where the generator would overwrite or mix into something it did not
    write: a file, a non-empty folder without its marker (a user's dataset, issue 19), or a
    dataset folder its marker does not list (a real copy beside generated ones). Checked for every
    part before anything is written."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ConfigError(f"{root} is a file; synthetic data is written into a folder. Give a new or empty "
                          "folder (or one `jlml data generate` wrote before).")
    marked = (root / MARKER).is_file()
    if not marked and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty and was not written by jlml (no {MARKER} in it): generating "
                          "would mix synthetic images into it. Give a new or empty folder; to check a copy "
                          "you have, use `jlml data verify NAME ROOT`.")
    entries = read_marker(root).get("datasets", {})
    writers = _writers()
    for name in names:
        if name not in writers:
            continue  # an unknown name: refused by generate with the list of known ones
        folder = root / sys.modules[writers[name].__module__].FOLDER
        if folder.exists() and entries.get(name, {}).get("folder") != folder.name:
            raise ConfigError(f"{folder} exists and was not written by jlml ({root / MARKER} does not list "
                              f"{name}): generating would overwrite it. Give a new or empty folder.")


def _mark(root: Path, name: str, folder: str, **info) -> None:
    path = root / MARKER
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data.setdefault("note", "Synthetic data written by jlml_lib.data.synthetic; not a real "
                            "dataset. Numbers computed on it are labelled synthetic.")
    data.setdefault("datasets", {})[name] = {"generator": GENERATOR, "version": VERSION,
                                             "folder": folder, **info}
    write_json(path, data)


def generate_cached(name: str, target: Path, *, scale: float, seed: int) -> Path:
    """Reuse ``target`` when it holds a complete copy for (name, scale, seed, version), else
    generate into a temporary sibling and move it into place (a killed run leaves no half
    copy that looks complete: the marker is written last)."""
    from jlml_lib.data.base import find_dataset_dir, read_marker

    def complete(folder: Path) -> bool:
        parts = ["cuhk03", "market1501"] if name == "cuhk03+market1501" else [name]
        entries = read_marker(folder).get("datasets", {})
        return all(entries.get(p, {}).get("version") == VERSION
                   and entries.get(p, {}).get("scale") == scale
                   and entries.get(p, {}).get("seed") == seed for p in parts)

    if target.is_dir() and complete(target):
        return target if name == "cuhk03+market1501" else find_dataset_dir(name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        generate(name, tmp, scale=scale, seed=seed)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target if name == "cuhk03+market1501" else find_dataset_dir(name, target)
