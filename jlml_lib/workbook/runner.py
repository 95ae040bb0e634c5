"""`jlml workbook`: run the notebooks in order through papermill, then regenerate the tables.

    jlml workbook                              # every notebook, quick defaults (synthetic data, CPU)
    jlml workbook --full                       # + the heavy studies (FULL_RUN: 08's whole SFL grid)
    jlml workbook --fresh                      # execute every notebook and train every run anew
    jlml workbook --only 05                    # one notebook
    jlml workbook --from 04                    # 04, 05, ... 10
    jlml workbook --profile paper --device cuda \\
        --data-root market1501=/data/Market-1501-v15.09.15 --data-root cuhk03=/data/cuhk03_release
    jlml workbook --preflight --profile paper --device cuda --data-root ...   # every training stage for a
                                               # few steps; nothing in runs/ (jlml_lib.workbook.preflight)

Executed copies go to ``results/executed/<name>.ipynb`` (a failed one is kept there too, and the
failing notebook and cell are named). Only parameters a notebook declares in its ``parameters``
cell are passed to it (:func:`jlml_lib.workbook.notebook.declared_parameters`). Chains pass their
checkpoints on: the ImageNet model of 03 initialises 04–08 when it exists; 06 and 07 both start
their CUHK03+Market-1501 stage from it, and 07 reuses the one 06 trained
(:func:`jlml_lib.workbook.steps.reid_pretraining`). Finally ``results/tables/`` is rebuilt from
every run's ``metrics.json``.

Quick by default: every notebook runs with its own defaults, the quick run nbval makes, except
what the command line sets. ``--full`` adds :data:`FULL_RUN` (the one owner of what it adds).

Reuse, decided twice:

* **a notebook** is skipped ("unchanged since <time>, skipped") when its executed copy carries a
  stamp (``metadata["jlml"]``, written by this runner) saying that it executed without error
  with the same notebook file (sha256 of its bytes: prose included), the same parameters, the
  same bytes of every parameter that names a file (the ``init`` checkpoint), the same
  ``jlml_lib`` code (:func:`jlml_lib.workbook.reuse.code_fingerprint`), and no run record
  (``runs/**/metrics.json``) was written after it finished — except by a later notebook of the
  workbook while it executed (its own stamp's time window), since a notebook reads only the runs
  of itself and the notebooks before it;
* **a training run** a notebook launches is reused by :func:`jlml_lib.workbook.launch.train`
  when a finished run with the same fingerprint is in its folder (options, data, ``--init``
  bytes, code; :mod:`jlml_lib.workbook.reuse`); any other run there is moved aside to
  ``<folder>.previous-<UTC time>``, never deleted.

``--fresh`` executes every notebook and sets ``JLML_FRESH=1`` for their kernels, so every run is
trained anew (the old ones set aside). Progress: one line when a notebook starts (with its last
measured time) and one when it ends, with the expected remaining time from the times measured
last (``results/executed/timings.json``, per kind of run: quick, full, profile, device, data).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from jlml_lib.errors import ConfigError
from jlml_lib.io import write_text
from jlml_lib.paths import EXECUTED, IMAGENET_STAGE, METRICS, PUBLISHED, RUNS, TABLES, TIMINGS, RunDir, repo_root
from jlml_lib.workbook.launch import FRESH_ENV
from jlml_lib.workbook.reuse import code_fingerprint, file_sha256
from jlml_lib.results.tables import build_tables
from jlml_lib.workbook import progress, publish
from jlml_lib.workbook.notebook import DATA_ROOT_OF, PROFILES, declared_parameters, notebook_dir

#: the workbook, in the order it runs
NOTEBOOKS: tuple[str, ...] = (
    "00_setup", "01_data_preparation", "02_model", "03_imagenet_pretraining", "04_cuhk03", "05_market",
    "06_viper", "07_grid", "08_ablations", "09_paper_tables", "10_diagnostics",
)
#: the datasets a --data-root can name
DATASETS = ("market1501", "cuhk03", "viper", "grid", "imagenet")
# where a chain's checkpoint is left, relative to the repo root, and which notebooks take it as `init`
CHAIN_CHECKPOINTS = {
    "imagenet": (RunDir(IMAGENET_STAGE).final, ("04_cuhk03", "05_market", "06_viper", "07_grid", "08_ablations")),
}

#: what ``jlml workbook --full`` passes beyond a notebook's defaults (the quick run that
#: ``jlml workbook`` and nbval make): 08's Table 12 selection grid in full (3 seeds, the smoke
#: profile's 120 iterations, both λ)
FULL_RUN: dict[str, dict[str, Any]] = {
    "08_ablations": {"sfl_seeds": 3, "sfl_iterations": None, "sfl_paper_lambda": True},
}


@dataclass
class Plan:
    notebooks: list[Path]
    params: dict[str, Any] = field(default_factory=dict)     # passed to every notebook that takes them
    data_roots: dict[str, str] = field(default_factory=dict)
    executed_dir: Path = field(default_factory=lambda: repo_root() / EXECUTED)
    full: bool = False      # pass FULL_RUN
    fresh: bool = False     # execute every notebook, train every run anew

    def kind(self) -> str:
        """What the measured times are kept under: a full run takes longer than a quick one,
        a GPU run than a CPU one."""
        words = [progress.FULL if self.full else progress.QUICK] + [f"{k}={v}" for k, v in sorted(self.params.items())]
        return " ".join(words + [f"{k}=real" for k in sorted(self.data_roots)])


def select(only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """The notebooks to run, in order; ``only``/``start`` take prefixes such as ``05``."""
    available = [notebook_dir() / f"{n}.ipynb" for n in NOTEBOOKS if (notebook_dir() / f"{n}.ipynb").exists()]

    def find(prefix: str) -> int:
        hits = [i for i, p in enumerate(available) if p.stem.startswith(prefix)]
        if not hits:
            raise ConfigError(f"no notebook matches {prefix!r}; available: {', '.join(p.stem for p in available)}")
        return hits[0]

    if only:
        return [available[find(p)] for p in only]
    return available[find(start):] if start else available


def parse_data_roots(items: list[str]) -> dict[str, str]:
    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in DATASETS or not path:
            raise ConfigError(f"--data-root expects NAME=PATH with NAME in {', '.join(DATASETS)}; got {item!r}")
        if not Path(path).expanduser().exists():
            raise ConfigError(f"--data-root {name}={path}: that folder does not exist")
        roots[name] = str(Path(path).expanduser().resolve())
    return roots


def chain_init(path: Path, upstream: str, ckpt: Path, plan: Plan, params: dict[str, Any]) -> str | None:
    """The checkpoint of the ``upstream`` stage (its notebook, e.g. 03 for "imagenet") that notebook
    ``path`` takes as ``init``, or None (it trains from scratch; its banner says so on real data).

    Issue 19: a checkpoint this plan trains first (its notebook runs earlier in the plan) is passed
    as it will be; one left by an earlier workbook only when it fits the plan -- the profile
    (Table 4's "Pre-train" row for ``paper``, ``smoke`` for smoke), real data where this plan trains
    a real paper-profile run or names the upstream dataset's root, that same root -- else a
    ConfigError in one line saying which setting differs and how to proceed."""
    from jlml_lib.provenance import checkpoint_facts, dataset_label, read_checkpoint
    from jlml_lib.workbook.notebook import parameter_default
    from jlml_lib.workbook.steps import train_profile

    producer = next((s for s, name in DATA_ROOT_OF.items() if name == upstream), None)
    earlier = plan.notebooks[:plan.notebooks.index(path)] if path in plan.notebooks else []
    if producer in [p.stem for p in earlier]:
        return str(ckpt)  # trained by this plan before `path` runs, with the same profile and roots
    if not ckpt.exists():
        return None
    profile = params.get("profile") or parameter_default(path, "profile")
    real_here = any(params.get(k) for k in ("data_root", *(f"{n}_root" for n in DATASETS)))
    root = plan.data_roots.get(upstream)
    saved = read_checkpoint(ckpt)
    facts = checkpoint_facts(saved)
    saved_root = (saved or {}).get("config", {}).get("data_root")
    want = train_profile(profile, pretraining=True)
    name = dataset_label(upstream)
    if saved is None or facts["dataset"] != upstream:
        why = f"it is not a jlml checkpoint of {name} (dataset {facts['dataset']})"
    elif facts["profile"] != want:
        why = f"it was trained with profile {facts['profile']}, this plan's {profile} runs need {want}"
    elif facts["source"] != "real" and (root or (real_here and profile == "paper")):
        why = (f"it was trained on {facts['source']} {name}, and this plan trains {path.stem} on real data "
               f"with profile {profile}" if not root else f"it was trained on {facts['source']} {name}, not "
               f"the --data-root {upstream}={root} of this plan")
    elif root and saved_root and Path(saved_root).expanduser().resolve() != Path(root):
        why = f"it was trained on {name} at {saved_root}, not the --data-root {upstream}={root} of this plan"
    else:
        return str(ckpt)
    real_root = root or (real_here and profile == "paper" and "PATH")  # a real run needs real upstream data
    redo = " ".join(filter(None, (f"jlml workbook --only {producer}", plan.params.get("profile") and
                                  f"--profile {plan.params['profile']}", real_root and f"--data-root {upstream}={real_root}")))
    raise ConfigError(f"{ckpt} cannot start {path.stem}: {why}. Re-run {producer} with this plan's profile and "
                      f"roots ({redo}), or pass init explicitly (papermill notebooks/{path.name} OUT -p init PATH).")


def notebook_parameters(path: Path, plan: Plan) -> dict[str, Any]:
    """The parameters this notebook declares, filled from the plan and the checkpoint chains."""
    declared = declared_parameters(path)
    stem = path.stem
    full = FULL_RUN.get(stem, {}) if plan.full else {}
    params = {k: v for k, v in {**full, **plan.params}.items() if k in declared}
    if "data_root" in declared and DATA_ROOT_OF.get(stem) in plan.data_roots:
        params["data_root"] = plan.data_roots[DATA_ROOT_OF[stem]]
    for name in DATASETS:  # notebooks that see several datasets (01) take <name>_root
        if f"{name}_root" in declared and name in plan.data_roots:
            params[f"{name}_root"] = plan.data_roots[name]
    if "init" in declared and "init" not in params:  # an init given explicitly is the user's choice
        for upstream, (ckpt, consumers) in CHAIN_CHECKPOINTS.items():
            if stem in consumers and (chained := chain_init(path, upstream, repo_root() / ckpt, plan, params)):
                params["init"] = chained
    return params


@contextlib.contextmanager
def kernel_options() -> Iterator[dict[str, Any]]:
    """papermill's options for the notebooks' kernels, without ipykernel's start-up warning.

    Over TCP (jupyter_client's default) every kernel logs "Kernel is running over TCP without
    encryption..." to the terminal, between the progress lines. On POSIX the kernels talk over
    Unix sockets (IPC) instead, in a private temporary folder (jupyter_client would put them in the
    working folder, the repository root); elsewhere they stay on TCP with the kernel's log level at
    ERROR. Errors in cells reach the runner through the messages either way.
    """
    if os.name != "posix":
        yield {"extra_arguments": ["--IPKernelApp.log_level=ERROR"]}
        return
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="jlml-kernel-") as folder:
        # socket files are "<ip>-<port>"; the folder is private to this user (mkdtemp: 0700)
        yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel")}})}


# ---------------------------------------------------------------- notebook reuse
#: the executed copy's metadata key holding this runner's stamp
STAMP = "jlml"


def stamp_inputs(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    """What an execution of the notebook depends on, besides the run records: its file, its
    parameters, the bytes of every parameter that names a file (the ``init`` checkpoint), the code."""
    params = json.loads(json.dumps(params, default=str))  # as the executed copy stores them
    files = {k: file_sha256(v) for k, v in params.items() if isinstance(v, str) and Path(v).is_file()}
    return {"notebook": file_sha256(path), "parameters": params, "files": files, "code": code_fingerprint()}


_stamps: dict[tuple[str, int, int], Any] = {}


def read_stamp(executed: Path) -> dict[str, Any] | None:
    """The stamp of an executed copy (None: no copy, not executed by this runner, or unreadable).
    Read as plain JSON (no nbformat validation of a copy that is only looked at), once per
    version of the file: the ETA looks at every later copy after each notebook."""
    try:
        st = executed.stat()
        key = (str(executed), st.st_size, st.st_mtime_ns)
        if key not in _stamps:
            _stamps[key] = json.loads(executed.read_text(encoding="utf-8"))["metadata"].get(STAMP)
        stamp = _stamps[key]
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return stamp if isinstance(stamp, dict) and {"inputs", "started", "finished"} <= stamp.keys() else None


def write_stamp(executed: Path, inputs: dict[str, Any], started: float, finished: float, ok: bool) -> None:
    """Stamp the executed copy papermill wrote (atomically; nbformat's own layout kept)."""
    nb = json.loads(executed.read_text(encoding="utf-8"))
    nb.setdefault("metadata", {})[STAMP] = {"inputs": inputs, "started": started, "finished": finished,
                                            "ok": ok}
    write_text(executed, json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def run_records(runs_root: Path) -> list[tuple[Path, float]]:
    """Every run record under ``runs_root`` and its modification time."""
    found = []
    for path in runs_root.rglob(METRICS) if runs_root.is_dir() else []:
        try:
            found.append((path, path.stat().st_mtime))
        except OSError:  # removed while we looked
            continue
    return found


def unchanged_since(path: Path, params: dict[str, Any], plan: Plan,
                    records: list[tuple[Path, float]] | None = None) -> float | None:
    """When the notebook last executed, if it may be skipped now (module docstring: how reuse is
    decided); None when it must execute."""
    if plan.fresh:
        return None
    stamp = read_stamp(plan.executed_dir / path.name)
    if stamp is None or not stamp.get("ok") or stamp["inputs"] != stamp_inputs(path, params):
        return None
    # the time windows in which later notebooks executed: what they wrote, this one never read
    windows = [(s["started"], s["finished"]) for later in sorted(plan.executed_dir.glob("*.ipynb"))
               if later.stem > path.stem and (s := read_stamp(later))]
    for _, mtime in run_records(repo_root() / RUNS) if records is None else records:
        if mtime > stamp["finished"] and not any(a <= mtime <= b for a, b in windows):
            return None
    return float(stamp["finished"])


# ---------------------------------------------------------------- running
@contextlib.contextmanager
def fresh_runs(fresh: bool) -> Iterator[None]:
    """``JLML_FRESH=1`` for the kernels (they inherit this environment) while the workbook runs."""
    before = os.environ.get(FRESH_ENV)
    if fresh:
        os.environ[FRESH_ENV] = "1"
    try:
        yield
    finally:
        if fresh:
            if before is None:
                os.environ.pop(FRESH_ENV, None)
            else:
                os.environ[FRESH_ENV] = before


def describe(plan: Plan) -> str:
    """The first line: which run this is and what the other one would add."""
    full = "; ".join(f"{stem}: {' '.join(f'{k}={v}' for k, v in add.items())}" for stem, add in FULL_RUN.items())
    kind = (f"full run ({full})" if plan.full else
            f"quick run (each notebook's defaults; `jlml workbook --full` adds {full})")
    reuse = ("--fresh: every notebook executes and every run is trained anew" if plan.fresh else
             "unchanged notebooks are skipped, finished runs reused (--fresh forces all)")
    return f"jlml workbook: {len(plan.notebooks)} notebook(s), {kind}; {reuse}"


def reference_times(plan: Plan, timings_file: Path) -> dict[str, float]:
    """The last measured time of each notebook under the plan's kind: this machine's, else (a
    notebook it never timed, a fresh clone) the one of the run the repository shows. Under
    ``--full`` the notebooks that FULL_RUN does not change take their quick times, and the other
    way round: they run the same."""
    kind, other = plan.kind(), dataclasses.replace(plan, full=not plan.full).kind()  # same options
    known = progress.latest(progress.load(repo_root() / PUBLISHED / TIMINGS), progress.load(timings_file),
                            kinds=(kind, other))
    times = dict(known.get(kind, {}))
    times.update({n: t for n, t in known.get(other, {}).items() if n not in FULL_RUN and n not in times})
    return times


def run(plan: Plan, *, log: Callable[[str], Any] = print) -> int:
    """Execute (or skip) the plan's notebooks in order, then rebuild the tables; 0 or 1 (failed)."""
    # imported here: papermill takes seconds to import, and environment.py (00_setup) imports
    # this module for DATASETS only
    import papermill as pm


    plan.executed_dir.mkdir(parents=True, exist_ok=True)
    timings_file, kind = plan.executed_dir / TIMINGS, plan.kind()
    times = reference_times(plan, timings_file)
    measured: dict[str, float] = {}  # this run's times, against `times` for the pace
    params = {path.stem: notebook_parameters(path, plan) for path in plan.notebooks}

    def eta(after: int) -> str:
        """The expected remaining time after notebook ``after`` (0-based): the last measured times
        of the remaining ones that will probably execute (those that look unchanged now are
        counted as skipped), scaled by how fast this run has gone so far against its last times."""
        records = run_records(repo_root() / RUNS)
        rest = [p for p in plan.notebooks[after + 1:] if unchanged_since(p, params[p.stem], plan, records) is None]
        return progress.remaining(times, [p.stem for p in rest], speed=progress.pace(measured, times))

    log(f"{describe(plan)}; {eta(-1)}")
    total = time.perf_counter()
    with fresh_runs(plan.fresh):
        for i, path in enumerate(plan.notebooks):
            head = f"[{i + 1}/{len(plan.notebooks)}] {path.name}"
            since = unchanged_since(path, params[path.stem], plan)
            if since is not None:
                log(f"{head} unchanged since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}, skipped")
                continue
            out = plan.executed_dir / path.name
            shown = " ".join(f"{k}={v}" for k, v in params[path.stem].items())
            last = f" (last time {progress.duration(times[path.stem])})" if path.stem in times else ""
            log(" ".join(filter(None, (head, shown))) + last)
            inputs = stamp_inputs(path, params[path.stem])
            started, start = time.time(), time.perf_counter()
            try:
                with kernel_options() as options:
                    pm.execute_notebook(str(path), str(out), parameters=params[path.stem], cwd=str(repo_root()),
                                        kernel_name="python3", progress_bar=False, log_output=False, **options)
            except pm.PapermillExecutionError as err:
                # stamped too (not ok): the runs it wrote fall in its time window
                write_stamp(out, inputs, started, time.time(), ok=False)
                log(f"FAILED {path.name} at cell {err.exec_count} after "
                    f"{progress.duration(time.perf_counter() - start)}: {err.ename}: {err.evalue}\n"
                    f"  the executed copy (with the error) is kept at {out}")
                return 1
            seconds = time.perf_counter() - start
            write_stamp(out, inputs, started, time.time(), ok=True)
            progress.record(timings_file, kind, path.stem, seconds)
            measured[path.stem] = seconds
            shown_out = out.relative_to(repo_root()) if out.is_relative_to(repo_root()) else out
            log(f"      done in {progress.duration(seconds)} -> {shown_out}; {eta(i)}")
    written = build_tables(repo_root() / RUNS, repo_root() / TABLES)
    log(f"tables: {len(written)} files in {TABLES}/")
    complete = [p.stem for p in plan.notebooks] == [p.stem for p in select()]
    if publish.publishable(plan.params, plan.data_roots, full=plan.full, complete=complete):
        shown = publish.publish(plan.executed_dir)
        log(f"published: {len(shown)} files in {PUBLISHED}/ (the quick synthetic run the repository shows)")
    log(f"workbook wall time {progress.duration(time.perf_counter() - total)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jlml workbook", description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (prefixes, e.g. 02 05)")
    p.add_argument("--from", dest="start", metavar="NN", help="start at this notebook")
    p.add_argument("--profile", choices=PROFILES, help="training profile (default: each notebook's)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: each notebook's)")
    p.add_argument("--nproc", type=int, help="processes per training run (torchrun); GPUs on one machine")
    p.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                   help=f"a real dataset copy; NAME in {', '.join(DATASETS)}; repeat for several")
    p.add_argument("--seed", type=int)
    p.add_argument("--full", action="store_true",
                   help="also the heavy studies the quick run leaves out: " + "; ".join(
                       f"{stem} {' '.join(f'{k}={v}' for k, v in add.items())}" for stem, add in FULL_RUN.items()))
    p.add_argument("--fresh", action="store_true",
                   help="execute every notebook and train every run anew (finished runs are set aside, not reused)")
    p.add_argument("--preflight", action="store_true",
                   help="rehearse every training stage (03-08) for a few iterations with these roots, profile and "
                        "device, on a slice of each test set; writes nothing into runs/ or results/; ends with "
                        "each stage's step time and the hours the real schedule would take")
    p.add_argument("--preflight-out", metavar="DIR",
                   help="keep the preflight's runs and output in DIR (new or empty; default: a temporary folder)")
    args = p.parse_args(argv)
    if args.preflight or args.preflight_out:
        from jlml_lib.workbook import preflight

        try:
            if not args.preflight or args.only or args.start or args.full or args.fresh:
                raise ConfigError("--preflight rehearses every training stage and takes --profile, --device, "
                                  "--nproc, --seed, --data-root and --preflight-out only")
            params = {k: getattr(args, k) for k in preflight.PARAMS if getattr(args, k) is not None}
            roots = parse_data_roots(args.data_root)
            out = preflight.check_out(args.preflight_out) if args.preflight_out else None
        except ConfigError as err:
            print(f"jlml workbook: {err}", file=sys.stderr)
            return 2
        return preflight.run(params, roots, out=out)
    try:
        params = {k: v for k, v in (("profile", args.profile), ("device", args.device),
                                    ("nproc", args.nproc), ("seed", args.seed)) if v is not None}
        plan = Plan(select(args.only, args.start), params, parse_data_roots(args.data_root),
                    full=args.full, fresh=args.fresh)
    except ConfigError as err:
        print(f"jlml workbook: {err}", file=sys.stderr)
        return 2
    return run(plan)


if __name__ == "__main__":
    raise SystemExit(main())
