"""The first thing to run on a GPU machine (issue 9 §3): correctness, speed and the real input path.

    PYTHONPATH=. python benchmarks/gpu_check.py                 # on the GPU machine, <= 5 min
    python benchmarks/gpu_check.py --quick                      # anywhere: the CPU parts, tiny sizes
    python benchmarks/gpu_check.py --only throughput --compile  # one part (+ torch.compile rows)

Runs from the source tree (no install; nothing downloaded; papermill/nbformat/ipykernel not
needed) and writes a JSON report (``--out``; default ``$OUT/gpu_check.json`` when ``$OUT`` is
set, else in the temp folder) besides printing a table per part. Each part is time-boxed and
can be skipped (``--skip``/``--only``); without CUDA a part that needs it prints one line
saying so and the CPU parts run at a tiny size.

Parts:

* ``tests``: ``pytest -m gpu tests/test_gpu.py`` (AMP vs fp32, channels_last vs NCHW, NCCL +
  SyncBatchNorm + DDP, torchrun train + resume, a CUDA checkpoint read on the CPU).
* ``throughput``: JLML-ResNet39 vs torchvision ResNet-50 (``weights=None``), training and
  inference images/s at 224×224, batches 32 (Table 4) / 64 / 128, fp32 and bf16 +
  channels_last, the model step alone (data already on the GPU; ``benchmarks/throughput.py``'s
  interleaved measurement), with the JLML/ResNet-50 ratio and the achieved TFLOP/s.
  ``--compile`` adds torch.compile rows (in a child process with its own time limit).
* ``input``: a full-size synthetic Market-1501 generated here (``jlml data generate --scale 1
  --workers N``), the training loader alone, then ``python -m jlml_lib.train --profile paper
  --device cuda`` for ``--iterations``: images/s and which side limits it.
* ``evaluation``: Market-1501-size ranking (3,368 queries × 19,732 gallery × 1,024-d) from
  **random** GPU features (timing only; the mAP is chance level by construction).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):  # run from the source tree, and reuse the sibling scripts
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402

PARTS = ("tests", "throughput", "input", "evaluation")
# seconds each part may take on the GPU machine; they add up to < 5 min with start-up
BOXES = {"tests": 110, "throughput": 60, "input": 90, "evaluation": 25}
BATCHES = (32, 64, 128)
# dense bf16 tensor-core peak (vendor data sheets, no sparsity), for the "achieved fraction"
# (NVIDIA's names: "H100 80GB HBM3" is the SXM card; first match wins, so specific names first)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0}
MARKET = {"queries": 3368, "gallery": 19732, "dim": 1024, "ids": 750, "cams": 6}
TABLE4_IMAGES = 50_000 * 32  # Market-1501 "Train" schedule: 50K iterations of 32 images
INPUT_TARGET_IPS = 5_000     # issue 9: the loader should feed this many training images/s


# ---------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _run(cmd: list[str], timeout: float, **kw) -> tuple[int | None, str, float]:
    """(returncode or None on timeout, output tail, seconds)."""
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout), env=_env(),
                           cwd=ROOT, **kw)
        return p.returncode, (p.stdout + p.stderr)[-4000:], time.perf_counter() - t
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return None, out[-4000:], time.perf_counter() - t


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in name:
            return value
    return None


class Clock:
    """The whole check's time budget; a part starts only if its box still fits."""

    def __init__(self, budget: float) -> None:
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def box(self, part: str, scale: float = 1.0) -> float:
        return min(BOXES[part] * scale, self.left())


