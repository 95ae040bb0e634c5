"""CPU runs that share the machine (issue 9 §5): one training alone vs two at once, and DDP.

    python benchmarks/concurrent_runs.py                 # smoke profile, 100 iterations per run
    python benchmarks/concurrent_runs.py --iterations 300

Every case runs ``python -m jlml_lib.train --profile smoke ... evaluate=false`` as subprocesses
on the synthetic Market-1501 (generated once first) and prints wall times and ratios:

* one run alone and two runs started together, under OpenMP's spinning wait policy
  (``OMP_WAIT_POLICY=ACTIVE``, what every process did before) and the yielding one the training
  entry point now sets (``PASSIVE``);
* two runs together with one compute thread each (``threads=1``);
* ``torchrun --nproc_per_node=2`` (gloo DDP, the same global batch) against one process, per image.

Targets (2-core CPU): two together each finish in <= 2.5x the time of one alone; the 2-process
DDP run takes <= 1.2x the per-image time of one process. Run it on a quiet machine: nothing else
may use the cores while it measures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jlml_lib.data import resolve_root  # noqa: E402


def command(out: Path, iterations: int, extra: list[str], nproc: int = 1) -> list[str]:
    launcher = ([sys.executable, "-m", "jlml_lib.train"] if nproc == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                 "-m", "jlml_lib.train"])
    return [*launcher, "--profile", "smoke", "--out", str(out), "--iterations", str(iterations),
            "evaluate=false", "progress=false", *extra]


def together(cmds: list[list[str]], wait_policy: str) -> list[float]:
    """Start every command at once; each one's wall time in seconds."""
    env = {**os.environ, "OMP_WAIT_POLICY": wait_policy, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # the engine chooses (threads=0: cores / local processes)
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    times = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"failed ({p.returncode}): {' '.join(p.args)}\n{err[-2000:]}")
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    resolve_root("market1501")  # generate the synthetic copy once, outside the timings
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = [0]

        def out() -> Path:
            n[0] += 1
            return Path(tmp) / f"run{n[0]}"

        it = args.iterations
        for policy in ("ACTIVE", "PASSIVE"):
            rows[f"one alone, {policy}"] = together([command(out(), it, [])], policy)[0]
            rows[f"two together, {policy} (each, mean)"] = sum(
                together([command(out(), it, []), command(out(), it, [])], policy)) / 2
        rows["two together, PASSIVE, threads=1 (each, mean)"] = sum(
            together([command(out(), it, ["threads=1"]), command(out(), it, ["threads=1"])], "PASSIVE")) / 2
        rows["DDP 2 processes (gloo), PASSIVE"] = together([command(out(), it, [], nproc=2)], "PASSIVE")[0]
    print(f"smoke profile, {args.iterations} iterations per run, batch 32 at 64x32, {os.cpu_count()} cores")
    for name, secs in rows.items():
        print(f"  {name:<48} {secs:7.1f} s")
    for policy in ("ACTIVE", "PASSIVE"):
        ratio = rows[f"two together, {policy} (each, mean)"] / rows[f"one alone, {policy}"]
        print(f"  two together / one alone, {policy}: {ratio:.2f}x (target <= 2.5x)")
    ratio = rows["two together, PASSIVE, threads=1 (each, mean)"] / rows["one alone, PASSIVE"]
    print(f"  two together with threads=1 / one alone: {ratio:.2f}x")
    # the same global batch: DDP's per-image time is its wall time over the one process' wall time
    ddp = rows["DDP 2 processes (gloo), PASSIVE"] / rows["one alone, PASSIVE"]
    print(f"  DDP 2 processes / one process, per image: {ddp:.2f}x (target <= 1.2x); "
          "start-up of both included")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
