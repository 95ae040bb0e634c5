"""``jlml data verify NAME ROOT [--quick]`` and ``jlml data generate NAME ROOT [--scale S]
[--seed N] [--structure-only] [--workers N]``; ``jlml data list`` shows the dataset names."""
from __future__ import annotations

import argparse
import os
import sys
import time

from jlml_lib.errors import run_cli


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jlml data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="check a copy against data_manifests/NAME.json")
    v.add_argument("name")
    v.add_argument("root", help="the dataset folder as distributed, or the folder holding it")
    v.add_argument("--quick", action="store_true", help="counts and names only (no decoding)")
    g = sub.add_parser("generate", help="write a synthetic copy in the original format")
    g.add_argument("name")
    g.add_argument("root")
    g.add_argument("--scale", type=float, default=None, help="fraction of the real ids (0, 1]")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--structure-only", action="store_true",
                   help="tiny images, real structure and counts (for testing verify)")
    g.add_argument("--workers", type=int, default=1,
                   help="processes drawing images (0: one per CPU core); same files for any number")
    sub.add_parser("list", help="dataset names")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_cli(f"jlml data {args.cmd}", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.cmd == "list":
        from jlml_lib.data.base import dataset_names

        print("\n".join(dataset_names()))
        return 0
    if args.cmd == "generate":
        from jlml_lib.data.synthetic import generate

        t = time.perf_counter()
        workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
        path = generate(args.name, args.root, scale=args.scale, seed=args.seed,
                        structure_only=args.structure_only, workers=workers)
        print(f"wrote synthetic {args.name} to {path} in {time.perf_counter() - t:.1f} s")
        return 0
    from jlml_lib.data.verify import verify

    rep = verify(args.name, args.root, quick=args.quick)
    what = f"{args.name} at {rep.dataset_dir or rep.root}"
    if rep.source == "synthetic":
        what += f" (synthetic copy, checked against the manifest scaled to {rep.manifest_scale:g})"
    for p in rep.problems:
        print(p)
    if rep.ok:
        print(f"OK: {what} matches its manifest" + (" (quick: names and counts)" if args.quick
                                                     else ""))
        return 0
    print(f"FAILED: {what}: {len(rep.problems)} problem(s)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
