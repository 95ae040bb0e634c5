"""`jlml workbook`: run the notebooks in order through papermill, then regenerate the tables.

    jlml workbook                              # every notebook, defaults (synthetic data, CPU)
    jlml workbook --only 05                    # one notebook
    jlml workbook --from 04                    # 04, 05, ... 09
    jlml workbook --profile paper --device cuda \\
        --data-root market1501=/data/Market-1501-v15.09.15 --data-root cuhk03=/data/cuhk03_release

Executed copies go to ``results/executed/<name>.ipynb`` (a failed one is kept there too, and the
failing notebook and cell are named). Only parameters a notebook declares in its ``parameters``
cell are passed to it (:func:`jlml_lib.workbook.notebook.declared_parameters`). Chains pass their
checkpoints on: the ImageNet model of 03 initialises 04–08 when it exists; 06 and 07 both start
their CUHK03+Market-1501 stage from it, and 07 reuses the one 06 trained
(:func:`jlml_lib.workbook.steps.reid_pretraining`). Finally ``results/tables/`` is rebuilt from
every run's ``metrics.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from jlml_lib.errors import ConfigError
from jlml_lib.paths import EXECUTED, IMAGENET_STAGE, RUNS, TABLES, RunDir, repo_root
from jlml_lib.results.tables import build_tables
from jlml_lib.workbook.notebook import PROFILES, declared_parameters, notebook_dir

#: the workbook, in the order it runs
NOTEBOOKS: tuple[str, ...] = (
    "00_setup", "01_data_preparation", "02_model", "03_imagenet_pretraining", "04_cuhk03", "05_market",
    "06_viper", "07_grid", "08_ablations", "09_paper_tables", "10_diagnostics",
)
# notebook -> the dataset whose --data-root it takes as "data_root" (others take "<name>_root")
DATA_ROOT_OF = {"03_imagenet_pretraining": "imagenet", "04_cuhk03": "cuhk03", "05_market": "market1501",
                "06_viper": "viper", "07_grid": "grid", "08_ablations": "market1501", "10_diagnostics": "market1501"}
#: the datasets a --data-root can name
DATASETS = ("market1501", "cuhk03", "viper", "grid", "imagenet")
# where a chain's checkpoint is left, relative to the repo root, and which notebooks take it as `init`
CHAIN_CHECKPOINTS = {
    "imagenet": (RunDir(IMAGENET_STAGE).final, ("04_cuhk03", "05_market", "06_viper", "07_grid", "08_ablations")),
}

#: what ``jlml workbook`` passes beyond a notebook's defaults, which are the quick run nbval makes:
#: 08's Table 12 selection grid in full (3 seeds, the smoke profile's 300 iterations, both λ)
FULL_RUN: dict[str, dict[str, Any]] = {
    "08_ablations": {"sfl_seeds": 3, "sfl_iterations": None, "sfl_paper_lambda": True},
}


@dataclass
class Plan:
    notebooks: list[Path]
    params: dict[str, Any] = field(default_factory=dict)     # passed to every notebook that takes them
    data_roots: dict[str, str] = field(default_factory=dict)
    executed_dir: Path = field(default_factory=lambda: repo_root() / EXECUTED)


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
    params = {k: v for k, v in {**FULL_RUN.get(stem, {}), **plan.params}.items() if k in declared}
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


def run(plan: Plan, *, log=print) -> int:
    # imported here: papermill takes seconds to import, and environment.py (00_setup) imports
    # this module for DATASETS only
    import papermill as pm

    plan.executed_dir.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    for i, path in enumerate(plan.notebooks, 1):
        params = notebook_parameters(path, plan)
        out = plan.executed_dir / path.name
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        log(f"[{i}/{len(plan.notebooks)}] {path.name} {shown}".rstrip())
        start = time.perf_counter()
        try:
            with kernel_options() as options:
                pm.execute_notebook(str(path), str(out), parameters=params, cwd=str(repo_root()),
                                    kernel_name="python3", progress_bar=False, log_output=False, **options)
        except pm.PapermillExecutionError as err:
            log(f"FAILED {path.name} at cell {err.exec_count} after {time.perf_counter() - start:.0f} s: "
                f"{err.ename}: {err.evalue}\n  the executed copy (with the error) is kept at {out}")
            return 1
        shown_out = out.relative_to(repo_root()) if out.is_relative_to(repo_root()) else out
        log(f"      done in {time.perf_counter() - start:.0f} s -> {shown_out}")
    written = build_tables(repo_root() / RUNS, repo_root() / TABLES)
    log(f"tables: {len(written)} files in {TABLES}/; workbook wall time {time.perf_counter() - total:.0f} s")
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
    args = p.parse_args(argv)
    try:
        params = {k: v for k, v in (("profile", args.profile), ("device", args.device),
                                    ("nproc", args.nproc), ("seed", args.seed)) if v is not None}
        plan = Plan(select(args.only, args.start), params, parse_data_roots(args.data_root))
    except ConfigError as err:
        print(f"jlml workbook: {err}", file=sys.stderr)
        return 2
    return run(plan)


if __name__ == "__main__":
    raise SystemExit(main())
