"""Launch a training run from a notebook, as a subprocess.

DDP cannot run inside a Jupyter kernel, so notebooks never train in-process: they call
:func:`train`, which runs ``python -m jlml_lib.train`` (one process) or
``torchrun --standalone --nproc_per_node=N -m jlml_lib.train`` (N processes, e.g. N GPUs) with the
same arguments, streams its output into the notebook, and returns the run folder. A failed run
raises :class:`TrainingFailed` with the command and the end of its output, so the notebook's
failing cell says what went wrong.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError


class TrainingFailed(RuntimeError):
    """The training subprocess exited with a non-zero status."""


def command(dataset: str, out_dir: str | Path, *, profile: str = "smoke", data_root: str | None = None,
            init: str | None = None, iterations: int | None = None, splits: str | Sequence[int] | None = None,
            overrides: Mapping[str, Any] | None = None, nproc: int = 1, resume: bool = False) -> list[str]:
    """The command line of one run (also what a user would type in a terminal)."""
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
    if resume:
        cmd.append("--resume")
    for key, value in (overrides or {}).items():
        cmd.append(f"{key}={'none' if value is None else str(value).lower() if isinstance(value, bool) else value}")
    return cmd


def train(dataset: str, out_dir: str | Path, *, echo: bool = True, log_every_line: int = 1,
          replace: bool = True, **options: Any) -> Path:
    """Run one training (see :func:`command` for the options) and return its folder.

    A notebook owns its run folders: re-running it replaces the previous run there
    (``replace=False`` keeps it, and `jlml train` then refuses to overwrite it unless
    ``resume=True``). The subprocess' output is echoed into the notebook (every
    ``log_every_line``-th progress line, errors always); the last 40 lines are kept for the error
    message.
    """
    cmd = command(dataset, out_dir, **options)
    out_dir = Path(out_dir)
    if replace and not options.get("resume") and out_dir.exists():
        import shutil

        print(f"replacing the previous run in {out_dir}", flush=True)
        shutil.rmtree(out_dir)
    if echo:
        print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=_env()) as proc:
        assert proc.stdout is not None
        for n, line in enumerate(proc.stdout):
            line = line.rstrip("\n")
            tail.append(line)
            if echo and (n % log_every_line == 0 or "rror" in line):
                print(line, flush=True)
    if proc.returncode != 0:
        raise TrainingFailed(f"training exited with status {proc.returncode}: {' '.join(cmd)}\n" + "\n".join(tail))
    return Path(out_dir)


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # tqdm's carriage-return bars become one line per update in a pipe; keep them sparse
    env.setdefault("TQDM_MININTERVAL", "10")
    return env


def read_record(run_dir: str | Path, feature: str | None = None) -> dict[str, Any]:
    """The run's ``metrics.json`` (or ``eval-<feature>/metrics.json``) as a dict."""
    from .results.records import read_metrics

    run_dir = Path(run_dir)
    return read_metrics(run_dir if feature in (None, "joint") else run_dir / f"eval-{feature}")


def read_log(run_dir: str | Path):
    """The run's ``log.jsonl`` as a DataFrame (one row per logged iteration), for training curves."""
    import pandas as pd

    path = Path(run_dir) / "log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return pd.DataFrame(rows)