# ---------------------------------------------------------------- tests
def part_tests(args, clock: Clock) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the gpu tests would all skip"}
    xml = Path(tempfile.mkdtemp(prefix="jlml-gpu-tests-")) / "junit.xml"
    rc, tail, wall = _run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q",
                           "-p", "no:cacheprovider", f"--junitxml={xml}"], clock.box("tests"))
    out: dict[str, Any] = {"returncode": rc, "wall_s": wall, "tests": []}
    if rc is None:
        out["error"] = f"timed out after {wall:.0f} s"
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            status = "passed"
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    status = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                    out.setdefault("messages", {})[case.get("name")] = (el.get("message") or "")[:500]
            out["tests"].append({"name": case.get("name"), "status": status,
                                 "s": float(case.get("time", 0))})
    if rc not in (0, None):
        out["tail"] = tail[-2000:]
    return out


# ---------------------------------------------------------------- throughput
def model_flops(size: tuple[int, int]) -> dict[str, int]:
    """Forward FLOPs (2 × MACs) of one image for both networks (jlml_lib.complexity's counter)."""
    import torchvision

    from jlml_lib.complexity import count_macs
    from jlml_lib.model import jlml_resnet39

    return {"jlml": 2 * count_macs(jlml_resnet39(751), size),
            "resnet50": 2 * count_macs(torchvision.models.resnet50(weights=None, num_classes=751), size)}


def part_throughput(args, clock: Clock) -> dict[str, Any]:
    import throughput  # benchmarks/throughput.py: the interleaved JLML vs ResNet-50 measurement

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    size, batches, steps = ((224, 224), BATCHES, 10) if cuda else ((64, 32), (2,), 1)
    settings = [("fp32", False, False), ("bf16+channels_last", True, True)] if cuda else [("fp32", False, False)]
    if cuda:
        torch.backends.cudnn.benchmark = True
    flops = model_flops(size)
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = peak_tflops(name, args.peak_tflops) if cuda else None
    rows, deadline = [], time.perf_counter() + clock.box("throughput")
    for label, amp, cl in settings:
        for b in batches:
            if time.perf_counter() > deadline:
                rows.append({"setting": label, "batch": b, "skipped": "time box"})
                continue
            torch.manual_seed(0)
            r = throughput.measure(b, size, steps, dev, amp, cl)
            for phase in ("train", "infer"):
                j, res = r[(phase, "jlml")], r[(phase, "resnet50")]
                mult = 3 if phase == "train" else 1  # backward ≈ 2 × forward
                tf = j * flops["jlml"] * mult / 1e12
                rows.append({"setting": label, "batch": b, "phase": phase, "jlml_ips": j, "resnet50_ips": res,
                             "ratio": j / res, "jlml_tflops": tf,
                             "fraction_of_peak": tf / peak if peak and amp else None})
            del r
            if cuda:
                torch.cuda.empty_cache()
    out: dict[str, Any] = {"device": name, "image": list(size), "steps": steps, "rows": rows,
                           "flops_per_image": flops, "peak_bf16_tflops": peak}
    if not cuda:
        out["note"] = "no CUDA: CPU fp32 at 64×32, batch 2, one step (a run of the code, not a figure)"
    if args.compile:
        out["compile"] = _compile_rows(clock) if cuda else {"skipped": "no CUDA device"}
    return out


def _compile_rows(clock: Clock) -> dict[str, Any]:
    """torch.compile of the JLML train/infer step (bf16 + channels_last, batch 128) in a child
    process, so a slow or failing compile cannot stall the check."""
    box = max(10.0, min(150.0, clock.left() - 5))
    rc, tail, wall = _run([sys.executable, str(Path(__file__).resolve()), "_compile"], box)
    line = next((ln for ln in tail.splitlines() if ln.startswith("JLML_COMPILE ")), None)
    if line is None:
        return {"error": "timed out" if rc is None else f"exit {rc}", "wall_s": wall, "tail": tail[-1500:]}
    return {**json.loads(line[len("JLML_COMPILE "):]), "wall_s": wall}


