"""A trained model's features on the CPU: PyTorch fp32 vs bf16 autocast vs ONNX Runtime (issue 20).

    python benchmarks/inference_speed.py RUN [--images 256] [--batch 16] [--size 224x224]
        [--evaluate market1501] [--json out.json]

RUN is a finished run folder (e.g. runs/05_market). The same preprocessed random images go through
each path (ONNX only at the run's own image size, which the export fixes), measured
side by side in one process (a warm-up batch first); features are compared
with fp32's (max abs difference of L2-normalised features). ``--evaluate NAME`` also evaluates the
model on NAME's test set with fp32 and with bf16 (`jlml evaluate`'s code, no records written) and
prints Rank-1 / mAP with their intervals. ONNX needs `pip install .[export]`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jlml_lib.evaluate_model import evaluate_model
from jlml_lib.export import export_onnx, onnx_features
from jlml_lib.inference import amp_context, load_model


def rate(fn, batches: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Images per second of ``fn`` over ``batches`` (after one warm-up batch) and its features."""
    fn(batches[0])
    start = time.perf_counter()
    out = torch.cat([torch.as_tensor(fn(b)) for b in batches])
    return sum(len(b) for b in batches) / (time.perf_counter() - start), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", help="HxW (default: the run's own image size)")
    p.add_argument("--evaluate", metavar="DATASET")
    p.add_argument("--json")
    args = p.parse_args()
    tm = load_model(args.run, "cpu")
    h, w = (int(v) for v in args.size.split("x")) if args.size else tm.image_size
    gen = torch.Generator().manual_seed(0)
    batches = list(torch.randn(args.images, 3, h, w, generator=gen).split(args.batch))
    net = tm.net()

    def torch_fp32(x):
        with torch.no_grad():
            return net.features(x, "joint")

    def torch_bf16(x):
        with torch.no_grad(), amp_context("bf16", "cpu"):
            return net.features(x, "joint").float()

    rows = {}
    fp32_rate, ref = rate(torch_fp32, batches)
    rows["pytorch fp32"] = {"img_per_s": fp32_rate, "max_abs_diff": 0.0}
    bf16_rate, got = rate(torch_bf16, batches)
    rows["pytorch bf16 autocast"] = {"img_per_s": bf16_rate}
    compared = [("pytorch bf16 autocast", got)]
    if (h, w) == tuple(tm.image_size):  # the export's input size is the run's (only the batch is dynamic)
        with tempfile.TemporaryDirectory() as tmp:
            onnx = export_onnx(tm, Path(tmp) / "model.onnx")
            onnx_rate, got_onnx = rate(lambda x: onnx_features(onnx, x), batches)
        rows["onnxruntime fp32"] = {"img_per_s": onnx_rate}
        compared.append(("onnxruntime fp32", got_onnx))
    for name, feats in compared:
        rows[name]["max_abs_diff"] = float((F.normalize(feats.float(), dim=1) - F.normalize(ref, dim=1)).abs().max())
    print(f"{args.run}: {args.images} random images {h}x{w}, batch {args.batch}, {torch.get_num_threads()} threads")
    for name, r in rows.items():
        print(f"  {name:24s} {r['img_per_s']:7.1f} img/s  ({r['img_per_s'] / fp32_rate:.2f}x fp32)"
              f"  max |Δ| normalised features {r['max_abs_diff']:.2e}")
    if args.evaluate:
        for amp in ("off", "bf16"):
            res = evaluate_model(tm, args.evaluate, amp=amp, cache=False, write=False)
            m = res["metrics"]["joint"]
            rows[f"evaluate {args.evaluate} amp={amp}"] = m_short = {
                k: m.get(k) for k in ("rank1", "mAP")} | {"intervals": m.get("intervals")}
            print(f"  evaluate {args.evaluate} amp={amp}: Rank-1 {m['rank1']:.4f} mAP {m['mAP']:.4f}"
                  f" intervals {json.dumps(m_short['intervals'])[:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
