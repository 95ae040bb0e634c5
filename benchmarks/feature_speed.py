"""Where feature extraction's time goes on a CPU: the loader alone, the model alone, both together.

    python benchmarks/feature_speed.py --data-dir /tmp/jlml/full [--images 512] [--size 224 224]

On the Market-1501 gallery of a data root (a full-size synthetic copy from
``python benchmarks/data_generation.py --root DIR``, or the real dataset), for the first
``--images`` images it measures, side by side in one run:

* the evaluation loader alone (decode + resize + normalise), for each worker count;
* the model alone on images already in memory (``features(x, "joint")`` under ``no_grad``), for each
  batch size, NCHW and channels_last;
* ``extract_features`` over the loader (which runs the model in channels_last), for each worker
  count and ``--eval-batch`` (default: the library's CPU batch).

Images/s of each. The model is randomly initialised (the speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jlml_lib.data import build_loader, load_dataset  # noqa: E402
from jlml_lib.engine.config import TrainConfig  # noqa: E402
from jlml_lib.features import extract_features  # noqa: E402
from jlml_lib.model import jlml_resnet39  # noqa: E402


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding market1501/")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--size", type=int, nargs=2, default=[224, 224])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=0, help="compute threads (0: torch's default)")
    p.add_argument("--eval-batch", type=int, nargs="+", default=[TrainConfig().eval_batch("cpu")],
                   help="batch sizes of the extract_features rows (default: the library's CPU batch)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    items = load_dataset("market1501", args.data_dir / "market1501").gallery[: args.images]
    n = len(items)
    print(f"{n} Market-1501 gallery images at {size[0]}x{size[1]}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")

    for w in args.workers:
        loader = build_loader(items, image_size=size, train=False, batch_size=64, workers=w)
        print(f"  loader alone, {w} workers: {rate(lambda: [b for b in loader], n):7.1f} img/s")

    model = jlml_resnet39(751).eval()
    x_all = torch.randn(max(args.batches), 3, *size)
    for fmt_name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model = model.to(memory_format=fmt)
        for b in args.batches:
            x = x_all[:b].contiguous(memory_format=fmt)
            with torch.no_grad():
                model.features(x)  # warm-up: oneDNN picks its kernels for this shape
                reps = max(1, 256 // b)
                r = rate(lambda: [model.features(x) for _ in range(reps)], reps * b)
            print(f"  model alone, {fmt_name:13s} batch {b:4d}: {r:7.1f} img/s")

    model = model.to(memory_format=torch.contiguous_format)  # extract_features runs it channels_last itself
    for eb in args.eval_batch:
        for w in args.workers:
            loader = build_loader(items, image_size=size, train=False, batch_size=eb, workers=w)
            r = rate(lambda: extract_features(model, loader, "cpu"), n)
            print(f"  extract_features, batch {eb:4d}, {w} workers: {r:7.1f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
