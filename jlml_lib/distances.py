"""Euclidean distances between re-id features (paper §2.3: L2 on the 1,024-D joint feature).

Two ways to the same numbers:

* :func:`pairwise_distances`: the dense float64 matrix, ``sqrt(max(|q|² + |g|² - 2 q·g, 0))``.
* Certified blocks, for evaluating without that matrix (``evaluation``, ``reranking``):
  features are centred and scaled by a power of two (:class:`Scaled`; translation leaves distances
  unchanged, centring shrinks the norms that bound the error, the power of two is exact), products
  are float32 (or float64) GEMMs split along the feature axis (:func:`products`), and
  :meth:`Scaled.tolerance` bounds the error of the result rigorously (worst case over any
  summation order). A decision that the bound cannot settle is made on :func:`sq_dists`, the
  float64 value of the pair, which depends only on the pair (not on the batch), so that one pair
  always gets one value.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from jlml_lib.errors import ConfigError, DataError

__all__ = ["pairwise_distances"]

U32 = 2.0**-24  # unit roundoff, float32
U64 = 2.0**-53
K_BLOCK = 256  # feature-axis split of the float32 products: error bound γ_256 instead of γ_D
_TILE = 1024  # gallery columns per split product (its partial sums stay in cache)


def pairwise_distances(
    q: Any, g: Any, *, chunk: int = 1024, dtype: torch.dtype = torch.float64, device: Any = None
) -> np.ndarray:
    """Euclidean (L2) distances between the rows of ``q`` (N×D) and ``g`` (M×D), as an N×M numpy array.

    The paper matches with the L2 distance on the 1,024-D joint feature (§2.3). Computed as
    ``sqrt(max(|q|² + |g|² - 2 q·g, 0))`` in ``dtype`` (float64 by default, like MATLAB's
    ``pdist2``, so cancellation does not reorder near-ties), ``chunk`` query rows at a time, on
    ``device`` (default: the features' device). For evaluation without the matrix see
    :func:`jlml_lib.evaluation.rank_metrics_from_features`.
    """
    qt = q if isinstance(q, torch.Tensor) else torch.as_tensor(np.asarray(q))
    gt = g if isinstance(g, torch.Tensor) else torch.as_tensor(np.asarray(g))
    if qt.ndim != 2 or gt.ndim != 2:
        raise DataError(f"pairwise_distances: features must be 2-D (N×D), got {tuple(qt.shape)} and {tuple(gt.shape)}")
    if qt.shape[1] != gt.shape[1]:
        raise DataError(
            f"pairwise_distances: query features are {qt.shape[1]}-D but gallery features are {gt.shape[1]}-D; "
            "extract both with the same model and kind"
        )
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"pairwise_distances: chunk must be a positive integer, got {chunk!r}")
    dev = torch.device(device) if device is not None else qt.device
    qt = qt.detach().to(dev, dtype)
    gt = gt.detach().to(dev, dtype)
    g2 = (gt * gt).sum(1)
    out = np.empty((qt.shape[0], gt.shape[0]), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    for s in range(0, qt.shape[0], chunk):
        qc = qt[s : s + chunk]
        d2 = (qc * qc).sum(1, keepdim=True) + g2.unsqueeze(0) - 2.0 * (qc @ gt.T)
        out[s : s + chunk] = d2.clamp_min_(0).sqrt_().cpu().numpy()
    return out


# --------------------------------------------------------------------------- input
def features(name: str, x: Any, where: str) -> np.ndarray:
    """A 2-D float32/float64 numpy view of ``x`` (no copy for CPU float tensors/arrays), checked finite."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.numpy() if x.dtype in (torch.float32, torch.float64) else x.to(torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{where}: {name} must be a numeric array (N × D features), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{where}: {name} must be 2-D (N × D features), got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)  # integers and half precision: exact in float64
    arr = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("="), copy=False))
    for s in range(0, len(arr), 65536):  # a sum per block: NaN/inf anywhere makes it non-finite
        blk = arr[s : s + 65536]
        if not np.isfinite(blk.sum(dtype=np.float64)) and not np.isfinite(blk).all():
            i, j = np.argwhere(~np.isfinite(blk))[0]
            raise DataError(f"{where}: {name} holds {'NaN' if np.isnan(blk[i, j]) else 'an infinite value'} at "
                            f"[row {s + i}, column {j}]; features must be finite (a diverged model?)")
    return arr


