"""Launch a training run from a notebook, as a subprocess.

DDP cannot run inside a Jupyter kernel, so notebooks never train in-process: they call
:func:`train`, which runs ``python -m jlml_lib.train`` (one process) or
``torchrun --standalone --nproc_per_node=N -m jlml_lib.train`` (N processes, e.g. N GPUs) with the
same arguments, streams its output into the notebook, and returns the run folder; a finished run
with the same fingerprint is reused instead (:mod:`jlml_lib.workbook.reuse`). A failed run
raises :class:`TrainingFailed` with the command and the end of its output, so the notebook's
failing cell says what went wrong. Reading the finished run is :mod:`jlml_lib.results.runs`.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

from jlml_lib.errors import ConfigError
from jlml_lib.workbook import reuse

#: set to "1" (`jlml workbook --fresh`) to train every run anew instead of reusing a finished one
FRESH_ENV = "JLML_FRESH"

#: a line of the training's output that reports a failure; echoed even when progress lines are
#: thinned out. Anchored at the line's start (after torchrun's "[rankN]:" prefix): a Python
#: traceback's first and last lines ("Traceback ...", "pkg.SomeError: ..."), logging's "ERROR",
#: argparse's "...: error: ..." and the training CLI's own refusals ("jlml train: ...").
ERROR_LINE = re.compile(
    r"^(\[rank\d+\]:\s*)?("
    r"Traceback \(most recent call last\):"
    r"|([\w.]+\.)?\w*(Error|Exception|Interrupt)(:|$)"
    r"|ERROR\b"
    r"|jlml train: "
    r"|[\w. -]+: error: )")

#: lines of output kept for the error message of a failed run
TAIL_LINES = 40


class TrainingFailed(RuntimeError):
    """The training subprocess exited with a non-zero status."""


def command(dataset: str, out_dir: str | Path, *, profile: str = "smoke", data_root: str | None = None,
            init: str | None = None, iterations: int | None = None, splits: str | Sequence[int] | None = None,
            overrides: Mapping[str, Any] | None = None, nproc: int = 1, resume: bool = False,
            seeds: str | Sequence[int] | None = None) -> list[str]:
    """The command line of one run (also what a user would type in a terminal). ``seeds`` (e.g.
    ``"0,1,2"``): one run per seed in ``out_dir/seed-NN`` and their mean with a t-interval over seeds."""
    if nproc < 1:
        raise ConfigError(f"nproc must be >= 1, got {nproc}")
    if nproc == 1:
        cmd = [sys.executable, "-m", "jlml_lib.train"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "jlml_lib.train"]
    cmd += ["--dataset", dataset, "--profile", profile, "--out", str(out_dir)]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    if init:
        if not Path(init).exists():
            raise ConfigError(f"the upstream checkpoint {init} does not exist: run the notebook that makes it "
                              "first (e.g. 03_imagenet_pretraining), or set init=None to start from scratch.")
        cmd += ["--init", str(init)]
    if iterations is not None:
        cmd += ["--iterations", str(int(iterations))]
    if splits is not None:
        cmd += ["--splits", splits if isinstance(splits, str) else ",".join(str(int(s)) for s in splits)]
    if seeds is not None:
        cmd += ["--seeds", _seed_list(seeds)]
    if resume:
        cmd.append("--resume")
    for key, value in (overrides or {}).items():
        cmd.append(f"{key}={'none' if value is None else str(value).lower() if isinstance(value, bool) else value}")
    return cmd


def _seed_list(seeds: str | Sequence[int]) -> str:
    """``"0,1,2"`` from a comma list or integers; a bad list is named before a process starts."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    try:
        values = [int(str(s).strip()) for s in items]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"seeds must be distinct non-negative integers, e.g. \"0,1,2\", got {seeds!r}")
    return ",".join(map(str, values))


def train(dataset: str, out_dir: str | Path, *, echo: bool = True, log_every_line: int = 1,
          replace: bool = True, fresh: bool | None = None, **options: Any) -> Path:
    """Run one training (see :func:`command` for the options) and return its folder, or reuse
    the finished run already there.

    A notebook owns its run folders, and never deletes one (:mod:`jlml_lib.workbook.reuse`):

    * the folder holds a finished run with this launch's fingerprint (the same options, data,
      ``--init`` checkpoint bytes and ``jlml_lib`` code): it is reused, with one line saying so;
    * it holds anything else (other settings, an unfinished run, a run without a fingerprint):
      it is moved aside to ``<out_dir>.previous-<UTC time>`` and the run is trained anew
      (``replace=False`` leaves it in place instead, and `jlml train` then refuses to overwrite
      it unless ``resume=True``);
    * ``fresh=True`` — or ``JLML_FRESH=1`` in the environment, which `jlml workbook --fresh`
      sets — trains anew even over a matching run (setting that one aside too).

    The fingerprint is written into the run folder once the run succeeded. The subprocess'
    output is echoed into the notebook (every ``log_every_line``-th line, and every
    :data:`ERROR_LINE`); the last :data:`TAIL_LINES` lines go into the error message.
    """
    cmd = command(dataset, out_dir, **options)
    out_dir = Path(out_dir)
    inputs = reuse.run_inputs(cmd, dataset, data_root=options.get("data_root"), init=options.get("init"),
                              overrides=options.get("overrides"))
    fresh = os.environ.get(FRESH_ENV) == "1" if fresh is None else fresh
    if not options.get("resume") and out_dir.exists():
        ok, why = reuse.reusable(out_dir, inputs)
        if ok and not fresh:
            print(f"reusing {out_dir}: {why}", flush=True)
            return out_dir
        if replace:
            reuse.set_aside(out_dir, f"{FRESH_ENV}=1 / fresh=True" if ok else why,
                            log=lambda line: print(line, flush=True))
    if echo:
        print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=_env()) as proc:
        assert proc.stdout is not None
        for n, line in enumerate(proc.stdout):
            line = line.rstrip("\n")
            tail.append(line)
            if echo and (n % log_every_line == 0 or ERROR_LINE.match(line)):
                print(line, flush=True)
    if proc.returncode != 0:
        raise TrainingFailed(f"training exited with status {proc.returncode}: {' '.join(cmd)}\n" + "\n".join(tail))
    reuse.write_fingerprint(out_dir, inputs)
    return out_dir


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # tqdm's carriage-return bars become one line per update in a pipe; keep them sparse
    env.setdefault("TQDM_MININTERVAL", "10")
    return env
