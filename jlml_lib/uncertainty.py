"""Confidence intervals for CMC rank-k and mAP: query/cluster bootstrap, paired differences,
split- and seed-aggregates (issue 12; the paper's Tables 5-12 report point estimates only).

What an interval here means. The test queries are a sample; had another sample of queries (or of
test identities) been drawn, the metric would differ. :func:`bootstrap_ci` estimates that spread
with the **percentile bootstrap** (Efron & Tibshirani 1993, §13.3; for retrieval metrics see
Cormack & Lynam, SIGIR 2006): resample the queries with replacement ``n_boot`` times, recompute
the metric on each resample, and take the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles
(numpy's default linear interpolation). With ``clusters`` (one label per query, e.g. the query
pids) whole clusters are resampled instead: all queries of a drawn identity come together and a
cluster drawn twice counts twice. Queries of one identity are correlated (same person, same
gallery images), so the identity is the honest unit; resampling single queries understates the
spread. The interval covers query sampling only -- not training randomness (seeds:
:func:`summarise_runs` over runs with different seeds) nor the choice of the test split.

The statistic on each resample is exactly the one :func:`jlml_lib.evaluation.rank_metrics`
computes: with ``w`` the number of times each query is drawn, rank-k is
``sum(w * hit_k * counted) / sum(w * counted)`` and mAP ``sum(w * ap * counted) / sum(w *
counted)``, where ``counted`` is every query for ``ap="official"`` (a query without a good match
has AP 0 and no hit) and the queries with a good match for ``"standard"``. A resample with no
counted query (possible in standard mode only) has no value and is left out of the quantiles.

Vectorised: the resamples are drawn in blocks as index matrices, turned into per-unit draw
counts with one ``bincount`` per block, and multiplied by the per-unit sums (``counts @ sums``).
No Python loop runs over resamples; memory stays small whatever ``n_boot`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats

from jlml_lib.errors import ConfigError, DataError

DEFAULT_RANKS = (1, 5, 10, 20)
# Draws per block: the block's counts (int64) stay in a core's L2 cache while bincount scatters
# into them -- measured 3-6x faster than 32 MB blocks (benchmarks/uncertainty_speed.py).
_BLOCK_ENTRIES = 1 << 16
_MIN_BLOCK_ROWS = 16  # many queries: still several resamples per vectorised step

__all__ = [
    "DEFAULT_RANKS",
    "Interval",
    "Summary",
    "QueryScores",
    "query_scores",
    "average_draws",
    "metric_keys",
    "weighted_metrics",
    "bootstrap_distribution",
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "stratified_bootstrap_ci",
    "t_summary",
    "summarise_runs",
    "intervals_to_json",
    "intervals_from_json",
]


# --------------------------------------------------------------------------- result types
class Interval(NamedTuple):
    """A point estimate and its confidence interval (fractions, like the metrics)."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": float(self.estimate), "low": float(self.low), "high": float(self.high)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Interval":
        try:
            return cls(float(d["estimate"]), float(d["low"]), float(d["high"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"an interval must be a mapping with numeric 'estimate', 'low', 'high'; got {d!r}") from None


class Summary(NamedTuple):
    """Mean, sample standard deviation (ddof=1) and t-interval of the mean over ``n`` runs."""

    mean: float
    std: float
    n: int
    interval: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"mean": float(self.mean), "std": float(self.std), "n": int(self.n), "interval": self.interval.to_dict()}


def intervals_to_json(intervals: Mapping[str, Interval]) -> dict[str, dict[str, float]]:
    """``{"rank1": {"estimate", "low", "high"}, ...}`` for metrics.json."""
    return {k: Interval(*v).to_dict() for k, v in intervals.items()}


def intervals_from_json(d: Mapping[str, Any]) -> dict[str, Interval]:
    """Inverse of :func:`intervals_to_json`."""
    return {k: Interval.from_dict(v) for k, v in d.items()}


def metric_keys(ranks: Sequence[int] = DEFAULT_RANKS) -> list[str]:
    """``["rank1", "rank5", ..., "mAP"]``: the keys of every result dict here (and of metrics.json)."""
    return [f"rank{k}" for k in ranks] + ["mAP"]


# --------------------------------------------------------------------------- per-query contributions
@dataclass(frozen=True)
class QueryScores:
    """What each query contributes to CMC and mAP.

    ``cmc[q, k-1]``: 1.0 if query ``q`` is matched within rank ``k`` (for CUHK03 classic, the
    fraction of the gallery draws in which it is); ``ap[q]``: its AP (0 where not counted);
    ``counted[q]``: whether it enters the means (``ap="standard"`` skips queries without a good
    match). ``query_key`` identifies the query list (see ``RankMetrics.query_key``).
    """

    cmc: np.ndarray
    ap: np.ndarray
    counted: np.ndarray
    ap_mode: str
    query_key: str | None = None
    num_draws: int = 1

    @property
    def max_rank(self) -> int:
        return int(self.cmc.shape[1])

    def __len__(self) -> int:
        return int(self.cmc.shape[0])

    def estimate(self, ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, float]:
        """The metrics themselves (for a single draw: bit for bit what ``rank_metrics`` returns)."""
        ranks = _check_ranks(ranks, self.max_rank)
        n = int(self.counted.sum())
        out = {f"rank{k}": float(self.cmc[self.counted, k - 1].sum() / n) for k in ranks}
        out["mAP"] = float(np.mean(self.ap[self.counted]))
        return out


def _first_rank_cmc(first_rank: np.ndarray, max_rank: int) -> np.ndarray:
    k = np.arange(1, max_rank + 1)
    return ((first_rank[..., None] >= 1) & (first_rank[..., None] <= k)).astype(np.float64)


def _counted(query_ap: np.ndarray, ap_mode: str, name: str) -> np.ndarray:
    if ap_mode == "official":
        if not np.all(np.isfinite(query_ap)):
            raise DataError(f"{name}: query_ap holds NaN in 'official' mode, where rank_metrics sets it to 0; "
                            "pass the RankMetrics as rank_metrics returned it")
        return np.ones(query_ap.shape, dtype=bool)
    if ap_mode == "standard":
        return np.isfinite(query_ap)
    raise DataError(f"{name}: unknown ap mode {ap_mode!r}; expected 'official' or 'standard'")


def average_draws(first_rank: Any, query_ap: Any, *, ap: str, max_rank: int, query_key: str | None = None) -> QueryScores:
    """Per-query scores averaged over gallery draws (CUHK03 classic: 10 draws, paper Table 5).

    ``first_rank``, ``query_ap``: ``(num_draws, num_queries)`` arrays, one row per draw, as the
    draws' ``RankMetrics`` give them. Each query's hit at rank k and AP become their mean over the
    draws, so the mean over queries equals the protocol's mean over draws and the query (or its
    identity) stays the resampled unit. The counted queries must be the same in every draw.
    """
    fr = np.asarray(first_rank)
    qa = np.asarray(query_ap, dtype=np.float64)
    if fr.ndim != 2 or qa.shape != fr.shape or fr.shape[0] < 1 or fr.shape[1] < 1:
        raise DataError(f"average_draws: first_rank {fr.shape} and query_ap {qa.shape} must be equal "
                        "non-empty (num_draws, num_queries) arrays")
    if not np.issubdtype(fr.dtype, np.integer) or fr.min() < 0:
        raise DataError("average_draws: first_rank must hold non-negative integers (1-based rank, 0 = no match)")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ConfigError(f"average_draws: max_rank must be a positive integer, got {max_rank!r}")
    counted = _counted(qa, ap, "average_draws")
    if np.any(counted != counted[:1]):
        raise DataError("average_draws: the queries with a good match differ between draws; "
                        "the draws must share one query list and one set of gallery identities")
    c = counted[0]
    if not c.any():
        raise DataError("average_draws: no query is counted (no query has a good match)")
    return QueryScores(cmc=_first_rank_cmc(fr, int(max_rank)).mean(axis=0), ap=np.where(c, qa, 0.0).mean(axis=0),
                       counted=c, ap_mode=ap, query_key=query_key, num_draws=fr.shape[0])


def query_scores(metrics: Any) -> QueryScores:
    """:class:`QueryScores` of a ``RankMetrics`` (or any object with ``first_rank``, ``query_ap``,
    ``ap`` and ``cmc`` or ``max_rank``, e.g. ``results.queries.QueryResults``; 2-D arrays are
    gallery draws, see :func:`average_draws`)."""
    if isinstance(metrics, QueryScores):
        return metrics
    try:
        fr, qa, ap_mode = np.asarray(metrics.first_rank), np.asarray(metrics.query_ap, np.float64), metrics.ap
    except AttributeError:
        raise DataError(f"metrics must be a RankMetrics (first_rank, query_ap, ap, cmc); got {type(metrics).__name__}") from None
    max_rank = getattr(metrics, "max_rank", None)
    max_rank = int(max_rank) if max_rank is not None else len(metrics.cmc)
    key = getattr(metrics, "query_key", None)
    if fr.ndim == 2:
        return average_draws(fr, qa, ap=ap_mode, max_rank=max_rank, query_key=key)
    if fr.ndim != 1 or qa.shape != fr.shape or len(fr) == 0:
        raise DataError(f"metrics: first_rank {fr.shape} and query_ap {qa.shape} must be equal non-empty 1-D arrays")
    counted = _counted(qa, ap_mode, "metrics")
    if not counted.any():
        raise DataError("metrics: no query is counted (no query has a good match)")
    return QueryScores(cmc=_first_rank_cmc(fr, max_rank), ap=np.where(counted, qa, 0.0), counted=counted,
                       ap_mode=ap_mode, query_key=key)


# --------------------------------------------------------------------------- argument checks
def _check_ranks(ranks: Iterable[int], max_rank: int) -> tuple[int, ...]:
    try:
        r = tuple(ranks)
    except TypeError:
        raise ConfigError(f"ranks must be a sequence of integers, got {ranks!r}") from None
    if not r or len(set(r)) != len(r) or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in r):
        raise ConfigError(f"ranks must be distinct integers, e.g. (1, 5, 10, 20); got {ranks!r}")
    bad = [k for k in r if not 1 <= k <= max_rank]
    if bad:
        raise ConfigError(f"ranks {bad} lie outside 1..{max_rank} (the result's max_rank); "
                          "pass smaller ranks or evaluate with a larger max_rank")
    return tuple(int(k) for k in r)


