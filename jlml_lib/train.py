"""The training entry point: ``python -m jlml_lib.train`` and ``torchrun -m jlml_lib.train``.

The engine lives in :mod:`jlml_lib.engine` (config, loop, run, evaluate, checkpoint, sampler,
distributed, cli); this module keeps the documented command working and re-exports what
scripts call (``run``, ``run_splits``, ``main``).
"""
from __future__ import annotations

import os
import sys

# Threads that wait for work sleep instead of spinning (GNU OpenMP, read when torch loads it, so
# before the engine's import): two CPU runs sharing the cores otherwise slow each other ~10x, not
# 2x (benchmarks/NOTES.md, "CPU runs that share the machine"). An explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from jlml_lib.engine.cli import build_parser, main  # noqa: E402  (after the wait policy)
from jlml_lib.engine.run import run, run_splits  # noqa: E402

__all__ = ["run", "run_splits", "main", "build_parser"]

if __name__ == "__main__":
    sys.exit(main())
