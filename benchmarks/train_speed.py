"""Training speed: the smoke profile end to end on CPU, and the paper profile's first iterations.

    python benchmarks/train_speed.py smoke                     # CPU: smoke train + eval, wall times
    python benchmarks/train_speed.py paper --iterations 300    # GPU: fp32 vs AMP + channels_last
    python benchmarks/train_speed.py model --image 224 224     # model-only step time (no data loading)

Every mode prints one JSON object (and ``--json FILE`` writes it). ``paper`` runs
``jlml_lib.train.run`` on the synthetic Market-1501 for ``--iterations`` iterations per setting,
drops the first log interval (warm-up: cuDNN autotuning, worker start) and converts the steady
images/s into the time the full Table 4 schedules would take: 50K and 300K iterations of 32
images on this one device, and on 8 such devices under torchrun *if* scaling were linear
(labelled as such: an arithmetic bound, not a measurement). Timings go in
``benchmarks/NOTES-training.md``; tests never assert on them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from jlml_lib.engine.config import make_config
from jlml_lib.train import run

TABLE4 = {"train": 50_000, "pretrain": 300_000}   # iterations, batch 32 (Table 4)


def _steady_ips(out: Path, skip: int = 1) -> float:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = rows[skip:] or rows
    return sum(r["images_per_s"] for r in rows) / len(rows)


def schedule_hours(ips: float, batch: int = 32) -> dict[str, float]:
    return {f"{k}_hours_1dev": it * batch / ips / 3600 for k, it in TABLE4.items()} | {
        f"{k}_hours_8dev_linear_bound": it * batch / ips / 3600 / 8 for k, it in TABLE4.items()}


def bench_smoke(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config("smoke", args.overrides, progress=False)
        t0 = time.perf_counter()
        summary = run(cfg, Path(tmp) / "run")
        total = time.perf_counter() - t0
    m = summary["metrics"]["joint"]
    return {"mode": "smoke", "device": summary["device"], "threads": torch.get_num_threads(),
            "iterations": cfg.iterations, "image_size": cfg.image_size, "batch": cfg.batch_size,
            "train_s": summary["train_wall_time_s"], "train_images_per_s": summary["images_per_s"],
            "total_s_incl_data_and_eval": total, "rank1": m["rank1"], "mAP": m["mAP"],
            "source": summary["source"]}


def bench_paper(args) -> dict:
    settings = {"fp32": ["amp=off", "channels_last=off"], "amp+channels_last": ["amp=auto", "channels_last=on"]}
    out: dict = {"mode": "paper", "iterations_per_setting": args.iterations, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, over in settings.items():
            log_every = max(1, args.iterations // 10)
            cfg = make_config("paper", [*over, *args.overrides], iterations=args.iterations, evaluate=False,
                              progress=False, log_every=log_every, ckpt_every=10**9)
            summary = run(cfg, Path(tmp) / name)
            ips = _steady_ips(Path(tmp) / name)
            out["device"] = summary["device"]
            out["results"][name] = {"images_per_s": ips, **schedule_hours(ips)}
    return out


def bench_model(args) -> dict:
    """Forward+backward+SGD step on random tensors: the model's cost without the data pipeline."""
    from jlml_lib.losses import build_loss
    from jlml_lib.model import jlml_resnet39

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    res = {}
    for name, amp, cl in (("fp32", None, False), ("amp+channels_last", torch.bfloat16, True)):
        if dev.type == "cpu" and amp is not None and not args.cpu_amp:
            continue
        model = jlml_resnet39(751).to(dev)
        x = torch.randn(args.batch, 3, *args.image, device=dev)
        if cl:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 751, (args.batch,), device=dev)
        loss, opt = build_loss(), torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                out = model(x)
            terms = loss(out, y, model.global_fc_weight, model.local_fc_weight)
            opt.zero_grad()
            terms.total.backward()
            opt.step()

        for _ in range(args.warmup):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        res[name] = {"s_per_iteration": dt, "images_per_s": args.batch / dt, **schedule_hours(args.batch / dt)}
    return {"mode": "model", "device": str(dev), "threads": torch.get_num_threads(), "image": args.image,
            "batch": args.batch, "results": res}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("smoke", "paper", "model"))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--image", type=int, nargs=2, default=(224, 224))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cpu-amp", action="store_true", help="model mode: also time bf16 autocast on CPU")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.mode == "paper" and not torch.cuda.is_available():
        print("paper mode needs a GPU (224x224, 300 iterations would take hours on CPU); "
              "use `model` mode for a CPU estimate.", file=sys.stderr)
        return 2
    os.environ.setdefault("JLML_CACHE", str(Path(tempfile.gettempdir()) / "jlml-bench-cache"))
    result = {"smoke": bench_smoke, "paper": bench_paper, "model": bench_model}[args.mode](args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
