"""Training-step and inference throughput of JLML-ResNet39 vs torchvision ResNet-50, side by side.

    python benchmarks/throughput.py [--batch 16] [--size 224 224] [--steps 5] [--device cpu|cuda]

Both networks see the same batch, input size, optimiser (SGD, momentum 0.9) and loss (cross-entropy;
JLML: the MultiLoss of Eq. 5). The two models are measured alternately, step by step, so a noisy
machine slows both alike; the printed ratio is what to compare. On CUDA it also measures AMP (bf16)
and channels_last. ResNet-50 needs about 4.9× JLML's multiply-accumulates at 224×224 (4.09 vs
0.79 GMACs, `jlml complexity`); the ratio of images/s says how much of that the kernels deliver.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

from jlml_lib.losses import MultiLoss
from jlml_lib.model import jlml_resnet39


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_steps(name: str, batch: int, size: tuple[int, int], device: torch.device, amp: bool, channels_last: bool):
    classes = 751
    if name == "jlml":
        model = jlml_resnet39(classes)
        loss_fn = MultiLoss()
    else:
        model = torchvision.models.resnet50(weights=None, num_classes=classes)
        loss_fn = None
    model = model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, *size, device=device).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def train_step() -> None:
        model.train()
        with autocast():
            out = model(x)
            if loss_fn is not None:
                loss = loss_fn(out, y, model.global_fc_weight, model.local_fc_weight).total
            else:
                loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step() -> None:
        model.eval()
        with autocast():
            model.features(x) if loss_fn is not None else model(x)

    return train_step, infer_step


def measure(batch: int, size, steps: int, device: torch.device, amp: bool, channels_last: bool) -> dict:
    fns = {name: make_steps(name, batch, size, device, amp, channels_last) for name in ("jlml", "resnet50")}
    results = {}
    for phase, idx in (("train", 0), ("infer", 1)):
        times: dict[str, list[float]] = {name: [] for name in fns}
        for name in fns:  # warm-up (allocator, kernel selection)
            fns[name][idx]()
        for _ in range(steps):
            for name in fns:  # interleaved: both models share whatever the machine is doing
                _sync(device)
                t0 = time.perf_counter()
                fns[name][idx]()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            results[(phase, name)] = batch / statistics.median(ts)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(224, 224))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    configs = [(False, False)]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        configs += [(True, False), (True, True)]
    else:
        configs += [(False, True)]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; batch {args.batch}; {args.size[0]}×{args.size[1]}; median of {args.steps} steps; "
          f"torch {torch.__version__}")
    print(f"{'amp':>5} {'ch_last':>7} {'phase':>6} {'JLML img/s':>11} {'R50 img/s':>10} {'JLML/R50':>9}")
    for amp, cl in configs:
        r = measure(args.batch, tuple(args.size), args.steps, device, amp, cl)
        for phase in ("train", "infer"):
            j, res = r[(phase, "jlml")], r[(phase, "resnet50")]
            print(f"{str(amp):>5} {str(cl):>7} {phase:>6} {j:>11.1f} {res:>10.1f} {j / res:>9.2f}")


if __name__ == "__main__":
    main()
