"""The real user's path at full size, on this machine: a rehearsal of ``--profile paper`` (issue 9 §2).

    python benchmarks/full_scale.py                              # all datasets, 20 iterations each
    python benchmarks/full_scale.py --datasets market1501 --iterations 20 --data-dir /tmp/jlml/full

On full-size synthetic copies (``jlml data generate NAME ROOT --scale 1``: the real counts and
image sizes; generated into ``--data-dir`` when absent, timed separately) it runs the *same code
path* as ``--profile paper`` — 224×224, batch 32, Table 4's optimiser and step policy, the
engine's ``run`` — for ``--iterations`` iterations, then the complete evaluation at real size:
Market-1501 single- and multi-query over all 3,368 queries, 19,732 gallery images and 25,259
``gt_bbox`` boxes; CUHK03 classic split 0 (labelled), VIPeR split 0, GRID fold 0; the
CUHK03+Market-1501 stage is trained only. For each: wall time and images/s of every stage
(data loading alone, training, feature extraction, distances, ranking), peak RSS, and the hours
Table 4's schedule would take on this CPU by arithmetic from the measured step time. Also:
JPEG decode + resize throughput of one loader process and the workers needed to feed the GPU
targets, and (Market-1501) a scaling table of the evaluation at 1/4, 1/2 and the full gallery,
each point in a fresh process so its peak memory is its own.

Runs go to ``--out`` (default /tmp/jlml-rehearsal), never under ``runs/``: a rehearsal never
lands in a paper table. The numbers are synthetic-data timings; accuracy after 20 iterations
means nothing and is not printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training entry point does

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from jlml_lib import protocols  # noqa: E402
from jlml_lib.data import build_loader, build_transform, load_dataset, open_image  # noqa: E402
from jlml_lib.data.synthetic import generate  # noqa: E402
from jlml_lib.engine.checkpoint import load_model  # noqa: E402
from jlml_lib.engine.config import make_config  # noqa: E402
from jlml_lib.engine.run import dataset_options, run  # noqa: E402
from jlml_lib.engine.sampler import build_train_loader  # noqa: E402
from jlml_lib.evaluation import pairwise_distances, rank_metrics  # noqa: E402
from jlml_lib.features import extract_features  # noqa: E402
from jlml_lib.paths import RunDir  # noqa: E402
from peak_memory import peak_rss_bytes  # noqa: E402  (benchmarks/, the script's own folder)

DATASETS = ("market1501", "cuhk03", "viper", "grid", "cuhk03+market1501")
OPTIONS = {"cuhk03": {"images": "labeled", "protocol": "classic"}}
SCHEDULE = 50_000          # Table 4 "Train" iterations (the re-id fine-tuning of every row here)
GPU_TARGETS = (2_700, 5_000)  # images/s: Table 4's 1.6M images in 10 min; the issue's round target


def peak_rss_gb() -> float:
    return peak_rss_bytes() / 2**30


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def ensure_copy(name: str, data_dir: Path, workers: int) -> tuple[Path, float | None]:
    root = data_dir / name
    if (root / "JLML_SYNTHETIC.json").exists():
        return root, None
    _, secs = timed(generate, name, root, scale=1.0, seed=0, workers=workers)
    return root, secs


def decode_rate(items: list, n: int = 400) -> float:
    """Images/s of one process opening a JPEG/BMP/.mat cell and resizing it to 224×224 (the loader's work)."""
    tf = build_transform((224, 224), train=False)
    sample = items[:: max(1, len(items) // n)][:n]
    _, secs = timed(lambda: [tf(open_image(ref)) for ref, _, _ in sample])
    return len(sample) / secs


def loading_alone(cfg, items: list, iterations: int) -> float:
    """Images/s of the training loader alone (the engine's stream sampler, same workers)."""
    loader = iter(build_train_loader(items, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                     workers=cfg.workers, seed=cfg.seed, start_iteration=0))
    _, secs = timed(lambda: [next(loader) for _ in range(iterations)])
    return iterations * cfg.batch_size / secs


def features(model, items, cfg, stage: dict, name: str):
    loader = build_loader(items, image_size=cfg.image_size, train=False, batch_size=cfg.eval_batch("cpu"),
                          workers=cfg.workers)
    out, secs = timed(extract_features, model, loader, "cpu")
    stage[f"extract {name}"] = {"s": secs, "images": len(items), "img/s": len(items) / secs}
    return out


def evaluate_stages(model, ds, cfg) -> dict:
    """The dataset's protocol at full size, each stage timed; Market-1501 also returns its features."""
    stage: dict = {}
    q = features(model, ds.query, cfg, stage, "query")
    g = features(model, ds.gallery, cfg, stage, "gallery")
    bbox = features(model, ds.extras["gt_bbox"], cfg, stage, "gt_bbox") if ds.extras.get("gt_bbox") else None
    dist, secs = timed(pairwise_distances, q[0], g[0])
    stage["distances (float64, dense)"] = {"s": secs, "shape": list(dist.shape)}
    _, secs = timed(rank_metrics, dist, q[1], g[1], q[2], g[2])
    stage["ranking (rank_metrics, all queries vs all gallery)"] = {"s": secs}
    del dist
    _, secs = timed(protocols.evaluate_features, ds.protocol, q, g, gt_bbox=bbox, seed=cfg.seed)
    stage["protocol (all of its distances and rankings)"] = {"s": secs}
    return {"stages": stage, "features": (q, g) if ds.name == "market1501" else None}


def rehearse(name: str, root: Path, args, report: dict) -> tuple | None:
    over = {"dataset": name, "data_root": None if name == "cuhk03+market1501" else str(root),
            "iterations": args.iterations, "log_every": args.iterations, "ckpt_every": args.iterations,
            "workers": args.workers, "threads": args.threads, "device": "cpu", "progress": False,
            "evaluate": False}
    extra = [f"data.{k}={v}" for k, v in OPTIONS.get(name, {}).items()]
    if name == "cuhk03+market1501":
        extra += [f"data.cuhk03_root={args.data_dir / 'cuhk03'}", f"data.market1501_root={args.data_dir / 'market1501'}"]
    cfg = make_config("paper", extra, **over)
    ds, secs = timed(load_dataset, name, over["data_root"], **dataset_options(cfg))
    row: dict = {"index s": secs, "train images": len(ds.train), "query": len(ds.query), "gallery": len(ds.gallery),
                 "gt_bbox": len(ds.extras.get("gt_bbox", []))}
    row["decode+resize img/s per process"] = decode_rate(ds.train)
    row["loading alone img/s"] = loading_alone(cfg, ds.train, min(args.iterations, 10))
    out = args.out / name
    summary, secs = timed(run, cfg, out)
    step = summary["train_wall_time_s"] / max(1, args.iterations)
    row.update({"training s": secs, "step s": step, "training img/s": cfg.batch_size / step,
                "Table 4 schedule h (50K its, this CPU)": step * SCHEDULE / 3600})
    feats = None
    if ds.query and ds.gallery:
        model, _ = load_model(RunDir(out).final)
        ev = evaluate_stages(model, ds, cfg)
        row["evaluation"] = ev["stages"]
        feats = ev["features"]
    row["peak RSS GB (process so far)"] = peak_rss_gb()
    report[name] = row
    print(json.dumps({name: row}, indent=1, default=float), flush=True)
    return feats


def scaling(feats, out: Path) -> list[dict]:
    """Distances and ranking at 1/4, 1/2 and the whole gallery, one fresh process each."""
    (q, qp, qc), (g, gp, gc) = feats
    path = out / "market1501-features.npz"
    np.savez(path, q=q.numpy(), qp=qp, qc=qc, g=g.numpy(), gp=gp, gc=gc)
    rows = []
    for frac in (0.25, 0.5, 1.0):
        res = subprocess.run([sys.executable, __file__, "--scaling-child", str(path), str(frac)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def scaling_child(path: str, frac: float) -> None:
    d = np.load(path)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(d["gp"]), size=int(round(frac * len(d["gp"]))), replace=False))
    base = peak_rss_gb()
    dist, t_dist = timed(pairwise_distances, torch.from_numpy(d["q"]), torch.from_numpy(d["g"][keep]))
    after_dist = peak_rss_gb()
    _, t_rank = timed(rank_metrics, dist, d["qp"], d["gp"][keep], d["qc"], d["gc"][keep])
    print(json.dumps({"gallery": int(len(keep)), "distances s": t_dist, "ranking s": t_rank,
                      "distances extra GB": after_dist - base, "ranking extra GB": peak_rss_gb() - after_dist,
                      "peak RSS GB": peak_rss_gb()}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("JLML_FULL", "/tmp/jlml/full")))
    p.add_argument("--out", type=Path, default=Path("/tmp/jlml-rehearsal"))
    p.add_argument("--workers", type=int, default=1, help="loader worker processes (default 1 on 2 cores)")
    p.add_argument("--threads", type=int, default=0, help="compute threads (0: all cores)")
    p.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--scaling-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.scaling_child:
        scaling_child(args.scaling_child[0], float(args.scaling_child[1]))
        return 0
    if (args.out / "market1501").exists() or any(args.out.glob("*/checkpoints")):
        import shutil
        shutil.rmtree(args.out)  # the rehearsal's own scratch folder, never runs/
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict = {"settings": {"iterations": args.iterations, "workers": args.workers,
                                 "threads": args.threads or torch.get_num_threads(), "cores": os.cpu_count(),
                                 "torch": torch.__version__, "data": "synthetic full-size copies"}}
    names = args.datasets.split(",")
    generated = {}
    needed = sorted({part for n in names for part in (("cuhk03", "market1501") if n == "cuhk03+market1501" else (n,))})
    for part in needed:
        _, secs = ensure_copy(part, args.data_dir, args.gen_workers)
        generated[part] = secs
    report["generation s (None: reused)"] = generated
    feats = None
    for name in names:
        f = rehearse(name, args.data_dir / name if name != "cuhk03+market1501" else args.data_dir, args, report)
        feats = f if f is not None else feats
    if feats is not None:
        report["market1501 scaling"] = scaling(feats, args.out)
    rate = np.mean([r["decode+resize img/s per process"] for k, r in report.items() if isinstance(r, dict)
                    and "decode+resize img/s per process" in r])
    report["loader workers for GPU targets"] = {str(t): int(np.ceil(t / rate)) for t in GPU_TARGETS}
    report["wall s"] = time.perf_counter() - t0
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps(report, indent=1, default=float))
    print(f"report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
