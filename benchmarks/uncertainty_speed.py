"""Speed of the bootstrap intervals on a Market-1501-sized test (3,368 queries, 750 identities).

Not a test: it prints timings. Issue 12's target: ``bootstrap_ci(n_boot=10_000)`` with identity
clusters in <= 1 s on 2 cores. The query ids are the real Market-1501 ``queryID.mat`` /
``queryCam.mat`` when ``../shared/realdata/market1501`` is present, else 750 synthetic ids with ~4.5
queries each; the per-query results (first rank ~ geometric, AP random, 3 % unmatched) are
**random** -- speed does not depend on their values, only on the numbers of queries and clusters.

Timed side by side in one run: ``bootstrap_ci`` with identity clusters and with single queries,
``paired_bootstrap_diff`` with identity clusters, and a plain Python loop over resamples (the
obvious implementation; timed on ``--loop-boot`` resamples and scaled) for the speed-up ratio.

    OMP_NUM_THREADS=2 python benchmarks/uncertainty_speed.py [--n-boot 10000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jlml_lib.evaluation import RankMetrics, query_key
from jlml_lib.uncertainty import bootstrap_ci, paired_bootstrap_diff

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "market1501"


def query_lists(root: Path = REAL) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from scipy.io import loadmat

        qp = loadmat(str(root / "queryID.mat"))["queryID"].ravel().astype(np.int64)
        qc = loadmat(str(root / "queryCam.mat"))["queryCAM"].ravel().astype(np.int64)
        return qp, qc, "real Market-1501 query ids"
    except (OSError, KeyError, ImportError):
        rng = np.random.default_rng(0)
        qp = np.sort(rng.integers(1, 751, 3368))
        return qp, rng.integers(1, 7, 3368), "synthetic ids (Market-1501's counts)"


def random_result(qp: np.ndarray, qc: np.ndarray, seed: int) -> RankMetrics:
    """A RankMetrics with random per-query values (official AP: unmatched queries score 0)."""
    rng = np.random.default_rng(seed)
    n = len(qp)
    fr = rng.geometric(0.7, n)
    fr[rng.random(n) < 0.03] = 0
    ap = np.where(fr > 0, rng.random(n), 0.0)
    cmc = np.array([np.mean((fr >= 1) & (fr <= k)) for k in range(1, 51)])
    return RankMetrics(cmc=cmc, mAP=float(ap.mean()), num_queries=n, ap="official", query_ap=ap, first_rank=fr,
                       query_key=query_key(qp, qc))


def loop_bootstrap(m: RankMetrics, clusters: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The plain way: one Python iteration per resample (identity clusters, official AP)."""
    rng = np.random.default_rng(seed)
    ids, codes = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(codes == i) for i in range(len(ids))]
    out = np.empty((n_boot, 5))
    for b in range(n_boot):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        fr = m.first_rank[rows]
        out[b] = [*(np.mean((fr >= 1) & (fr <= k)) for k in (1, 5, 10, 20)), m.query_ap[rows].mean()]
    return np.quantile(out, [0.025, 0.975], axis=0)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--loop-boot", type=int, default=200, help="resamples for the plain loop (scaled)")
    args = ap.parse_args()

    qp, qc, source = query_lists()
    a, b = random_result(qp, qc, 1), random_result(qp, qc, 2)
    n = args.n_boot
    bootstrap_ci(a, qp, n_boot=10)  # warm-up (imports, first allocations)
    t_id = best_of(lambda: bootstrap_ci(a, qp, n_boot=n), args.repeat)
    t_q = best_of(lambda: bootstrap_ci(a, n_boot=n), args.repeat)
    t_pair = best_of(lambda: paired_bootstrap_diff(a, b, qp, n_boot=n), args.repeat)
    t_loop = best_of(lambda: loop_bootstrap(a, qp, args.loop_boot, 0), 1) * n / args.loop_boot
    ci = bootstrap_ci(a, qp, n_boot=n)
    print(json.dumps({
        "queries": len(qp), "identities": int(len(np.unique(qp))), "ids": source, "per_query_values": "random",
        "n_boot": n, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "bootstrap_ci_identity_clusters_s": round(t_id, 3),
        "bootstrap_ci_queries_s": round(t_q, 3),
        "paired_bootstrap_diff_identity_clusters_s": round(t_pair, 3),
        f"python_loop_s (scaled from {args.loop_boot})": round(t_loop, 2),
        "speed-up vs loop (identity clusters)": round(t_loop / t_id, 1),
        "example rank1 interval": [round(v * 100, 2) for v in ci["rank1"]],
    }, indent=2))


if __name__ == "__main__":
    main()
