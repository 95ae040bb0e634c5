"""The dataset record every loader returns, the loader registry, and root resolution.

A loader turns a folder *exactly as its dataset is distributed* into a :class:`ReidDataset`:
lists of ``(image_ref, pid, camid)`` (design §4, contract). The same loaders read the
synthetic copies written by :mod:`jlml_lib.data.synthetic`; the only thing that tells the two
apart is the small marker file ``JLML_SYNTHETIC.json`` the generator leaves *beside* the
dataset folder, never inside it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from jlml_lib.errors import ConfigError, DataError

Item = tuple[str, int, int]  # (image_ref, pid, camid), camid 0-based
MARKER = "JLML_SYNTHETIC.json"


@dataclass
class ReidDataset:
    """One split of one dataset (design §4, contract).

    ``train`` pids are relabelled ``0..num_train_pids-1``; ``query``/``gallery`` keep the
    dataset's own pids, including Market-1501's ``0`` distractors and ``-1`` junk.
    """

    name: str
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    num_train_pids: int
    split: int | None
    num_splits: int
    protocol: str
    source: str  # "real" | "synthetic"
    root: str
    extras: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for Table 2 and for quick inspection (ids, images, cameras per part)."""

        def ids(items: Iterable[Item]) -> set[int]:
            return {p for _, p, _ in items}

        test_ids = (ids(self.query) | ids(self.gallery)) - {0, -1}
        cams = {c for part in (self.train, self.query, self.gallery) for _, _, c in part}
        return {
            "name": self.name, "protocol": self.protocol, "split": self.split,
            "num_splits": self.num_splits, "source": self.source,
            "train_images": len(self.train), "train_ids": self.num_train_pids,
            "query_images": len(self.query), "gallery_images": len(self.gallery),
            "test_ids": len(test_ids), "cameras": len(cams),
        }

    def __repr__(self) -> str:
        """A few readable lines (what a notebook shows under ``ds``); the dataclass default would
        print every item on one line."""
        s = self.summary()
        split = "the fixed split" if self.split is None else f"split {self.split} of {self.num_splits} (0-based)"
        return "\n".join([
            f"ReidDataset {self.name!r} ({self.source} data)",
            f"  protocol  {self.protocol}, {split}",
            f"  root      {self.root}",
            f"  train     {s['train_images']:,} images, {s['train_ids']:,} ids",
            f"  query     {s['query_images']:,} images",
            f"  gallery   {s['gallery_images']:,} images",
            f"  test      {s['test_ids']:,} ids, {s['cameras']} cameras in all",
        ])


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Callable[..., ReidDataset]
    folders: tuple[str, ...]        # folder names as distributed, canonical first
    signature: tuple[str, ...]      # relative paths a dataset folder must hold
    default_scale: float            # synthetic default (see jlml_lib.data.synthetic)


REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, *, folders: Sequence[str], signature: Sequence[str],
             default_scale: float) -> Callable:
    def deco(fn: Callable[..., ReidDataset]) -> Callable[..., ReidDataset]:
        REGISTRY[name] = DatasetSpec(name, fn, tuple(folders), tuple(signature), default_scale)
        return fn
    return deco


def dataset_names() -> list[str]:
    _ensure_loaded()
    return sorted(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    _ensure_loaded()
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {sorted(REGISTRY)}. "
                          "Check the spelling (names are lower case, e.g. 'market1501').")
    return REGISTRY[name]


def _ensure_loaded() -> None:
    # the dataset modules register themselves on import; importing here avoids a cycle
    from jlml_lib.data import cuhk03, combined, grid, imagenet, market1501, viper  # noqa: F401


# ---------------------------------------------------------------- roots

def _holds(folder: Path, signature: Sequence[str]) -> bool:
    return all((folder / rel).exists() for rel in signature)


def find_dataset_dir(name: str, root: str | os.PathLike) -> Path:
    """The dataset folder for ``root``: the folder as distributed or the folder one level above.

    Raises :class:`DataError` naming what was looked for when neither holds the dataset.
    """
    spec = get_spec(name)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{name}: the root {str(root)!r} does not exist. Pass the dataset folder "
                        f"as distributed (e.g. {spec.folders[0]!r}) or the folder that holds it.")
    if not root.is_dir():
        raise DataError(f"{name}: the root {str(root)!r} is a file, expected a folder such as "
                        f"{spec.folders[0]!r} or the folder holding it.")
    if _holds(root, spec.signature):
        return root
    # canonical names first, then any child that has the right contents (a renamed copy)
    candidates = [root / f for f in spec.folders if (root / f).is_dir()]
    try:
        candidates += sorted(p for p in root.iterdir() if p.is_dir() and p not in candidates)
    except OSError as exc:
        raise DataError(f"{name}: cannot list {str(root)!r} ({exc}).") from None
    for cand in candidates:
        if _holds(cand, spec.signature):
            return cand
    # a copy that holds part of the signature (root, or a folder in it) is the one the user means:
    # name what it lacks, not every part as missing from the folder above it
    held = {c: sum((c / rel).exists() for rel in spec.signature) for c in [root, *candidates]}
    partial = max(held, key=lambda c: held[c])
    if held[partial]:
        missing = [rel for rel in spec.signature if not (partial / rel).exists()]
        raise DataError(
            f"{name}: {str(partial)!r} looks like the dataset but lacks {missing} (expected "
            f"{list(spec.signature)} in it). Restore them from the original archive; "
            f"`jlml data verify {name} {str(partial)!r}` lists every problem.")
    missing = [rel for rel in spec.signature if not (root / rel).exists()]
    raise DataError(
        f"{name}: {str(root)!r} does not hold the dataset: expected {list(spec.signature)} in it "
        f"(missing: {missing}) or in a sub-folder named like {list(spec.folders)}. Point the "
        f"root at the unpacked {spec.folders[0]!r} folder or its parent; "
        f"`jlml data verify {name} ROOT` lists every problem.")


