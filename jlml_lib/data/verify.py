"""Check a dataset copy against its manifest and list *every* problem (``jlml data verify``).

Kinds of problem: ``missing-folder``, ``missing-file``, ``count`` (images, ids, junk,
distractors, classes, cells), ``name`` (a file that breaks the grammar), ``camera``,
``duplicate``, ``unreadable`` (an image that does not decode), ``size``, ``mat-version``,
``mat-field``, ``mat-content`` and ``checksum``. ``quick=True`` checks names and counts only
(no image decoding, no checksums). A synthetic copy (marker beside the folder) is checked
against the manifest scaled to the copy's ``scale``.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from scipy.io import loadmat

from jlml_lib.data.base import get_spec, synthetic_info
from jlml_lib.data.manifests import load_manifest, synthetic_manifest
from jlml_lib.errors import DataError


@dataclass
class Problem:
    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.message}"


@dataclass
class Report:
    name: str
    root: str
    dataset_dir: str | None
    source: str
    manifest_scale: float
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, path: Any, message: str) -> None:
        self.problems.append(Problem(kind, str(path), message))


def _locate(name: str, root: Path, man: dict) -> Path | None:
    """The dataset folder, leniently: unlike the loaders, verify must still find a copy that
    lacks a required folder, so it can say which one is missing."""
    spec = get_spec(name)
    parts = set(man.get("image_folders", {})) | set(man.get("class_folders", {})) | set(
        k for k, v in man.get("mat_files", {}).items() if v.get("required"))
    def looks(d: Path) -> bool:
        return any((d / p).exists() for p in parts)
    if looks(root):
        return root
    for f in spec.folders:
        if (root / f).is_dir():
            return root / f
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if looks(d):
            return d
    # an empty folder named like the dataset: report what it lacks. Checked last, because a
    # parent folder may carry the dataset's name too (e.g. ``viper/VIPeR``)
    return root if root.name in spec.folders else None


def verify(name: str, root: str | os.PathLike, *, quick: bool = False,
           manifest: dict | None = None) -> Report:
    """Compare the copy of ``name`` at ``root`` with its manifest; never raises for a defect."""
    if name == "cuhk03+market1501":
        raise DataError("verify the two datasets one at a time: `jlml data verify cuhk03 ROOT` "
                        "and `jlml data verify market1501 ROOT`.")
    get_spec(name)  # an unknown name: one clear ConfigError listing the known ones
    root = Path(root).expanduser()
    man = manifest if manifest is not None else load_manifest(name)
    rep = Report(name, str(root), None, "real", 1.0)
    if not root.is_dir():
        rep.add("missing-folder", root, f"the root does not exist or is not a folder; expected "
                f"{man['folder']!r} or the folder holding it.")
        return rep
    ddir = _locate(name, root, man)
    if ddir is None:
        rep.add("missing-folder", root / man["folder"],
                f"no {name} dataset folder here; expected {man['folder']!r} (or the root itself) "
                "holding " + ", ".join(sorted(man.get("image_folders", {}))
                                       or sorted(man.get("mat_files", {}))
                                       or sorted(man.get("class_folders", {}))) + ".")
        return rep
    rep.dataset_dir = str(ddir)
    info = synthetic_info(name, ddir)
    if info and manifest is None:
        rep.source = "synthetic"
        rep.manifest_scale = float(info.get("scale", 1.0))
        man = synthetic_manifest(name, rep.manifest_scale, bool(info.get("structure_only")))
    ignore = set(man.get("ignore", []))
    for folder, spec in man.get("image_folders", {}).items():
        _check_images(rep, ddir / folder, spec, ignore, quick)
    for folder, spec in man.get("other_folders", {}).items():
        _check_names(rep, ddir / folder, spec, ignore)
    for folder, spec in man.get("class_folders", {}).items():
        _check_classes(rep, ddir / folder, spec, ignore, quick)
    for fname, spec in man.get("mat_files", {}).items():
        _check_mat(rep, ddir, fname, spec, quick)
    return rep


def _list(rep: Report, folder: Path, required: bool) -> list[str] | None:
    if not folder.is_dir():
        if required:
            rep.add("missing-folder", folder, "required folder is missing; restore it from the "
                    "original archive.")
        return None
    return sorted(os.listdir(folder))


def _check_names(rep: Report, folder: Path, spec: dict, ignore: set[str]) -> list[re.Match]:
    names = _list(rep, folder, spec.get("required", True))
    if names is None:
        return []
    pat = re.compile(spec["pattern"])
    matches = []
    for n in names:
        if n in ignore or n.startswith("."):
            continue
        m = pat.match(n)
        if m is None:
            rep.add("name", folder / n, f"breaks the name grammar {spec['pattern']!r}.")
        else:
            matches.append(m)
    if "count" in spec and len(matches) != spec["count"]:
        rep.add("count", folder, f"{len(matches)} well-named files, expected {spec['count']}.")
    rep.counts[folder.name] = len(matches)
    return matches


def _check_images(rep: Report, folder: Path, spec: dict, ignore: set[str], quick: bool) -> None:
    matches = _check_names(rep, folder, spec, ignore)
    if not matches:
        return
    gd = [m.groupdict() for m in matches]
    if "pid" in gd[0]:
        pids = Counter(int(g["pid"]) for g in gd)
        for special, want in spec.get("pid_counts", {}).items():
            got = pids.get(int(special), 0)
            if got != want:
                what = {"-1": "junk (-1)", "0": "distractor (0000)"}[special]
                rep.add("count", folder, f"{got} {what} images, expected {want}.")
        ids = len([p for p in pids if p > 0])
        if "ids" in spec and ids != spec["ids"]:
            rep.add("count", folder, f"{ids} identities, expected {spec['ids']}.")
    if "cam" in gd[0] and "cameras" in spec:
        bad = sorted({int(g["cam"]) for g in gd} - set(spec["cameras"]))
        if bad:
            rep.add("camera", folder, f"cameras {bad} outside {spec['cameras']}.")
    if spec.get("one_per_id_and_camera"):
        dup = [k for k, v in Counter((g["pid"], g["cam"]) for g in gd).items() if v > 1]
        for pid, cam in dup:
            rep.add("duplicate", folder, f"pid {pid} has more than one image from camera {cam}.")
    if quick:
        return
    size = tuple(spec["size"]) if "size" in spec else None
    for m in matches:
        path = folder / m.string
        try:
            with Image.open(path) as im:
                im.load()
                got = im.size
        except Exception as exc:  # any decoder error means the file is unusable
            rep.add("unreadable", path, f"does not decode as an image ({type(exc).__name__}: "
                    f"{exc}); replace it from the original archive.")
            continue
        if size and got != size:
            rep.add("size", path, f"is {got[0]}×{got[1]} (W×H), expected {size[0]}×{size[1]}.")


def _check_classes(rep: Report, folder: Path, spec: dict, ignore: set[str], quick: bool) -> None:
    names = _list(rep, folder, spec.get("required", True))
    if names is None:
        return
    pat = re.compile(spec["class_pattern"])
    exts = tuple(e.lower() for e in spec["ext"])
    classes, total = 0, 0
    for c in names:
        if c in ignore or c.startswith("."):
            continue
        d = folder / c
        if not d.is_dir() or not pat.match(c):
            rep.add("name", d, f"is not a class folder named like {spec['class_pattern']!r}.")
            continue
        classes += 1
        for f in sorted(os.listdir(d)):
            if f in ignore or f.startswith("."):
                continue
            if not f.lower().endswith(exts):
                rep.add("name", d / f, f"is not an image ({', '.join(spec['ext'])}).")
                continue
            total += 1
            if not quick:
                try:
                    with Image.open(d / f) as im:
                        im.load()
                except Exception as exc:
                    rep.add("unreadable", d / f, f"does not decode ({type(exc).__name__}: {exc}).")
    if classes != spec["classes"]:
        rep.add("count", folder, f"{classes} class folders, expected {spec['classes']}.")
    if total != spec["count"]:
        rep.add("count", folder, f"{total} images, expected {spec['count']}.")
    rep.counts[folder.name] = total


def mat_version(path: Path) -> str | None:
    """'5' or '7.3' from the 128-byte MAT header, None if it is not a MAT file."""
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 7.3"):
        return "7.3"
    if head.startswith(b"MATLAB 5.0"):
        return "5"
    return None


def _check_mat(rep: Report, ddir: Path, fname: str, spec: dict, quick: bool) -> None:
    search = [ddir / s / fname if s else ddir / fname for s in spec.get("search", [""])]
    path = next((p for p in search if p.is_file()), None)
    if path is None:
        if spec.get("required", True):
            rep.add("missing-file", ddir / fname, "required file is missing; restore it from the "
                    "original archive.")
        return
    version = mat_version(path)
    if version != spec["version"]:
        rep.add("mat-version", path, f"is {'MATLAB v' + version if version else 'not a MAT file'}"
                f", expected MATLAB v{spec['version']}.")
        return
    if not quick and spec.get("sha256"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != spec["sha256"]:
            rep.add("checksum", path, f"sha256 {digest[:12]}… differs from the published file "
                    f"({spec['sha256'][:12]}…); fetch it again.")
    try:
        if version == "7.3":
            _check_v73(rep, path, spec, quick)
        else:
            _check_v5(rep, path, spec)
    except Exception as exc:  # a truncated/corrupt file: one clear line, no traceback
        rep.add("mat-content", path, f"cannot be read ({type(exc).__name__}: {exc}); the file "
                "is truncated or damaged, fetch it again.")


def _check_v5(rep: Report, path: Path, spec: dict) -> None:

    m = loadmat(str(path))
    missing = [f for f in spec["fields"] if f not in m]
    for f in missing:
        rep.add("mat-field", path, f"field {f!r} is missing.")
    if missing:
        return
    for f, want in spec.get("counts", {}).items():
        got = m[f].size
        if got != want:
            rep.add("count", path, f"{f} has {got} entries, expected {want}.")
    if "ids" in spec:
        labels = m["labels"].ravel()
        for part, key in (("train", "train_idx"), ("test", "query_idx")):
            got = len(np.unique(labels[m[key].ravel().astype(int) - 1]))
            if got != spec["ids"][part]:
                rep.add("count", path, f"{got} {part} identities, expected {spec['ids'][part]}.")
    if "grid" in spec:
        g = spec["grid"]
        cells = m["trainIdxAll"].ravel()
        if len(cells) != g["folds"]:
            rep.add("count", path, f"trainIdxAll has {len(cells)} folds, expected {g['folds']}.")
        for k, cell in enumerate(cells):
            rec = np.asarray(cell).ravel()[0]
            ids = np.asarray(rec["personIdx"] if "personIdx" in (rec.dtype.names or ())
                             else rec[2]).ravel()
            if len(set(ids.tolist())) != g["train_ids"] or ids.min() < 1 or ids.max() > g["ids"]:
                rep.add("mat-content", path, f"fold {k + 1} lists {len(set(ids.tolist()))} "
                        f"distinct ids in {ids.min():.0f}..{ids.max():.0f}, expected "
                        f"{g['train_ids']} in 1..{g['ids']}.")


def _check_v73(rep: Report, path: Path, spec: dict, quick: bool) -> None:

    with h5py.File(path, "r") as fh:
        missing = [f for f in spec["fields"] if f not in fh]
        for f in missing:
            rep.add("mat-field", path, f"field {f!r} is missing.")
        if missing or "cuhk03" not in spec:
            return
        c = spec["cuhk03"]
        for kind in ("labeled", "detected"):
            pairs = fh[kind][0]
            persons = [fh[r].shape[1] for r in pairs]
            if persons != c["persons_per_pair"]:
                rep.add("count", path, f"{kind}: persons per camera pair {persons}, expected "
                        f"{c['persons_per_pair']}.")
            per_pair = []
            for p, r in enumerate(pairs):
                refs = fh[r][()]
                n = 0
                for ref in refs.ravel():
                    ds = fh[ref]
                    if ds.ndim != 3:
                        continue
                    n += 1
                    if not quick:
                        if ds.dtype != np.uint8 or ds.shape[0] != 3:
                            rep.add("mat-content", path, f"{kind} pair {p + 1}: a cell holds "
                                    f"{ds.dtype} {ds.shape[::-1]}, expected H×W×3 uint8.")
                        else:
                            ds[()]  # decode: a truncated file fails here
                per_pair.append(n)
            want = c["images"][kind]
            if per_pair != want["per_pair"]:
                rep.add("count", path, f"{kind}: {sum(per_pair)} images {per_pair} per pair, "
                        f"expected {want['total']} {want['per_pair']}.")
            rep.counts[f"{kind}_images"] = sum(per_pair)
        sets = fh["testsets"][0]
        if len(sets) != c["testsets"]:
            rep.add("count", path, f"testsets has {len(sets)} splits, expected {c['testsets']}.")
        for k, r in enumerate(sets):
            shape = fh[r].shape[::-1]
            if shape != (c["test_ids"], 2):
                rep.add("mat-content", path, f"testsets{{{k + 1}}} is {shape}, expected "
                        f"({c['test_ids']}, 2) [pair, person] rows.")
