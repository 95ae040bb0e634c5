"""What selective feature learning (Eqs. 1–2) does to the weights: group-sparsity statistics.

Eq. (1), ℓ2,1 on the global feature layer W_G (c_g × d_g, ``nn.Linear`` layout out × in), is
meant to switch whole *input columns* off: we measure the ℓ2 norm of each column, how
concentrated those norms are (Hoyer sparsity) and the fraction of columns below 1 % of the
largest. Eq. (2), ℓ1,2 on the local feature layer W_L (c_l × m·d_l, columns grouped by stripe
as in :func:`jlml_lib.losses.exclusive_group_lasso_l12`), acts on the (output unit, stripe)
groups: we measure the ℓ1 norm of each group, their Hoyer sparsity, per output unit how many
stripes carry 90 % of its group-ℓ1 mass, and — since an exclusive group LASSO (Kong et al.,
2014) sparsifies *inside* each group — the mean Hoyer sparsity of the weights within a group.

Hoyer sparsity (Hoyer, 2004) of x ∈ R^n: (√n − ‖x‖₁/‖x‖₂) / (√n − 1); 0 when all |x_i| are
equal, 1 when a single entry is non-zero. It is scale-free, so it compares designs whose
weights have different magnitudes (a BatchNorm after W normalises W's scale away, issue 11).

:func:`summary` gives the flat, JSON-ready dict every run records; :func:`sorted_column_norms`
and :func:`unit_stripe_norms` give the raw arrays for pictures.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jlml_lib.errors import ConfigError

__all__ = ["hoyer", "column_norms", "stripe_group_norms", "fraction_below", "stripes_for_mass",
           "within_group_hoyer", "weight_summary", "summary", "sorted_column_norms", "unit_stripe_norms",
           "MASS", "SMALL"]

MASS = 0.9    # "how many stripes carry 90 % of a unit's group-ℓ1 mass" (issue 11)
SMALL = 0.01  # a column counts as switched off below 1 % of the largest column norm (issue 11)


def _matrix(W: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(W.detach().cpu().double() if isinstance(W, Tensor) else W, dtype=np.float64)
    if a.ndim != 2 or 0 in a.shape:
        raise ConfigError(f"{name}: expected a non-empty 2-D weight (out_features × in_features, as nn.Linear "
                          f"stores it), got shape {a.shape}; pass model.global_fc_weight / model.local_fc_weight.")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name}: the weight holds NaN/inf values; the run diverged — check its log.jsonl.")
    return a


def hoyer(x: Tensor | np.ndarray) -> float:
    """Hoyer sparsity of the entries of ``x`` (any shape, signs ignored), in [0, 1]."""
    a = np.abs(np.asarray(x.detach().cpu().double() if isinstance(x, Tensor) else x, dtype=np.float64)).ravel()
    n = a.size
    if n < 2:
        raise ConfigError(f"hoyer: needs at least 2 values (got {n}); sparsity of a single number is undefined.")
    l2 = float(np.sqrt(np.sum(a * a)))
    if not np.isfinite(l2) or l2 == 0.0:
        raise ConfigError(f"hoyer: the values are all zero or not finite (‖x‖₂={l2}); sparsity is undefined.")
    root = np.sqrt(n)
    # clip: rounding can push an all-equal vector a hair below 0
    return float(np.clip((root - a.sum() / l2) / (root - 1.0), 0.0, 1.0))


def column_norms(W_G: Tensor | np.ndarray) -> np.ndarray:
    """ℓ2 norm of each input column w_g^i of W_G — the groups of Eq. (1); shape (d_g,)."""
    return np.linalg.norm(_matrix(W_G, "column_norms(W_G)"), axis=0)


def stripe_group_norms(W_L: Tensor | np.ndarray, m: int) -> np.ndarray:
    """ℓ1 norm of each (output unit i, stripe j) slice w^i_{l,j} of W_L — the groups of Eq. (2).

    Shape (c_l, m); input columns [j·d_l, (j+1)·d_l) belong to stripe j, as in the loss.
    """
    a = _matrix(W_L, "stripe_group_norms(W_L)")
    if not isinstance(m, (int, np.integer)) or m < 1 or a.shape[1] % m:
        raise ConfigError(f"stripe_group_norms: in_features={a.shape[1]} does not split into m={m!r} stripes; "
                          "pass the model's m (model.cfg.m).")
    return np.abs(a).reshape(a.shape[0], m, a.shape[1] // m).sum(axis=2)


def fraction_below(norms: np.ndarray, rel: float = SMALL) -> float:
    """Fraction of ``norms`` strictly below ``rel`` × their maximum (switched-off groups)."""
    a = np.asarray(norms, dtype=np.float64).ravel()
    if a.size == 0 or not 0.0 < rel < 1.0:
        raise ConfigError(f"fraction_below: needs non-empty norms and 0 < rel < 1 (got {a.size} values, rel={rel}).")
    return float(np.mean(a < rel * a.max()))


def stripes_for_mass(groups: np.ndarray, mass: float = MASS) -> np.ndarray:
    """Per output unit (row of ``groups``, shape c_l × m), the fewest stripes whose group-ℓ1
    norms add up to at least ``mass`` of the row's total. A row of zeros (a dead unit) needs 0."""
    g = np.asarray(groups, dtype=np.float64)
    if g.ndim != 2 or 0 in g.shape or (g < 0).any():
        raise ConfigError(f"stripes_for_mass: expected a non-negative (units × stripes) matrix, got shape {g.shape}; "
                          "pass stripe_group_norms(W_L, m).")
    if not 0.0 < mass <= 1.0:
        raise ConfigError(f"stripes_for_mass: mass must be in (0, 1], got {mass}.")
    total = g.sum(axis=1, keepdims=True)
    cum = np.cumsum(-np.sort(-g, axis=1), axis=1)
    # relative tolerance: 9 of 10 carries exactly 90 % even if 0.9·10 rounds up
    enough = cum >= mass * total * (1.0 - 1e-12)
    count = np.argmax(enough, axis=1) + 1
    return np.where(total[:, 0] > 0, count, 0)


