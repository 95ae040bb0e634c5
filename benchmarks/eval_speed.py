"""Evaluation speed and memory at every scale (issue 13's table), side by side with the dense path.

Not a test: it prints figures (and a Markdown table for benchmarks/NOTES). Every case runs in its
own subprocess, so its peak resident memory (``ru_maxrss``) is its own; "extra" is that peak minus
the peak after the features were made (features + interpreter + libraries).

Cases (``--cases``, default all but the slow authors' re-ranking unless asked for):

``ranking``
    ``rank_metrics`` on a Market-1501-sized float64 distance matrix (3,368 × 19,732), each AP mode,
    against the plain per-query MATLAB loop (timed on ``--ref-queries`` queries and scaled; the
    same numbers on that subset) and the stable-sort path. Ids and cameras are the real
    Market-1501 test lists (``queryID.mat`` ... in ``../shared/realdata/market1501``) when present,
    else a synthetic list with the same composition (3,819 junk, 2,798 distractors).
``market-dense`` / ``market``
    Market-1501 from 1,024-d features: ``pairwise_distances`` + ``rank_metrics`` (the dense path)
    / ``rank_metrics_from_features`` (streamed); the streamed result is checked identical.
``market-float64``
    The streamed path with float64 products (``precision="float64"``) instead of the default float32.
``market-clustered-dense`` / ``market-clustered`` / ``market-clustered-float64``
    The same with identity-clustered random features (closer to real ones: good images near).
``msmt17``
    MSMT17-sized, 11,659 × 82,161 (3,060 ids, 15 cameras, synthetic lists), streamed.
``market+500k``
    Market-1501 plus 500,000 pid-0 distractors (3,368 × 519,732), streamed.
``rerank-market`` / ``rerank-msmt17``
    k-reciprocal re-ranking (k1=20, k2=6, λ=0.3) + evaluation, streamed
    (``rank_metrics_from_features(..., rerank=True)``).
``rerank-market-authors``
    The authors' dense re-ranking (torchreid 0.2.5, as written out in tests/test_reranking.py) on
    the same features, then ``rank_metrics``: more than 22 GB (killed out of memory after 2 minutes
    on a 24 GB machine, NOTES); only when named in ``--cases``.

Features are **random** (``numpy`` normal, float32, labelled so in the output): pure noise puts the
good images anywhere in the ranking (the worst case for the band of the streamed path).
Dense peers' memory is given by arithmetic: torchreid / fast-reid evaluation holds a float32
distance matrix, its int64 argsort and an int32 match matrix (16 bytes per query-gallery pair);
their re-ranking holds several dense N × N matrices (N = queries + gallery; float32 original
distance, V and V_qe, the argsort: ≥ 16 bytes per pair).

    python benchmarks/eval_speed.py                      # full figures (tens of minutes, ~10 GB)
    python benchmarks/eval_speed.py --quick              # tiny smoke run (seconds)
    python benchmarks/eval_speed.py --cases market,market-dense --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from peak_memory import peak_rss_bytes  # benchmarks/, the script's own folder

HERE = Path(__file__).resolve().parent
REAL = HERE.parent / ".." / "shared" / "realdata" / "market1501"
DIM = 1024
GB = 1e9

DEFAULT_CASES = ("ranking", "market-dense", "market", "market-float64", "market-clustered-dense", "market-clustered",
                 "market-clustered-float64", "msmt17", "market+500k", "rerank-market", "rerank-msmt17")
ALL_CASES = DEFAULT_CASES + ("rerank-market-authors",)


# --------------------------------------------------------------------------- problems
def market_lists(root: Path = REAL):
    """(q_pids, q_cams, g_pids, g_cams, origin) of the real Market-1501 test, or a synthetic stand-in."""
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


def msmt_lists(rng):
    """MSMT17-sized test lists: 3,060 ids, 11,659 queries, 82,161 gallery images, 15 cameras, no junk."""
    ids = np.arange(1, 3061)
    g_p = ids[rng.integers(0, 3060, 82161)]
    g_p[:3060] = ids  # every id in the gallery
    q_p = ids[rng.integers(0, 3060, 11659)]
    return q_p, rng.integers(0, 15, 11659), g_p, rng.integers(0, 15, 82161), "synthetic MSMT17-sized lists"


def problem(case: str, quick: bool):
    """Labels, features and a description for a case (``quick``: a tiny slice of the same structure)."""
    rng = np.random.default_rng(0)
    if "msmt17" in case:
        qp, qc, gp, gc, origin = msmt_lists(rng)
    else:
        qp, qc, gp, gc, origin = market_lists()
        if "500k" in case:
            n = 5000 if quick else 500_000
            gp = np.concatenate([gp, np.zeros(n, np.int64)])
            gc = np.concatenate([gc, rng.integers(1, 7, n)])
            origin += f" + {n:,} pid-0 distractors"
    if quick:  # the first queries' ids, and a gallery slice that holds them
        qp, qc = qp[:60], qc[:60]
        keep = np.isin(gp, qp) | (np.arange(len(gp)) % max(len(gp) // 600, 1) == 0)
        gp, gc = gp[keep], gc[keep]
    clustered = "clustered" in case
    qf, gf = features(rng, qp, gp, clustered)
    kind = ("identity-clustered random features (a N(0,1) centre per id + N(0,1) noise)" if clustered
            else "random features (N(0,1) noise)")
    return dict(qf=qf, gf=gf, qp=qp, qc=qc, gp=gp, gc=gc,
                what=f"{origin}; {kind}, {DIM}-d float32; {len(qp):,} queries × {len(gp):,} gallery")


def features(rng, qp, gp, clustered):
    """float32 features, made block by block (no float64 temporaries)."""
    def make(pids):
        out = np.empty((len(pids), DIM), dtype=np.float32)
        for s in range(0, len(pids), 16384):
            out[s : s + 16384] = rng.standard_normal((len(pids[s : s + 16384]), DIM), dtype=np.float32)
            if clustered:
                out[s : s + 16384] += _centres(np.abs(pids[s : s + 16384]))
        return out
    return make(qp), make(gp)


_CENTRES: dict = {}


def _centres(pids):
    """One N(0, 1) centre per id (pid 0 distractors and -1 junk get fresh noise instead)."""
    top = int(pids.max(initial=0)) + 1
    if _CENTRES.get("n", 0) < top:
        _CENTRES["c"] = np.random.default_rng(1).standard_normal((top, DIM), dtype=np.float32)
        _CENTRES["n"] = top
    c = _CENTRES["c"][pids]
    c[pids == 0] = 0
    return c


# --------------------------------------------------------------------------- measurement helpers
def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def summary(m) -> dict:
    return {"mAP": float(m.mAP), "rank1": float(m.cmc[0]), "mINP": m.mINP, "num_queries": int(m.num_queries)}


def identical(a, b) -> bool:
    return bool(np.array_equal(a.cmc, b.cmc) and np.array_equal(a.first_rank, b.first_rank)
                and abs(a.mAP - b.mAP) <= 1e-9)


def authors_re_ranking():
    spec = importlib.util.spec_from_file_location("test_reranking", HERE.parent / "tests" / "test_reranking.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.authors_re_ranking


# --------------------------------------------------------------------------- cases (in the child)
def run_case(case: str, quick: bool, ref_queries: int, repeat: int) -> dict:
    import torch

    from jlml_lib.evaluation import pairwise_distances, rank_metrics, rank_metrics_from_features
    from jlml_lib.reranking import RERANK_DEFAULTS

    p = problem(case, quick)
    qf, gf, qp, qc, gp, gc = (p[k] for k in ("qf", "gf", "qp", "qc", "gp", "gc"))
    base = peak_rss_bytes()
    nq, ng = len(qp), len(gp)
    out = {"case": case, "problem": p["what"], "features_bytes": qf.nbytes + gf.nbytes, "baseline_peak_bytes": base,
           "peers_dense_eval_bytes": 16 * nq * ng, "ours_dense_matrix_bytes": 8 * nq * ng}
    if case == "ranking":
        out.update(ranking_case(p, ref_queries, repeat))
    elif case.endswith("-dense"):
        (dmat, t_d) = timed(pairwise_distances, torch.from_numpy(qf), torch.from_numpy(gf))
        m, t_r = timed(rank_metrics, dmat, qp, gp, qc, gc)
        out.update(seconds=t_d + t_r, distances_s=t_d, ranking_s=t_r, **summary(m))
    elif case.startswith("rerank-") and case.endswith("-authors"):
        n = nq + ng
        out["peers_dense_rerank_bytes"] = 16 * n * n
        ref = authors_re_ranking()
        t0 = time.perf_counter()
        qg, qq, gg = pairwise_distances(qf, gf), pairwise_distances(qf, qf), pairwise_distances(gf, gf)
        final = ref(qg, qq, gg, **RERANK_DEFAULTS)
        del qg, qq, gg
        m = rank_metrics(final, qp, gp, qc, gc)
        out.update(seconds=time.perf_counter() - t0, **summary(m))
    elif case.startswith("rerank-"):
        n = nq + ng
        out["peers_dense_rerank_bytes"] = 16 * n * n
        m, t = timed(rank_metrics_from_features, qf, gf, qp, gp, qc, gc, rerank=True)
        out.update(seconds=t, **summary(m))
    else:
        precision = "float64" if case.endswith("-float64") else "float32"  # float32: the library's default
        out["precision"] = precision
        m, t = timed(rank_metrics_from_features, qf, gf, qp, gp, qc, gc, precision=precision)
        out.update(seconds=t, peak_extra_bytes=peak_rss_bytes() - base, **summary(m))
        if nq * ng <= 1e8:  # the dense result to compare with (Market-sized and below), after the peak
            ref = rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc)
            out["identical_to_dense"] = identical(m, ref)
    out.setdefault("peak_extra_bytes", peak_rss_bytes() - base)
    return out


def ranking_case(p, ref_queries: int, repeat: int) -> dict:
    """``rank_metrics`` alone on the dense matrix, against the plain loop and the sort path."""
    import torch

    from jlml_lib.evaluation import pairwise_distances, rank_metrics

    qp, qc, gp, gc = p["qp"], p["qc"], p["gp"], p["gc"]
    dist = pairwise_distances(torch.from_numpy(p["qf"]), torch.from_numpy(p["gf"]))
    sub = np.random.default_rng(1).choice(len(qp), min(ref_queries, len(qp)), replace=False)
    res = {}
    for ap in ("official", "standard"):
        t_fast = min(timed(rank_metrics, dist, qp, gp, qc, gc, ap=ap)[1] for _ in range(repeat))
        fast = rank_metrics(dist, qp, gp, qc, gc, ap=ap)
        sort_path, t_sort = timed(rank_metrics, dist, qp, gp, qc, gc, ap=ap, _method="sort")
        ref, t_ref = timed(plain_reference, dist[sub], qp[sub], gp, qc[sub], gc, ap)
        fast_sub = rank_metrics(dist[sub], qp[sub], gp, qc[sub], gc, ap=ap)
        same = abs(fast_sub.mAP - ref[0]) <= 1e-12 and fast_sub.cmc[0] == ref[1] and fast_sub.num_queries == ref[2]
        res[ap] = {"rank_metrics_s": t_fast, "sort_path_s": t_sort, "reference_s_per_query": t_ref / len(sub),
                   "reference_full_s_estimate": t_ref / len(sub) * len(qp), "mAP": fast.mAP,
                   "rank1": float(fast.cmc[0]), "identical": bool(same and identical(fast, sort_path))}
    return {"seconds": res["official"]["rank_metrics_s"], "modes": res, "mAP": res["official"]["mAP"],
            "identical_to_dense": all(r["identical"] for r in res.values())}


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


# --------------------------------------------------------------------------- the parent
def child(case: str, args) -> dict:
    threads = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {**os.environ, **threads}
    cmd = [sys.executable, __file__, "--_child", case, "--threads", str(args.threads), "--ref-queries",
           str(args.ref_queries), "--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"case": case, "failed": f"exit {proc.returncode} after {time.perf_counter() - t0:.0f} s",
                "stderr": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def fmt_gb(b) -> str:
    return f"{b / GB:.2f} GB" if b is not None else "-"


def table(rows) -> str:
    head = ("| case | problem | time (s) | peak extra | features | dense peers (arithmetic) | mAP | identical |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['case']} | failed: {r['failed']} | | | | | | |")
            continue
        peers = r.get("peers_dense_rerank_bytes", r["peers_dense_eval_bytes"])
        lines.append(f"| {r['case']} | {r['problem']} | {r['seconds']:.2f} | {fmt_gb(r['peak_extra_bytes'])} | "
                     f"{fmt_gb(r['features_bytes'])} | {fmt_gb(peers)} | {r.get('mAP', float('nan')):.4f} | "
                     f"{r.get('identical_to_dense', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap_ = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap_.add_argument("--threads", type=int, default=2, help="torch/BLAS threads (the targets are for two cores)")
    ap_.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"comma-separated, from {', '.join(ALL_CASES)}")
    ap_.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every case")
    ap_.add_argument("--ref-queries", type=int, default=40, help="queries for the plain reference (case ranking)")
    ap_.add_argument("--repeat", type=int, default=3, help="best of N for rank_metrics (case ranking)")
    ap_.add_argument("--json", help="also write the figures to this file")
    ap_.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap_.parse_args(argv)
    if args._child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args._child, args.quick, args.ref_queries, args.repeat)))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        ap_.error(f"unknown case(s) {unknown}; known: {', '.join(ALL_CASES)}")
    print(f"{'QUICK smoke run (tiny sizes); ' if args.quick else ''}threads {args.threads}; {os.cpu_count()} CPUs; "
          f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for case in cases:
        r = child(case, args)
        rows.append(r)
        if "failed" in r:
            print(f"[{case}] FAILED {r['failed']}\n{r['stderr']}", flush=True)
            continue
        extra = f"; identical to the dense path: {r['identical_to_dense']}" if "identical_to_dense" in r else ""
        print(f"[{case}] {r['seconds']:.2f} s, peak extra {fmt_gb(r['peak_extra_bytes'])} over features "
              f"{fmt_gb(r['features_bytes'])} | mAP {r.get('mAP', float('nan')):.4f}{extra} | {r['problem']}",
              flush=True)
        if case == "ranking":
            for mode, f in r["modes"].items():
                print(f"    [{mode}] rank_metrics {f['rank_metrics_s']:.3f} s | sort path {f['sort_path_s']:.2f} s | "
                      f"plain loop ≈ {f['reference_full_s_estimate']:.0f} s for all | identical {f['identical']}")
        if "-dense" in case:
            print(f"    distances {r['distances_s']:.2f} s + ranking {r['ranking_s']:.2f} s")
    by = {r["case"]: r for r in rows if "failed" not in r}
    if "rerank-market" in by and "rerank-market-authors" in by:
        a, b = by["rerank-market"], by["rerank-market-authors"]
        print(f"re-ranked Market-1501, streamed vs the authors' dense code: mAP {a['mAP']:.6f} vs {b['mAP']:.6f}, "
              f"rank-1 {a['rank1']:.6f} vs {b['rank1']:.6f}; {b['seconds'] / a['seconds']:.1f}x the time")
    print("\n" + table(rows))
    print("\ndense peers: torchreid / fast-reid evaluation 16 B per query-gallery pair (float32 distmat, "
          "int64 argsort, int32 matches); their re-ranking ≥ 16 B per pair of the N × N (N = queries + gallery)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    bad = [r["case"] for r in rows if "failed" in r or r.get("identical_to_dense") is False]
    if bad:
        print(f"FAILED or MISMATCH: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
