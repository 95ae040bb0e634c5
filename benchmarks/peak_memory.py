"""Peak resident memory of the current process, for the benchmarks that run cases in subprocesses."""
from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_bytes() -> int:
    """This process's peak resident memory in bytes. /proc's ``VmHWM`` starts afresh at exec;
    ``ru_maxrss`` does not (a child started by a 4 GB parent would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