def read_marker(folder: Path) -> dict[str, Any]:
    """Contents of the synthetic marker in ``folder`` ({} when there is none or it is broken)."""
    path = folder / MARKER
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def synthetic_info(name: str, dataset_dir: Path) -> dict[str, Any] | None:
    """The generator record for ``dataset_dir`` if it is a synthetic copy, else None."""
    entry = read_marker(dataset_dir.parent).get("datasets", {}).get(name)
    if entry and entry.get("folder") == dataset_dir.name:
        return entry
    return None


def source_of(name: str, dataset_dir: Path) -> str:
    return "synthetic" if synthetic_info(name, dataset_dir) else "real"


def load_dataset(name: str, root: str | os.PathLike, **options: Any) -> ReidDataset:
    """Load ``name`` from ``root`` (design §4, contract). Options are per dataset:

    market1501: none · cuhk03: ``images="labeled"|"detected"``, ``protocol="classic"|"new"``,
    ``split`` (classic, 0..19), ``config`` (path of the new-protocol .mat) · viper: ``split``
    (0..9) · grid: ``split`` (0..9) · imagenet: none · cuhk03+market1501: ``cuhk03_images``,
    ``whole``, ``cuhk03_root``, ``market1501_root``.
    """
    spec = get_spec(name)
    try:
        return spec.loader(root, **options)
    except TypeError as exc:
        # an unknown keyword: say which options exist rather than a bare TypeError
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"{name}: {exc}. See help(jlml_lib.data.load_dataset) for the "
                              "options of each dataset.") from None
        raise


def check_split(name: str, split: Any, num_splits: int) -> int:
    if isinstance(split, bool) or not isinstance(split, int):
        raise ConfigError(f"{name}: split must be an integer 0..{num_splits - 1}, got {split!r}.")
    if not 0 <= split < num_splits:
        raise ConfigError(f"{name}: split {split} is out of range; this dataset has "
                          f"{num_splits} splits, numbered 0..{num_splits - 1}.")
    return split


def relabel(items: list[Item]) -> tuple[list[Item], int]:
    """Train pids -> 0..K-1 in sorted order of the original pid (deterministic)."""
    pids = sorted({p for _, p, _ in items})
    mapping = {p: i for i, p in enumerate(pids)}
    return [(ref, mapping[p], c) for ref, p, c in items], len(pids)


# ---------------------------------------------------------------- synthetic cache

def cache_dir() -> Path:
    return Path(os.environ.get("JLML_CACHE", "~/.cache/jlml")).expanduser()


def resolve_root(name: str, data_root: str | os.PathLike | None = None, *,
                 scale: float | None = None, seed: int = 0) -> tuple[Path, str]:
    """``(root, source)``: the user's copy when ``data_root`` is given, else the synthetic one.
    ``source`` is "real", "synthetic", or for ``cuhk03+market1501`` also "mixed".

    A ``data_root`` that does not hold the dataset is an error, never a silent fall-back to
    synthetic data. Synthetic copies live in ``$JLML_CACHE`` (default ``~/.cache/jlml``) under
    ``synthetic/<name>/scale<scale>-seed<seed>`` and are reused when complete.
    """
    spec = get_spec(name)
    if data_root is not None and str(data_root) != "":
        root = Path(data_root).expanduser()
        if name == "cuhk03+market1501":
            # each component's own marker decides (a real Market-1501 beside a generated
            # CUHK03 is "mixed", not "synthetic"); the loader raises a DataError naming what
            # is missing
            parts = spec.loader(root).extras["components"]
            sources = {c["source"] for c in parts}
            return root, sources.pop() if len(sources) == 1 else "mixed"
        ddir = find_dataset_dir(name, root)
        return ddir, source_of(name, ddir)
    from jlml_lib.data import synthetic

    scale = spec.default_scale if scale is None else float(scale)
    target = cache_dir() / "synthetic" / name / f"scale{scale:g}-seed{seed}"
    path = synthetic.generate_cached(name, target, scale=scale, seed=seed)
    return path, "synthetic"