def _compile_child() -> int:
    import throughput

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    out = {}
    for mode in ("default", "max-autotune-no-cudagraphs"):
        train, infer = throughput.make_steps("jlml", 128, (224, 224), dev, True, True)
        # make_steps closes over the model; compiling the step functions compiles the model calls
        train_c, infer_c = torch.compile(train, mode=mode), torch.compile(infer, mode=mode)
        t = time.perf_counter()
        train_c(), infer_c()
        _sync()
        out[mode] = {"compile_s": time.perf_counter() - t}
        for phase, fn in (("train", train_c), ("infer", infer_c)):
            for _ in range(3):
                fn()
            _sync()
            t = time.perf_counter()
            for _ in range(10):
                fn()
            _sync()
            out[mode][f"{phase}_ips"] = 128 * 10 / (time.perf_counter() - t)
        print("JLML_COMPILE " + json.dumps(out), flush=True)  # partial results survive a timeout
    return 0


# ---------------------------------------------------------------- the real input path
def _market_root(args, quick: bool, timeout: float) -> tuple[Path, dict[str, Any]]:
    """A Market-1501 copy: --market-root, an earlier complete one, or a new one generated here."""
    from jlml_lib.data.base import read_marker

    if args.market_root:
        return Path(args.market_root), {"generated": False}
    scale = 0.005 if quick else 1.0
    root = Path(tempfile.gettempdir()) / "jlml_gpu_check" / f"market1501-scale{scale:g}"
    entry = read_marker(root).get("datasets", {}).get("market1501", {})
    if entry.get("scale") == scale and not entry.get("structure_only"):
        return root, {"generated": False, "reused": str(root)}
    workers = args.workers or os.cpu_count() or 1
    rc, tail, wall = _run([sys.executable, "-m", "jlml_lib.data.cli", "generate", "market1501", str(root),
                           "--scale", f"{scale:g}", "--workers", str(workers)], timeout)
    if rc != 0:
        raise RuntimeError(f"generating Market-1501 failed ({'timeout' if rc is None else rc}): {tail[-1500:]}")
    return root, {"generated": True, "scale": scale, "generate_s": wall, "generate_workers": workers}


def loader_throughput(items, image_size, batch: int, workers: int, batches: int) -> float:
    """Training images/s of the loader alone (decode, resize, tensors; no model)."""
    try:
        from jlml_lib.engine.sampler import build_train_loader

        loader = build_train_loader(items, image_size=image_size, batch_size=batch, workers=workers, seed=0,
                                    start_iteration=0)
    except ImportError:  # before/after a restructure: the plain contract loader
        from jlml_lib.data import build_loader

        loader = build_loader(items, image_size=image_size, train=True, batch_size=batch, workers=workers)
    it = iter(loader)
    for _ in range(min(5, batches)):  # worker start-up
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    ips = batches * batch / (time.perf_counter() - t)
    del it, loader
    return ips


