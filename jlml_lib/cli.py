"""The `jlml` console script: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job and exposes ``main(argv) -> int`` (or the
function named after a colon, ``module:function``);
modules are imported lazily so ``jlml --help`` stays fast and a broken optional part cannot
stop the others from running. Every subcommand runs under :func:`jlml_lib.errors.run_cli`: a user
error is one line and exit 2, Ctrl-C exit 130 (the exit statuses are listed there).
"""
from __future__ import annotations

import importlib
import sys

from jlml_lib.errors import run_cli

# subcommand -> (module or module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("jlml_lib.data.cli", "verify a dataset copy against its manifest, or generate a synthetic one"),
    "train": ("jlml_lib.train", "train / fine-tune JLML (same as python -m jlml_lib.train)"),
    "complexity": ("jlml_lib.results.cli:complexity", "print parameters, FLOPs and output sizes (Tables 1 and 13)"),
    "tables": ("jlml_lib.results.cli:tables", "regenerate results/tables/ from the runs' metrics.json"),
    "workbook": ("jlml_lib.workbook.runner", "run the notebooks in order with papermill"),
    "book": ("jlml_lib.book", "the executed notebooks, tables and runs as a static HTML site (build/book/html)"),
    "evaluate": ("jlml_lib.evaluate_model", "evaluate a trained model on any test set (cross-dataset too)"),
    "embed": ("jlml_lib.search:embed_main", "features of your own images (files or folders) -> .npz"),
    "search": ("jlml_lib.search:search_main", "rank a folder of images for each query -> an HTML page"),
    "export": ("jlml_lib.export", "export a trained model's feature graph to ONNX (pip install .[export])"),
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
    module, _, function = COMMANDS[name][0].partition(":")
    return run_cli(f"jlml {name}", lambda: getattr(importlib.import_module(module), function or "main")(rest))


if __name__ == "__main__":
    sys.exit(main())