def _check_options(n_boot: Any, level: Any, seed: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer (e.g. 1000), got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ConfigError(f"level must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _units(clusters: Any, n: int, name: str = "clusters") -> tuple[np.ndarray, int]:
    """Unit index of each query: the query itself, or its cluster."""
    if clusters is None:
        return np.arange(n), n
    c = np.asarray(clusters)
    if c.ndim != 1 or len(c) != n:
        raise DataError(f"{name} must hold one label per query ({n}), got shape {c.shape}; "
                        "pass e.g. the query pids in the order of the queries")
    if c.dtype.kind == "f" and np.isnan(c).any():
        raise DataError(f"{name} holds NaN labels")
    _, codes = np.unique(c, return_inverse=True)
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1


def _unit_sums(s: QueryScores, ranks: tuple[int, ...], codes: np.ndarray, n_units: int) -> np.ndarray:
    """``(n_units, len(ranks) + 2)``: per unit, the sums of hit@k and AP over its counted queries,
    and its number of counted queries (last column)."""
    cols = [s.cmc[:, k - 1] for k in ranks] + [s.ap, np.ones(len(s))]
    v = np.stack(cols, axis=1) * s.counted[:, None]
    out = np.zeros((n_units, v.shape[1]))
    np.add.at(out, codes, v)
    return out


def _ratio(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """The metrics of weighted samples: ``(counts @ sums)[:, :-1] / (counts @ sums)[:, -1]``; NaN rows
    where no counted query was drawn."""
    t = counts @ sums
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t[:, -1:] > 0, t[:, :-1] / t[:, -1:], np.nan)


def weighted_metrics(metrics: Any, weights: Any, *, ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, float]:
    """The metrics of the sample in which query ``i`` appears ``weights[i]`` times -- the statistic
    :func:`bootstrap_ci` computes on every resample (equal to ``rank_metrics`` on the repeated rows)."""
    s = query_scores(metrics)
    ranks = _check_ranks(ranks, s.max_rank)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(s),):
        raise DataError(f"weights must hold one count per query ({len(s)}), got shape {w.shape}")
    vals = _ratio(w[None, :], _unit_sums(s, ranks, np.arange(len(s)), len(s)))[0]
    return dict(zip(metric_keys(ranks), map(float, vals)))


# --------------------------------------------------------------------------- resampling core
def _replicates(rng: np.random.Generator, n_boot: int, n_units: int, sums: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``n_boot`` resamples of ``n_units`` units with replacement; the metrics of each, for every
    table of per-unit sums in ``sums`` (all see the same resamples: the pairing)."""
    out = [np.empty((n_boot, s.shape[1] - 1)) for s in sums]
    block = max(1, min(n_boot, max(_MIN_BLOCK_ROWS, _BLOCK_ENTRIES // n_units)))
    dtype = np.uint16 if n_units <= 1 << 16 else np.int64  # half the random bits: ~2x faster draws
    for b0 in range(0, n_boot, block):  # blocks of resamples, each block fully vectorised
        b = min(block, n_boot - b0)
        idx = rng.integers(0, n_units, size=(b, n_units), dtype=dtype)
        flat = np.add(idx, (np.arange(b, dtype=np.int64) * n_units)[:, None], dtype=np.int64)
        counts = np.bincount(flat.reshape(-1), minlength=b * n_units).reshape(b, n_units).astype(np.float64)
        for o, s in zip(out, sums):
            o[b0 : b0 + b] = _ratio(counts, s)
    return out


def _percentiles(estimates: Mapping[str, float], reps: np.ndarray, level: float, what: str) -> dict[str, Interval]:
    ok = ~np.isnan(reps).any(axis=1)
    if not ok.any():
        raise DataError(f"{what}: no resample has a counted query; the result has too few queries with a good match")
    q = np.quantile(reps[ok], [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {k: Interval(float(estimates[k]), float(q[0, i]), float(q[1, i])) for i, k in enumerate(estimates)}


def bootstrap_distribution(metrics: Any, clusters: Any = None, *, n_boot: int = 1000, seed: int = 0,
                           ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, np.ndarray]:
    """The ``n_boot`` bootstrap replicates of each metric (NaN where a resample has no counted
    query), for plots and checks; :func:`bootstrap_ci` takes its quantiles."""
    _check_options(n_boot, 0.5, seed)
    s = query_scores(metrics)
    ranks = _check_ranks(ranks, s.max_rank)
    codes, u = _units(clusters, len(s))
    reps = _replicates(np.random.default_rng(seed), int(n_boot), u, [_unit_sums(s, ranks, codes, u)])[0]
    return {k: reps[:, i] for i, k in enumerate(metric_keys(ranks))}


def bootstrap_ci(metrics: Any, clusters: Any = None, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, Interval]:
    """Percentile-bootstrap interval of rank-k and mAP: ``{"rank1": Interval, ..., "mAP": Interval}``.

    ``metrics``: a ``RankMetrics`` (or a loaded ``QueryResults`` / :class:`QueryScores`).
    ``clusters``: ``None`` resamples queries; one label per query (e.g. ``q_pids``) resamples
    whole clusters. The estimate is the metric itself (module doc for the method).
    """
    _check_options(n_boot, level, seed)
    s = query_scores(metrics)
    ranks = _check_ranks(ranks, s.max_rank)
    codes, u = _units(clusters, len(s))
    reps = _replicates(np.random.default_rng(seed), int(n_boot), u, [_unit_sums(s, ranks, codes, u)])[0]
    return _percentiles(s.estimate(ranks), reps, level, "bootstrap_ci")


def paired_bootstrap_diff(a: Any, b: Any, clusters: Any = None, *, n_boot: int = 1000, level: float = 0.95,
                          seed: int = 0, ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, Interval]:
    """Interval of ``a - b`` (e.g. an ablation against full JLML, Tables 9-12) over the same queries:
    every resample draws the same queries (or clusters) for both, so what the two results share
    -- hard and easy queries -- cancels, and the interval is far narrower than two separate ones.
    An interval excluding 0 means the difference is not explained by query sampling."""
    _check_options(n_boot, level, seed)
    sa, sb = query_scores(a), query_scores(b)
    ka, kb = sa.query_key, sb.query_key
    if ka is not None and kb is not None:
        if ka != kb:
            raise DataError(f"paired_bootstrap_diff: a and b were evaluated on different query lists (query_key "
                            f"{ka!r} vs {kb!r}); pair only results on the same queries in the same order")
    elif len(sa) != len(sb):
        # An object without query_key (e.g. built by hand) can only be checked by its length.
        raise DataError(f"paired_bootstrap_diff: a has {len(sa)} queries, b has {len(sb)}; "
                        "pair only results on the same queries in the same order")
    if len(sa) != len(sb):
        raise DataError(f"paired_bootstrap_diff: a has {len(sa)} queries, b has {len(sb)} despite equal query_key")
    if sa.ap_mode != sb.ap_mode:
        raise DataError(f"paired_bootstrap_diff: a uses ap={sa.ap_mode!r}, b ap={sb.ap_mode!r}; compare one convention")
    ranks = _check_ranks(ranks, min(sa.max_rank, sb.max_rank))
    codes, u = _units(clusters, len(sa))
    ra, rb = _replicates(np.random.default_rng(seed), int(n_boot), u,
                         [_unit_sums(sa, ranks, codes, u), _unit_sums(sb, ranks, codes, u)])
    ea, eb = sa.estimate(ranks), sb.estimate(ranks)
    return _percentiles({k: ea[k] - eb[k] for k in ea}, ra - rb, level, "paired_bootstrap_diff")


# --------------------------------------------------------------------------- splits and seeds
def stratified_bootstrap_ci(results: Sequence[Any], clusters: Sequence[Any] | None = None, *, n_boot: int = 1000,
                            level: float = 0.95, seed: int = 0,
                            ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, Interval]:
    """Interval of a split-averaged metric (VIPeR, GRID: 10 splits; CUHK03 classic: 20).

    ``results``: one result per split (``RankMetrics``, ``QueryResults``, or CUHK03 classic's
    draw-averaged :class:`QueryScores`); ``clusters``: ``None`` or one entry per split (``None`` or
    one label per query, e.g. the split's ``q_pids``). Each resample draws units within every
    split independently and averages the splits' metrics with equal weight, as the protocol does.
    """
    _check_options(n_boot, level, seed)
    results = list(results)
    if not results:
        raise DataError("stratified_bootstrap_ci: results is empty; pass one result per split")
    if clusters is not None and len(clusters) != len(results):
        raise DataError(f"stratified_bootstrap_ci: clusters has {len(clusters)} entries for {len(results)} splits; "
                        "pass one (per-query labels or None) per split")
    scores = [query_scores(r) for r in results]
    ranks = _check_ranks(ranks, min(s.max_rank for s in scores))
    rng = np.random.default_rng(seed)
    total = np.zeros((int(n_boot), len(ranks) + 1))
    for i, s in enumerate(scores):
        codes, u = _units(None if clusters is None else clusters[i], len(s), f"clusters[{i}]")
        total += _replicates(rng, int(n_boot), u, [_unit_sums(s, ranks, codes, u)])[0]
    est = [s.estimate(ranks) for s in scores]
    mean = {k: float(np.mean([e[k] for e in est])) for k in metric_keys(ranks)}
    return _percentiles(mean, total / len(scores), level, "stratified_bootstrap_ci")


def t_summary(values: Sequence[float], *, level: float = 0.95) -> Summary:
    """Mean, sample std and the t-interval of the mean, ``mean ± t_{n-1,(1+level)/2} · std / √n``
    (Student; assumes roughly normal per-run values -- a rough guide with 3-5 seeds)."""

    _check_options(1, level, 0)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        raise DataError(f"t_summary: needs at least 2 finite values (one per seed or split), got {v.tolist()}")
    m, sd = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1)) * sd / np.sqrt(len(v))
    return Summary(m, sd, len(v), Interval(m, float(m - half), float(m + half)))


def summarise_runs(results: Sequence[Any], *, level: float = 0.95,
                   ranks: Sequence[int] = DEFAULT_RANKS) -> dict[str, Summary]:
    """:func:`t_summary` of each metric over runs (seeds) or splits: ``{"rank1": Summary, ...}``.
    ``results``: per-query results (as for :func:`bootstrap_ci`) or metric dicts with those keys."""
    est = []
    for r in results:
        if isinstance(r, Mapping):
            missing = [k for k in metric_keys(ranks) if k not in r]
            if missing:
                raise DataError(f"summarise_runs: a result lacks {missing}; pass per-query results or full metric dicts")
            est.append({k: float(r[k]) for k in metric_keys(ranks)})
        else:
            s = query_scores(r)
            est.append(s.estimate(_check_ranks(ranks, s.max_rank)))
    return {k: t_summary([e[k] for e in est], level=level) for k in metric_keys(ranks)}