def part_input(args, clock: Clock, model_ips: float | None) -> dict[str, Any]:
    from jlml_lib.data import load_dataset

    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    deadline = time.perf_counter() + clock.box("input")
    root, info = _market_root(args, quick, deadline - time.perf_counter())
    out: dict[str, Any] = {"root": str(root), **info}
    ds = load_dataset("market1501", root)
    out["train_images"] = len(ds.train)
    workers = (args.workers or max(1, (os.cpu_count() or 2) - 2)) if not quick else 0
    size, batch, nb = ((224, 224), 32, 80) if not quick else ((64, 32), 8, 3)
    out.update(loader_workers=workers, loader_batch=batch, image=list(size))
    out["loader_ips"] = loader_throughput(ds.train, size, batch, workers, nb)
    if workers:
        per = out["loader_ips"] / workers
        out["loader_ips_per_worker"] = per
        out["workers_for_target"] = math.ceil(INPUT_TARGET_IPS / per)
    if not cuda:
        out["train"] = {"skipped": "no CUDA device"}
        return out
    left = deadline - time.perf_counter()
    if left < 30:
        out["train"] = {"skipped": f"time box ({left:.0f} s left)"}
        return out
    from train_speed import schedule_hours

    run_dir = Path(tempfile.mkdtemp(prefix="jlml-gpu-train-")) / "run"
    its = args.iterations
    cmd = [sys.executable, "-m", "jlml_lib.train", "--profile", "paper", "--dataset", "market1501",
           "--data-root", str(root), "--out", str(run_dir), "--iterations", str(its), "device=cuda",
           "evaluate=false", "progress=false", f"log_every={max(1, its // 10)}", f"ckpt_every={its}",
           f"workers={workers}"]
    rc, tail, wall = _run(cmd, left)
    train: dict[str, Any] = {"command": " ".join(cmd[1:]), "returncode": rc, "wall_s": wall}
    log = run_dir / "log.jsonl"
    rows = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    if rc != 0 or len(rows) < 2:
        train["error"] = ("timed out" if rc is None else f"exit {rc}") + ": " + tail[-1500:]
        out["train"] = train
        return out
    steady = rows[1:]  # the first interval holds cuDNN autotuning and worker start-up
    ips = sum(r["images_per_s"] for r in steady) / len(steady)
    train.update(iterations=rows[-1]["iteration"], images_per_s=ips,
                 table4_market_minutes=TABLE4_IMAGES / ips / 60, **schedule_hours(ips))
    train["limited_by"] = verdict(ips, out["loader_ips"], model_ips)
    out["train"] = train
    return out


def verdict(train_ips: float, loader_ips: float, model_ips: float | None) -> str:
    """Which side limits a training run, from three rates measured side by side."""
    if model_ips and train_ips >= 0.8 * model_ips:
        return f"the GPU: {train_ips:.0f} img/s is >= 80% of the model step alone ({model_ips:.0f})"
    if loader_ips <= 1.25 * train_ips:
        return (f"the loader: it delivers {loader_ips:.0f} img/s alone, training reaches {train_ips:.0f}"
                + (f" of the model step's {model_ips:.0f}" if model_ips else ""))
    return (f"neither alone: loader {loader_ips:.0f}, model step {model_ips or float('nan'):.0f}, training "
            f"{train_ips:.0f} img/s; the rest is per-iteration overhead (Python, logging, host-device copies)")


