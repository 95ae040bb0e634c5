"""The training entry point: ``python -m jlml_lib.train`` and ``torchrun -m jlml_lib.train``.

The engine lives in :mod:`jlml_lib.engine` (config, loop, run, evaluate, checkpoint, sampler,
distributed, cli); this module keeps the documented command working and re-exports what
scripts call (``run``, ``run_splits``, ``main``).
"""
from __future__ import annotations

import sys

from jlml_lib.engine.cli import build_parser, main
from jlml_lib.engine.run import run, run_splits

__all__ = ["run", "run_splits", "main", "build_parser"]

if __name__ == "__main__":
    sys.exit(main())
