"""When a notebook's training run is reused, and what happens to one that is not.

A run launched by :func:`jlml_lib.workbook.launch.train` is reused (not trained again) when its
folder holds a *finished* run whose **fingerprint** equals the one this launch would produce.
The fingerprint is the sha256 of four things, kept readable in the run's ``fingerprint.json``
(``paths.FINGERPRINT``, written atomically once the run succeeded):

* ``options`` — the exact command options: dataset, profile, iterations, splits, seeds, every
  ``key=value`` override (device, switches, …) and the number of processes;
* ``data`` — which data: each given root, resolved (``~``, ``..`` and links followed); with no
  root, the synthetic copy's identity: its cache folder (``$JLML_CACHE/synthetic/<dataset>``) and
  the generator's ``VERSION`` (the generator's code is in ``code``; scale and seed in ``options``);
* ``init`` — the sha256 of the ``--init`` checkpoint's bytes (cached by path, size and mtime), so
  a re-trained upstream stage changes every run that starts from it;
* ``code`` — the sha256 of every ``jlml_lib/**/*.py`` file (path and bytes, sorted by path).

*Finished* means the run's trained weights exist (``checkpoints/final.pt``, of its first split
or seed) and so does its ``metrics.json`` (unless it was launched with ``evaluate=false``).

A run that is not reused is never deleted: :func:`set_aside` renames its folder to
``<folder>.previous-<UTC time>`` (``paths.SET_ASIDE``). Of those copies, only synthetic-data ones
are pruned, the :data:`KEEP_SYNTHETIC` newest kept; a copy on real (or mixed, or unknown) data is
never removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jlml_lib.data.base import cache_dir
from jlml_lib.io import write_json
from jlml_lib.paths import SET_ASIDE, RunDir

#: set-aside copies of a synthetic-data run kept per run folder (older ones are removed)
KEEP_SYNTHETIC = 2
#: the parts of a fingerprint, in the order a difference is reported
PARTS = ("options", "data", "init", "code")
# command-line options whose value is a path: they enter the fingerprint by identity, not by
# spelling (a root resolved, a checkpoint by its bytes); the run folder itself does not enter
_PATH_OPTIONS = ("--out", "--data-root", "--init")

_file_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached by (resolved path, size, mtime): a checkpoint of hundreds
    of MB is hashed once per process, and again only when it changed."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _file_hashes[key] = h.hexdigest()
    return _file_hashes[key]


def code_fingerprint(package: str | os.PathLike | None = None) -> str:
    """sha256 over every ``*.py`` file of the package (``jlml_lib`` by default): each file's path
    relative to the package and its bytes, sorted by path. Computed afresh each call (a few ms):
    a kernel keeps running old code, but the training subprocess imports the files as they are."""
    root = Path(package) if package is not None else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _resolved(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def _is_root_override(arg: str) -> bool:
    """``data.cuhk03_root=PATH`` and the like: a root, entering ``data`` resolved."""
    key, sep, _ = arg.partition("=")
    return bool(sep) and key.startswith("data.") and key.endswith("_root")


def run_inputs(cmd: Sequence[str], dataset: str, *, data_root: str | os.PathLike | None = None,
               init: str | os.PathLike | None = None,
               overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What shapes a run launched with ``cmd`` (:func:`jlml_lib.workbook.launch.command`): the
    four parts of the fingerprint (module docstring). ``--resume`` does not enter: a resumed run
    ends as the same run."""
    options, args = [], list(cmd[1:])  # not the interpreter: the same code under another path
    while args:
        arg = args.pop(0)
        if arg in _PATH_OPTIONS:
            args.pop(0)
        elif arg != "--resume" and not _is_root_override(arg):
            options.append(arg)
    roots = {key: _resolved(value) for key, value in (overrides or {}).items()
             if key.startswith("data.") and key.endswith("_root") and value}
    if data_root:
        roots["data_root"] = _resolved(data_root)
    from jlml_lib.data.synthetic import VERSION  # the generator's own version of its output

    data: dict[str, Any] = {"roots": roots}
    if not data_root:  # the synthetic copy, or for a combined stage the components without a root
        data["synthetic"] = {"cache": _resolved(cache_dir() / "synthetic" / dataset), "version": VERSION}
    return {"options": options, "data": data, "init": file_sha256(init) if init else None,
            "code": code_fingerprint()}