# ---------------------------------------------------------------- evaluation
def market_like_labels(nq: int, ng: int, ids: int, cams: int, seed: int = 0):
    """Query/gallery pids and cameras shaped like Market-1501's: every query id in the gallery
    under other cameras too, plus distractors (0) and junk (-1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, ids + 1, nq)
    q_cams = rng.integers(0, cams, nq)
    g_pids = np.concatenate([rng.integers(1, ids + 1, ng - ng // 3), np.zeros(ng // 6, int),
                             np.full(ng - (ng - ng // 3) - ng // 6, -1)])
    g_cams = rng.integers(0, cams, ng)
    return q_pids, g_pids, q_cams, g_cams


def part_evaluation(args, clock: Clock) -> dict[str, Any]:
    import numpy as np

    from jlml_lib import evaluation

    try:
        from jlml_lib.distances import pairwise_distances
    except ImportError:
        from jlml_lib.evaluation import pairwise_distances
    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    dev = torch.device("cuda" if cuda else "cpu")
    nq, ng, dim = (MARKET["queries"], MARKET["gallery"], MARKET["dim"]) if not quick else (120, 700, 64)
    q_pids, g_pids, q_cams, g_cams = market_like_labels(nq, ng, MARKET["ids"] if not quick else 40, MARKET["cams"])
    gen = torch.Generator(device=dev).manual_seed(0)
    qf = torch.randn(nq, dim, device=dev, generator=gen)
    gf = torch.randn(ng, dim, device=dev, generator=gen)
    out: dict[str, Any] = {"features": "random (timing only; metrics are chance level)", "queries": nq,
                           "gallery": ng, "dim": dim, "device": str(dev)}
    _sync()
    t = time.perf_counter()
    d = pairwise_distances(qf, gf)
    _sync()
    out["distances_s"] = time.perf_counter() - t
    t = time.perf_counter()
    m = evaluation.rank_metrics(d, q_pids, g_pids, q_cams, g_cams)
    out["rank_metrics_s"] = time.perf_counter() - t
    out["dense_mAP"], out["dense_rank1"] = float(m.mAP), float(m.cmc[0])
    del d
    fn: Callable | None = getattr(evaluation, "rank_metrics_from_features", None)
    if fn is None:
        out["streamed"] = {"skipped": "jlml_lib.evaluation has no rank_metrics_from_features"}
    else:
        t = time.perf_counter()
        qn, gn = qf.cpu().numpy(), gf.cpu().numpy()
        out["features_to_host_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ms = fn(qn, gn, q_pids, g_pids, q_cams, g_cams)
        out["streamed"] = {"s": time.perf_counter() - t, "mAP": float(ms.mAP), "rank1": float(ms.cmc[0])}
    return out


# ---------------------------------------------------------------- report
def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: blocked (sys.modules[name] is None)
        return False


def header() -> dict[str, Any]:
    import torchvision

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "device": torch.cuda.get_device_name() if cuda else "no CUDA device",
            "cpus": os.cpu_count(), "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
            "notebook_packages": {m: _importable(m) for m in ("papermill", "nbformat", "ipykernel")}}


def print_report(rep: dict[str, Any]) -> None:
    h = rep["header"]
    print(f"\n== gpu_check: {h['device']} | torch {h['torch']} / torchvision {h['torchvision']} | CUDA "
          f"{h['cuda']} | {h['cpus']} CPUs | python {h['python']} | {rep['wall_s']:.0f} s")
    for part in PARTS:
        r = rep["parts"].get(part)
        if r is None:
            continue
        if "skipped" in r:
            print(f"[{part}] skipped: {r['skipped']}")
            continue
        if "error" in r and part != "tests":
            print(f"[{part}] FAILED: {r['error']}")
            continue
        print(f"[{part}]")
        if part == "tests":
            for t in r["tests"]:
                print(f"  {t['status']:8} {t['name']} ({t['s']:.1f} s)")
            if r.get("error"):
                print(f"  {r['error']}")
        elif part == "throughput":
            print(f"  {'setting':20} {'batch':>5} {'phase':>5} {'JLML img/s':>11} {'R50 img/s':>10} "
                  f"{'JLML/R50':>8} {'JLML TFLOP/s':>12} {'of peak':>8}")
            for x in r["rows"]:
                if "skipped" in x:
                    print(f"  {x['setting']:20} {x['batch']:>5} skipped ({x['skipped']})")
                    continue
                frac = f"{100 * x['fraction_of_peak']:.1f}%" if x.get("fraction_of_peak") else "-"
                print(f"  {x['setting']:20} {x['batch']:>5} {x['phase']:>5} {x['jlml_ips']:>11.0f} "
                      f"{x['resnet50_ips']:>10.0f} {x['ratio']:>8.2f} {x['jlml_tflops']:>12.1f} {frac:>8}")
            if r.get("compile"):
                print(f"  torch.compile (JLML, bf16+channels_last, batch 128): {json.dumps(r['compile'])[:400]}")
            if r.get("note"):
                print(f"  ({r['note']})")
        elif part == "input":
            gen = (f"generated in {r['generate_s']:.0f} s on {r['generate_workers']} workers" if r.get("generated")
                   else "reused")
            print(f"  Market-1501 at {r['root']} ({r['train_images']} training images; {gen})")
            line = f"  loader alone: {r['loader_ips']:.0f} img/s with {r['loader_workers']} workers"
            if r.get("workers_for_target"):
                line += (f" ({r['loader_ips_per_worker']:.0f}/worker: {r['workers_for_target']} workers for "
                         f"{INPUT_TARGET_IPS} img/s)")
            print(line)
            tr = r.get("train", {})
            if "skipped" in tr:
                print(f"  training: skipped: {tr['skipped']}")
            elif "error" in tr:
                print(f"  training FAILED: {tr['error'][:800]}")
            else:
                print(f"  training (--profile paper, {tr['iterations']} it): {tr['images_per_s']:.0f} img/s; "
                      f"Table 4's Market-1501 schedule would take {tr['table4_market_minutes']:.1f} min; "
                      f"limited by {tr['limited_by']}")
        elif part == "evaluation":
            line = (f"  {r['queries']} x {r['gallery']} x {r['dim']} ({r['features']}) on {r['device']}: "
                    f"distances {r['distances_s']:.2f} s + rank_metrics {r['rank_metrics_s']:.2f} s")
            s = r.get("streamed", {})
            line += (f"; rank_metrics_from_features {s['s']:.2f} s" if "s" in s else f"; streamed: {s.get('skipped')}")
            print(line)


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="JSON report path (default: $OUT/gpu_check.json or the temp folder)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (implied without CUDA)")
    ap.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    ap.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="skip these parts")
    ap.add_argument("--budget", type=float, default=290.0, help="seconds for the whole check")
    ap.add_argument("--compile", action="store_true", help="throughput: add torch.compile rows (slow)")
    ap.add_argument("--market-root", help="input: use this Market-1501 copy instead of generating one")
    ap.add_argument("--workers", type=int, default=0, help="loader/generator processes (0: from the CPU count)")
    ap.add_argument("--iterations", type=int, default=200, help="input: training iterations")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_compile"]:
        return _compile_child()
    args = _parse(argv)
    clock = Clock(args.budget)
    out_path = Path(args.out) if args.out else (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
        else Path(tempfile.gettempdir()) / "jlml_gpu_check.json")
    rep: dict[str, Any] = {"header": header(), "parts": {}}
    wanted = [p for p in (args.only or PARTS) if p not in args.skip]
    # throughput first: its batch-32 bf16 row is what the input part compares training with
    order = [p for p in ("throughput", "evaluation", "input", "tests") if p in wanted]
    for part in order:
        if clock.left() < 10:
            rep["parts"][part] = {"skipped": f"budget ({args.budget:.0f} s) spent"}
            continue
        t = time.perf_counter()
        try:
            if part == "throughput":
                res = part_throughput(args, clock)
            elif part == "evaluation":
                res = part_evaluation(args, clock)
            elif part == "input":
                res = part_input(args, clock, _model_ips(rep))
            else:
                res = part_tests(args, clock)
        except Exception as exc:  # one failing part must not lose the others' figures
            import traceback

            res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        res.setdefault("part_s", time.perf_counter() - t)
        rep["parts"][part] = res
        if "skipped" in res:
            print(f"[{part}] skipped: {res['skipped']}", flush=True)
        else:
            print(f"[{part}] done in {res['part_s']:.0f} s", flush=True)
    for part in PARTS:
        if part not in wanted:
            rep["parts"][part] = {"skipped": "not requested (--only/--skip)"}
    rep["wall_s"] = time.perf_counter() - clock.t0
    from jlml_lib.io import write_json

    write_json(out_path, rep)
    print_report(rep)
    print(f"\nreport: {out_path}")
    failed = [p for p, r in rep["parts"].items() if "error" in r or any(
        t["status"] in ("FAILED", "ERROR") for t in r.get("tests", []))]
    return 1 if failed else 0


def _model_ips(rep: dict[str, Any]) -> float | None:
    """JLML's model-step training img/s at Table 4's batch in the paper profile's precision."""
    for x in rep["parts"].get("throughput", {}).get("rows", []):
        if x.get("setting") == "bf16+channels_last" and x.get("batch") == 32 and x.get("phase") == "train":
            return x["jlml_ips"]
    return None


if __name__ == "__main__":
    sys.exit(main())
