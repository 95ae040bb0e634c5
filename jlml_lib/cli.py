"""The `jlml` console script: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job and exposes ``main(argv) -> int``;
modules are imported lazily so ``jlml --help`` stays fast and a broken optional part cannot
stop the others from running.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("jlml_lib.data.cli", "verify a dataset copy against its manifest, or generate a synthetic one"),
    "train": ("jlml_lib.engine.cli", "train / fine-tune JLML (same as python -m jlml_lib.train)"),
    "complexity": ("jlml_lib.complexity", "print parameters, FLOPs and output sizes (Tables 1 and 13)"),
    "tables": ("jlml_lib.results.tables", "regenerate results/tables/ from the runs' metrics.json"),
    "workbook": ("jlml_lib.workbook", "run the notebooks in order with papermill"),
}


def _usage() -> str:
    lines = ["usage: jlml COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "jlml COMMAND --help for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jlml: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
