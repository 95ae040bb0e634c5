"""Exceptions that carry a message a user can act on (file, expectation, fix), and the one
handler every command line uses to turn them into one line (:func:`run_cli`).

Exit statuses of every ``jlml`` command: 0 done; 1 the command ran and found problems (e.g.
``jlml data verify``); 2 a user error (a bad value, a missing or unwritable file: one line on
stderr naming it); 3 training stopped on a non-finite loss; 130 interrupted (Ctrl-C), with one
line naming the checkpoint ``--resume`` continues from. Anything else is a bug and keeps its
traceback; ``JLML_DEBUG=1`` shows the traceback of every error.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable

__all__ = ["DataError", "ConfigError", "USER_ERROR", "INTERRUPTED", "DEBUG_ENV", "run_cli", "one_line",
           "is_main_process"]

USER_ERROR = 2
INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
DEBUG_ENV = "JLML_DEBUG"


class DataError(ValueError):
    """A dataset copy, file or split that is missing, malformed or inconsistent."""


class ConfigError(ValueError):
    """An unknown option, a bad value, or a missing upstream artefact (e.g. a checkpoint)."""


#: OS errors a user causes (a path that is missing, taken, read-only, a file where a folder is
#: due, a full disk), each with what to do about it; any other OSError keeps its traceback
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "choose a path you may read and write (--out, JLML_CACHE, --data-root)",
    errno.EPERM: "choose a path you may read and write (--out, JLML_CACHE, --data-root)",
    errno.EROFS: "the file system is read-only; choose a writable path (--out, JLML_CACHE)",
    errno.EEXIST: "a file is in the way of a folder (or the reverse); remove it or choose another path",
    errno.EISDIR: "a folder is where a file is due; give the file's path",
    errno.ENOTDIR: "a file is where a folder is due; remove it or choose another path",
    errno.ENAMETOOLONG: "shorten the path",
    errno.ENOSPC: "the disk is full: free space, or write elsewhere (--out, JLML_CACHE)",
    errno.EDQUOT: "the disk quota is exceeded: free space, or write elsewhere (--out, JLML_CACHE)",
}


def is_main_process() -> bool:
    """False on the other ranks of a torchrun launch (they would print the same line N times)."""
    return os.environ.get("RANK", "0") in ("", "0")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error re-raised from a DataLoader worker carries the
    worker's whole traceback; its own message is the last line of it."""
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def _os_error_line(exc: OSError) -> str | None:
    fix = _OS_FIXES.get(exc.errno or -1)
    if fix is None:
        return None
    paths = [p for p in (exc.filename, exc.filename2) if p]
    where = " -> ".join(str(p) for p in paths) or "(no path given)"
    return f"{where}: {exc.strerror or os.strerror(exc.errno)}; {fix}."


def _user_error(exc: BaseException) -> str | None:
    """The one line for an error a user caused, or None for a bug (the traceback stays)."""
    if isinstance(exc, (DataError, ConfigError)):
        return one_line(exc)
    if isinstance(exc, OSError):
        return _os_error_line(exc)
    cause = exc.__cause__ or exc.__context__  # e.g. a disk-full OSError inside torch.save's RuntimeError
    if isinstance(exc, RuntimeError) and isinstance(cause, OSError):
        return _os_error_line(cause)
    return None


def run_cli(prog: str, body: Callable[[], int | None], *,
            interrupted: Callable[[], str] | None = None) -> int:
    """``body()``'s exit status; a user error is one line on stderr and :data:`USER_ERROR`, Ctrl-C
    one line (``interrupted()``: e.g. where ``--resume`` continues from) and :data:`INTERRUPTED`.

    Under torchrun only rank 0 prints the line of a setting or of Ctrl-C (every rank has the same);
    a data or OS error may be one rank's own, so the others print it prefixed with their rank.
    """
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        if is_main_process():
            hint = ""
            try:
                hint = interrupted() if interrupted is not None else ""
            except Exception:  # noqa: BLE001  (the hint is a courtesy; Ctrl-C must still end cleanly)
                pass
            print(f"\n{prog}: interrupted" + (f"; {hint}" if hint else "."), file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (re-raised unless it is a user's error)
        line = _user_error(exc)
        if line is None or debug:
            raise
        if is_main_process():
            print(f"{prog}: {line}", file=sys.stderr)
        elif not isinstance(exc, ConfigError):
            print(f"{prog} [rank {os.environ.get('RANK')}]: {line}", file=sys.stderr)
        return USER_ERROR