def within_group_hoyer(W_L: Tensor | np.ndarray, m: int) -> np.ndarray:
    """Hoyer sparsity of the d_l weights inside each (unit, stripe) group, shape (c_l, m); NaN
    for an all-zero group. This is what an exclusive group LASSO sparsifies (Kong et al., 2014)."""
    a = _matrix(W_L, "within_group_hoyer(W_L)")
    stripe_group_norms(a, m)  # validates m
    g = np.abs(a).reshape(a.shape[0], m, a.shape[1] // m)
    d = g.shape[2]
    if d < 2:
        raise ConfigError(f"within_group_hoyer: each stripe group holds {d} weight; needs at least 2.")
    l1, l2 = g.sum(axis=2), np.sqrt((g * g).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((np.sqrt(d) - l1 / l2) / (np.sqrt(d) - 1.0), 0.0, 1.0)


def weight_summary(W_G: Tensor | np.ndarray, W_L: Tensor | np.ndarray, m: int) -> dict[str, Any]:
    """The flat summary of :func:`summary` from the two matrices themselves."""
    cols = column_norms(W_G)
    groups = stripe_group_norms(W_L, m)
    k = stripes_for_mass(groups)
    out: dict[str, Any] = {
        "wg_col_l2_hoyer": hoyer(cols),
        "wg_col_frac_below_1pct": fraction_below(cols),
        "wg_col_l2_max": float(cols.max()),
        "wl_group_l1_hoyer": hoyer(groups),
        "wl_group_l1_max": float(groups.max()),
        "wl_stripes_90_mean": float(k.mean()),
    }
    # the distribution of that count: fraction of units needing 0 (dead), 1, ..., m stripes
    for n in range(m + 1):
        out[f"wl_stripes_90_frac_{n}"] = float(np.mean(k == n))
    out["wl_within_group_hoyer_mean"] = float(np.nanmean(within_group_hoyer(W_L, m)))
    return out


def _weights(model: nn.Module) -> tuple[Tensor, Tensor, int]:
    model = getattr(model, "module", model)  # a DDP-wrapped model
    try:
        return model.global_fc_weight, model.local_fc_weight, int(model.cfg.m)
    except AttributeError:
        raise ConfigError(f"selection statistics need a JLML model (global_fc_weight, local_fc_weight, cfg.m); "
                          f"got {type(model).__name__}. Build it with jlml_lib.model.jlml_resnet39.") from None


@torch.no_grad()
def summary(model: nn.Module) -> dict[str, Any]:
    """Group-sparsity statistics of a JLML model's W_G and W_L, flat and JSON-ready (floats).

    ``wg_*``: W_G's input-column ℓ2 norms (Eq. 1 groups): Hoyer sparsity, fraction below 1 % of the
    largest, largest norm. ``wl_*``: W_L's (unit, stripe) ℓ1 norms (Eq. 2 groups): Hoyer sparsity,
    largest norm, the mean number of stripes carrying 90 % of a unit's mass and its distribution
    (``wl_stripes_90_frac_<n>``, n = 0 … m; 0 = a dead, all-zero unit), and the mean Hoyer sparsity of the
    weights inside a group.
    """
    W_G, W_L, m = _weights(model)
    return weight_summary(W_G, W_L, m)


@torch.no_grad()
def sorted_column_norms(model: nn.Module) -> np.ndarray:
    """W_G's input-column ℓ2 norms, largest first (the picture of Eq. 1's selection)."""
    return np.sort(column_norms(_weights(model)[0]))[::-1].copy()


@torch.no_grad()
def unit_stripe_norms(model: nn.Module) -> np.ndarray:
    """W_L's group ℓ1 norms as a (output unit × stripe) matrix (the heat map of Eq. 2's groups)."""
    _, W_L, m = _weights(model)
    return stripe_group_norms(W_L, m)