def feature_pair(q: Any, g: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``features`` of both sides, of one width."""
    qf, gf = features("q_feats", q, where), features("g_feats", g, where)
    if qf.shape[1] != gf.shape[1]:
        raise DataError(f"{where}: q_feats are {qf.shape[1]}-D but g_feats are {gf.shape[1]}-D; "
                        "extract both with the same model and feature kind")
    if qf.shape[1] == 0:
        raise DataError(f"{where}: the features have 0 dimensions")
    return qf, gf


# --------------------------------------------------------------------------- float64, per pair
def sq_norms(x: np.ndarray, step: int = 4096) -> np.ndarray:
    """``|x_i|²`` in float64, one row at a time in effect (the same kernel as :func:`sq_dists`)."""
    out = np.empty(len(x))
    for s in range(0, len(x), step):
        v = x[s : s + step].astype(np.float64, copy=False)
        out[s : s + step] = np.einsum("ij,ij->i", v, v)
    return out


def sq_dists(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, na: np.ndarray, nb: np.ndarray,
             step: int = 1024) -> np.ndarray:
    """Float64 squared distances of the pairs ``(a[ia[k]], b[ib[k]])``: ``max(|a|² + |b|² - 2 a·b, 0)``,
    the formula of :func:`pairwise_distances` (``na``, ``nb``: :func:`sq_norms` of the same rows).

    Each value comes from one contiguous float64 row product whose summation order depends only
    on the width, so a pair gets the same value in any batch (and from float32 or float64 copies
    of the same rows): exact comparisons (ties by gallery order) are consistent wherever the pair
    is met. Pass float64 arrays where the same rows recur (no conversion per pair).
    """
    out = np.empty(len(ia))
    for s in range(0, len(ia), step):
        i, j = ia[s : s + step], ib[s : s + step]
        x = a[i].astype(np.float64, copy=False)
        y = b[j].astype(np.float64, copy=False)
        out[s : s + step] = (na[i] + nb[j]) - 2.0 * np.einsum("ij,ij->i", x, y)
    return np.maximum(out, 0.0, out=out)


# --------------------------------------------------------------------------- certified float32
def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


@dataclass
class Scaled:
    """Features centred on ``mu`` and scaled by ``scale`` (a power of two), rounded to ``dtype``
    (float32 by default; float64 for the float64-product path of ``evaluation``).

    ``s2`` converts a float64 squared distance into these units exactly.
    """

    mu: np.ndarray
    scale: float
    dim: int
    dtype: torch.dtype = torch.float32

    @classmethod
    def of(cls, centre_on: np.ndarray, *also: np.ndarray, step: int = 65536,
           dtype: torch.dtype = torch.float32) -> "Scaled":
        """Centred on the mean of ``centre_on`` (rounded to float32: any centre is exact, and this
        one makes the centring a single rounding); scaled so that every centred coordinate is below 2
        in size."""
        total = np.zeros(centre_on.shape[1])
        big = 0.0
        for k, x in enumerate((centre_on, *also)):
            for s in range(0, len(x), step):
                blk = x[s : s + step]
                if k == 0:
                    total += blk.sum(0, dtype=np.float64)
                if len(blk):
                    big = max(big, float(np.max(blk)), -float(np.min(blk)))
        mu = (total / max(len(centre_on), 1)).astype(np.float32)
        _, e = np.frexp(big if big > 0 else 1.0)  # |x - mu| <= 2 big < 2**(e+1)
        return cls(mu, float(np.ldexp(1.0, -int(e))), centre_on.shape[1], dtype)

    @property
    def s2(self) -> float:
        return self.scale * self.scale

    @property
    def u(self) -> float:
        """The unit roundoff of ``dtype``."""
        return U64 if self.dtype == torch.float64 else U32

    def cast(self, x: np.ndarray, out: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Rows ``x`` in these units as ``dtype`` (one rounding: the scale is a power of two), and
        their float64 norms. ``out``: a ``dtype`` buffer of at least ``x.size`` elements to reuse."""
        t = torch.from_numpy(x)
        if t.dtype == self.dtype and out is not None:
            mu = torch.from_numpy(self.mu).to(t.dtype)
            y = torch.sub(t, mu, out=out.view(-1)[: t.numel()].view(t.shape)).mul_(self.scale)
        else:
            wide = t.to(torch.promote_types(t.dtype, self.dtype))  # centred in the wider type, rounded once
            y = torch.sub(wide, torch.from_numpy(self.mu).to(wide.dtype)).mul_(self.scale).to(self.dtype)
        return y, np.sqrt(np.einsum("ij,ij->i", y.numpy(), y.numpy(), dtype=np.float64))

    def tolerance(self, xn: np.ndarray, yn: Any, rn: np.ndarray, rn_other: Any) -> np.ndarray:
        """A bound on ``|s2 · sq_dists - (|x|² + A)|`` for ``A = fl(fl(|y|²) - 2 · products(x, y))``
        in ``dtype`` (unit roundoff ``u``).

        ``xn``, ``yn``: the cast vectors' norms; ``rn``, ``rn_other``: the raw features' norms
        (for :func:`sq_dists`' own rounding), all float64 and broadcastable. Terms (Higham,
        Accuracy and Stability of Numerical Algorithms, §3.1): the split products (``γ_k`` per
        block of ``k`` coordinates, any summation order, FMA or not, plus ``γ`` of the block sum)
        on ``|x||y|``; the roundings of ``|y|²`` and of the final sum; the rounding of the
        centred inputs to ``dtype`` (``u (|x| + |y|)`` on the distance); float64 rounding in
        :func:`sq_dists` and in the thresholds; underflow (absolute, negligible here).
        """
        u = self.u
        k = min(K_BLOCK, self.dim)
        nblocks = -(-self.dim // k)
        g = _gamma(k, u) + _gamma(nblocks, u) * (1 + _gamma(k, u))
        g64 = _gamma(self.dim + 4, U64)
        s = xn + yn
        raw = (rn * rn + np.square(rn_other)) * self.s2
        return 1.02 * (2 * g * xn * yn + 2.2 * u * (yn * yn + xn * yn) + 2.2 * (u + 2 * U64) * s * s
                       + 8 * g64 * (s * s + raw)) + 1e-30


def products(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, acc: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """``out = x @ y.T`` in the inputs' dtype, summed over blocks of ``K_BLOCK`` coordinates (see ``tolerance``).

    ``acc``, ``tmp``: scratch of at least ``len(x) × _TILE``. Each block's GEMM writes a fresh
    buffer (no read-back of partial sums into the BLAS accumulator), so the bound holds whatever
    the library's blocking.
    """
    d, b = x.shape[1], x.shape[0]
    k = min(K_BLOCK, d)
    for c0 in range(0, y.shape[0], _TILE):
        yt = y[c0 : c0 + _TILE]
        n = yt.shape[0]
        a = torch.mm(x[:, :k], yt[:, :k].T, out=acc[:b, :n])
        for k0 in range(k, d, k):
            a.add_(torch.mm(x[:, k0 : k0 + k], yt[:, k0 : k0 + k].T, out=tmp[:b, :n]))
        out[:, c0 : c0 + n] = a
    return out


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Full-precision float32 matmuls inside (the bound assumes them; a user may have allowed bf16/TF32)."""
    prev = torch.get_float32_matmul_precision()
    if prev != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if prev != "highest":
            torch.set_float32_matmul_precision(prev)


def round_down32(x: np.ndarray) -> np.ndarray:
    """The largest float32 ``<= x`` (element-wise)."""
    y = x.astype(np.float32)
    return np.where(y > x, np.nextafter(y, np.float32(-np.inf)), y)


def round_up32(x: np.ndarray) -> np.ndarray:
    """The smallest float32 ``>= x`` (element-wise)."""
    y = x.astype(np.float32)
    return np.where(y < x, np.nextafter(y, np.float32(np.inf)), y)


def widen(low: np.ndarray, high: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Float64 bounds ``low <= high`` as ``dtype`` values that still enclose them (float32: rounded
    outwards; float64: one more step outwards, for the rounding of ``low``/``high`` themselves)."""
    if np.dtype(dtype) == np.float32:
        return round_down32(low), round_up32(high)
    return np.nextafter(low, -np.inf), np.nextafter(high, np.inf)