def digest(inputs: Mapping[str, Any]) -> str:
    """The fingerprint: sha256 of the inputs as canonical JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def write_fingerprint(run_dir: str | os.PathLike, inputs: Mapping[str, Any]) -> Path:
    """Record what shaped the run (after it succeeded; atomic, so it is complete or absent)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return write_json(RunDir(run_dir).fingerprint, {"sha256": digest(inputs), "inputs": dict(inputs),
                                                     "written": now})


def read_fingerprint(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        saved = json.loads(RunDir(run_dir).fingerprint.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "sha256" in saved else None


def finished(run_dir: str | os.PathLike, inputs: Mapping[str, Any] | None = None) -> bool:
    """The run's weights are saved and, unless launched with ``evaluate=false``, its record too."""
    run = RunDir(run_dir)
    evaluates = "evaluate=false" not in (inputs or {}).get("options", [])
    return run.first_run().final.is_file() and (run.metrics.is_file() or not evaluates)


def differences(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """Why a run is not reused, in words: which parts of the fingerprint changed."""
    if old is None:
        return "no fingerprint.json: trained before runs were fingerprinted, or not by a notebook"
    changed = []
    for part in PARTS:
        if old.get(part) != new.get(part):
            if part == "options":
                before, after = _items(old.get(part, [])), _items(new[part])
                gone = [o for o in before if o not in after]
                added = [o for o in after if o not in before]
                changed.append(f"options ({' '.join(gone) or '-'} -> {' '.join(added) or '-'})")
            else:
                changed.append({"data": "data", "init": "the --init checkpoint",
                                "code": "the jlml_lib code"}[part])
    return "changed: " + ", ".join(changed) if changed else "same inputs"


def _items(options: Sequence[str]) -> list[str]:
    """Command options with their values: ``["--iterations 40", "sfl=false", ...]``."""
    items, args = [], list(options)
    while args:
        arg = args.pop(0)
        if arg.startswith("--") and "=" not in arg and args and not args[0].startswith("-"):
            arg = f"{arg} {args.pop(0)}"
        items.append(arg)
    return items


def reusable(run_dir: str | os.PathLike, inputs: Mapping[str, Any]) -> tuple[bool, str]:
    """``(reuse?, why)`` for the folder ``run_dir`` and the inputs of the launch about to happen."""
    saved = read_fingerprint(run_dir)
    if not finished(run_dir, inputs):
        return False, "the run there is unfinished (no checkpoints/final.pt or metrics.json)"
    if saved is None or saved["sha256"] != digest(inputs):
        return False, differences(saved and saved.get("inputs"), inputs)
    return True, (f"finished run from {saved.get('written', '?')} with the same options, data, "
                  "--init checkpoint and jlml_lib code")


def run_source(run_dir: str | os.PathLike) -> str | None:
    """The data source ("real", "synthetic", "mixed") a run's config.json records, or None."""
    try:
        return json.loads(RunDir(run_dir).first_run().config.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def set_aside_copies(run_dir: str | os.PathLike) -> list[Path]:
    """The folder's set-aside copies, oldest first (their names end in a sortable UTC time)."""
    path = Path(run_dir)
    return sorted(p for p in path.parent.glob(f"{path.name}{SET_ASIDE}*") if p.is_dir())


def set_aside(run_dir: str | os.PathLike, why: str, *, keep: int = KEEP_SYNTHETIC,
              log: Callable[[str], Any] = print) -> Path:
    """Move the folder to ``<folder>.previous-<UTC time>`` (a rename: nothing is copied or lost),
    then prune the oldest synthetic-data copies beyond ``keep``. Returns the new place."""
    path = Path(run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, n = path.with_name(f"{path.name}{SET_ASIDE}{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{SET_ASIDE}{stamp}-{n}")
    os.replace(path, target)
    log(f"not reusing {path} ({why}); the previous run is kept in {target}")
    synthetic = [p for p in set_aside_copies(path) if run_source(p) == "synthetic"]
    for old in synthetic[:max(len(synthetic) - keep, 0)]:
        shutil.rmtree(old)
        log(f"removed {old}: of a synthetic-data run's set-aside copies the {keep} newest are kept "
            "(a real-data run is never removed)")
    return target
