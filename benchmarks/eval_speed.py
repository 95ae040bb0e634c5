"""Speed of ``rank_metrics`` on a Market-1501-sized test (3,368 queries × 19,732 gallery images).

Not a test: it prints timings. The ids and cameras are the real Market-1501 test lists
(``queryID.mat``, ``queryCam.mat``, ``testID.mat``, ``testCam.mat``: 3,819 junk ``-1`` and 2,798
distractor ``0`` gallery images) when ``../shared/realdata/market1501`` is present, else a
synthetic list with the same composition. Distances come from random 1,024-D features (so the
good images are spread over the whole ranking, the worst case for the fast path).

Each AP mode is timed on the whole problem; the plain per-query reference (the MATLAB loop,
as in ``tests/test_evaluation.py``) is timed on a subset of queries and scaled, and both must give
the same numbers on that subset. The stable-sort path (``_method="sort"``) is timed too.

    python benchmarks/eval_speed.py [--threads 2] [--ref-queries 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jlml_lib.evaluation import pairwise_distances, rank_metrics

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "market1501"


def market_lists(root: Path = REAL):
    """(q_pids, q_cams, g_pids, g_cams) of the real Market-1501 test, or a synthetic stand-in."""
    try:
        from scipy.io import loadmat

        def arr(name, key):
            return loadmat(str(root / f"{name}.mat"))[key].ravel().astype(np.int64)

        return (arr("queryID", "queryID"), arr("queryCam", "queryCAM"), arr("testID", "testID"),
                arr("testCam", "testCAM"), "real Market-1501 id/camera lists")
    except (OSError, KeyError, ImportError):
        rng = np.random.default_rng(0)
        ids = np.arange(1, 751)
        g_p = np.concatenate([np.repeat(ids, 17)[:13115], np.zeros(2798, np.int64), -np.ones(3819, np.int64)])
        g_c = rng.integers(1, 7, len(g_p))
        q_p = np.repeat(ids, 5)[:3368]
        q_c = rng.integers(1, 7, len(q_p))
        return q_p, q_c, g_p, g_c, "synthetic lists with Market-1501's composition"


def plain_reference(dist, qp, gp, qc, gc, ap):
    """The per-query loop (evaluation.m + compute_AP.m / torchreid); returns (mAP, cmc@1, n)."""
    aps, r1 = [], []
    for i in range(dist.shape[0]):
        index = np.argsort(dist[i], kind="stable")
        same = gp == qp[i]
        good = same & (gc != qc[i])
        junk = (same & (gc == qc[i])) | (gp == -1)
        if ap == "standard":
            good &= ~junk
        ngood = int(good.sum())
        if ap == "standard" and ngood == 0:
            continue
        old_r, old_p, a, hits, j, first = 0.0, 1.0, 0.0, 0, 0, 0
        for n in index:
            if junk[n]:
                continue
            j += 1
            if good[n]:
                hits += 1
                first = first or j
                if ap == "official":
                    rec, prec = hits / ngood, hits / j
                    a += (rec - old_r) * ((old_p + prec) / 2)
                    old_r = rec
                else:
                    a += hits / j
            old_p = hits / j
            if hits == ngood:
                break
        aps.append(a if ap == "official" else a / ngood)
        r1.append(first == 1)
    return float(np.mean(aps)), float(np.mean(r1)), len(aps)


CPU = {"s": 0.0}  # CPU seconds (all threads) of the last best_of: a figure less sensitive to other load


def best_of(fn, repeat):
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU["s"] = min(cpu)
    return min(times), out


def main(argv=None) -> int:
    ap_ = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap_.add_argument("--threads", type=int, default=2, help="torch threads (the target is two cores)")
    ap_.add_argument("--ref-queries", type=int, default=40, help="queries for the plain reference")
    ap_.add_argument("--repeat", type=int, default=3)
    ap_.add_argument("--json", help="also write the figures to this file")
    args = ap_.parse_args(argv)
    torch.set_num_threads(args.threads)
    qp, qc, gp, gc, origin = market_lists()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    qf = torch.from_numpy(rng.normal(size=(len(qp), 1024)).astype(np.float32))
    gf = torch.from_numpy(rng.normal(size=(len(gp), 1024)).astype(np.float32))
    dist = pairwise_distances(qf, gf)
    t_dist = time.perf_counter() - t0
    print(f"{origin}: {len(qp)} queries x {len(gp)} gallery ({int((gp == -1).sum())} junk, "
          f"{int((gp == 0).sum())} distractors); torch threads {args.threads}; {os.cpu_count()} CPUs; "
          f"{platform.processor() or platform.machine()}")
    print(f"pairwise_distances (float64, 1024-D): {t_dist:.2f} s; load average {os.getloadavg()[0]:.1f}")
    figures = {"origin": origin, "threads": args.threads, "distances_s": t_dist}
    sub = np.random.default_rng(1).choice(len(qp), args.ref_queries, replace=False)
    for ap in ("official", "standard"):
        t_fast, res = best_of(lambda: rank_metrics(dist, qp, gp, qc, gc, ap=ap), args.repeat)
        cpu_fast = CPU["s"]
        t_sort, res_sort = best_of(lambda: rank_metrics(dist, qp, gp, qc, gc, ap=ap, _method="sort"), 1)
        t_ref, ref = best_of(lambda: plain_reference(dist[sub], qp[sub], gp, qc[sub], gc, ap), 1)
        fast_sub = rank_metrics(dist[sub], qp[sub], gp, qc[sub], gc, ap=ap)
        ref_full = t_ref / len(sub) * len(qp)
        same = abs(fast_sub.mAP - ref[0]) <= 1e-12 and fast_sub.cmc[0] == ref[1] and fast_sub.num_queries == ref[2]
        same_sort = np.array_equal(res.cmc, res_sort.cmc) and abs(res.mAP - res_sort.mAP) <= 1e-12
        print(f"[{ap}] rank_metrics {t_fast:.3f} s wall, {cpu_fast:.3f} s CPU (best of {args.repeat}) | stable-sort path {t_sort:.2f} s | "
              f"plain reference {t_ref:.2f} s for {len(sub)} queries -> {ref_full:.0f} s for all "
              f"(x{ref_full / t_fast:.0f}) | mAP {res.mAP:.6f} rank-1 {res.cmc[0]:.6f} n={res.num_queries} | "
              f"identical to reference on the subset: {same}; to the sort path: {same_sort}")
        figures[ap] = {"rank_metrics_s": t_fast, "rank_metrics_cpu_s": cpu_fast, "sort_path_s": t_sort, "reference_s_per_query": t_ref / len(sub),
                       "reference_full_s_estimate": ref_full, "speedup": ref_full / t_fast,
                       "mAP": res.mAP, "rank1": float(res.cmc[0]), "identical": bool(same and same_sort)}
        if not (same and same_sort):
            print("MISMATCH", file=sys.stderr)
            return 1
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
