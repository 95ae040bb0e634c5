"""What selective feature learning (Eqs. 1–2) does to the weights: the statistic each equation acts on.

**Eq. (1)**, ℓ2,1 on the global feature layer W_G (c_g × d_g, ``nn.Linear`` layout out × in), is
Σᵢ ‖w_gⁱ‖₂ over W_G's *input columns*: a group LASSO, it drives whole columns to zero — the
global branch stops reading some input dimensions. Measured: the ℓ2 norm of each column, how
concentrated those norms are (Hoyer sparsity, ``wg_col_l2_hoyer``) and the fraction of columns
below 1 % of the largest (``wg_col_frac_below_1pct``, columns switched off).

**Eq. (2)**, ℓ1,2 on the local feature layer W_L (c_l × m·d_l, columns grouped by stripe as in
:func:`jlml_lib.losses.exclusive_group_lasso_l12`), is Σᵢ Σⱼ ‖wⁱ_{l,j}‖₁² over the (output unit i,
stripe j) groups: an *exclusive* group LASSO (Kong et al., 2014). The square is the point: for the
same ℓ1 mass 4 a unit pays 1² + 1² + 1² + 1² = 4 spread evenly over 4 stripes but 4² = 16
concentrated in one, so Eq. (2) keeps **every** stripe in use and makes each (unit, stripe) group
sparse **inside** (the paper's "sparse feature selection for individual image regions"). Measured,
the right way round:

* ``wl_within_group_hoyer_mean`` — the primary statistic: the Hoyer sparsity of the d_l weights
  inside each (unit, stripe) group, averaged over the groups (what Eq. 2 raises);
* ``wl_stripe_balance_mean`` — beside it, the balance *across* a unit's m stripes: per unit,
  1 − Hoyer of its m group-ℓ1 norms, averaged over units (what Eq. 2 keeps high; see
  :func:`stripe_balance`).

Kept for old records and for comparison, but *not* what Eq. (2) makes sparse: ``wl_group_l1_hoyer``
(Hoyer over all c_l·m group norms) and ``wl_stripes_90_*`` (how many stripes carry 90 % of a unit's
mass) measure concentration *across* groups, which Eq. (2) discourages — a plain group LASSO over
the stripes (Σᵢ Σⱼ ‖wⁱ_{l,j}‖₂) would raise them. Records written before these two statistics
existed lack ``wl_stripe_balance_mean``; readers take a statistic only where a record has it.

Hoyer sparsity (Hoyer, 2004) of x ∈ R^n: (√n − ‖x‖₁/‖x‖₂) / (√n − 1); 0 when all |x_i| are
equal, 1 when a single entry is non-zero. It is scale-free, so it compares designs whose
weights have different magnitudes (a BatchNorm after W normalises W's scale away, issue 11).

:func:`summary` gives the flat, JSON-ready dict every run records; :func:`sorted_column_norms`,
:func:`unit_stripe_hoyer` and :func:`unit_stripe_norms` give the raw arrays for pictures
(:func:`jlml_lib.results.plots.plot_selection_norms`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jlml_lib.errors import ConfigError

__all__ = ["hoyer", "column_norms", "stripe_group_norms", "fraction_below", "stripes_for_mass",
           "within_group_hoyer", "stripe_balance", "weight_summary", "summary", "sorted_column_norms",
           "unit_stripe_norms", "unit_stripe_hoyer", "EQ1_KEYS", "EQ2_KEYS", "MASS", "SMALL"]

MASS = 0.9    # "how many stripes carry 90 % of a unit's group-ℓ1 mass" (issue 11)
SMALL = 0.01  # a column counts as switched off below 1 % of the largest column norm (issue 11)
#: the statistics each equation acts on (issue 18): Eq. (1) W_G's columns; Eq. (2) inside W_L's
#: (unit, stripe) groups, and the balance across a unit's stripes that it keeps high
EQ1_KEYS = ("wg_col_l2_hoyer", "wg_col_frac_below_1pct")
EQ2_KEYS = ("wl_within_group_hoyer_mean", "wl_stripe_balance_mean")


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
    for an all-zero group. This is what Eq. (2), an exclusive group LASSO, sparsifies (Kong et al.,
    2014): e.g. a group [1, 0, 0, 0] scores 1, [1, 1, 1, 1] scores 0."""
    a = _matrix(W_L, "within_group_hoyer(W_L)")
    stripe_group_norms(a, m)  # validates m
    g = np.abs(a).reshape(a.shape[0], m, a.shape[1] // m)
    d = g.shape[2]
    if d < 2:
        raise ConfigError(f"within_group_hoyer: each stripe group holds {d} weight; needs at least 2.")
    l1, l2 = g.sum(axis=2), np.sqrt((g * g).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((np.sqrt(d) - l1 / l2) / (np.sqrt(d) - 1.0), 0.0, 1.0)


def stripe_balance(groups: np.ndarray) -> np.ndarray:
    """Per output unit (row of ``groups``, the c_l × m group-ℓ1 norms of :func:`stripe_group_norms`),
    how evenly its m stripes share its mass: 1 − Hoyer sparsity of the row, in [0, 1].

    1 when every stripe carries the same ℓ1 mass (what Eq. 2's squared ℓ1 favours), 0 when one
    stripe carries it all. By hand, m = 4: (1, 1, 1, 1) -> 1 − 0 = 1; (2, 0, 0, 0) -> 1 − 1 = 0;
    (1, 1, 0, 0): ‖·‖₁/‖·‖₂ = 2/√2 = √2, Hoyer (2 − √2)/(2 − 1), balance √2 − 1 ≈ 0.414. NaN for a
    dead (all-zero) unit; 1 for every unit when m = 1 (a single stripe is all a unit has).
    """
    g = np.asarray(groups, dtype=np.float64)
    if g.ndim != 2 or 0 in g.shape or (g < 0).any() or not np.isfinite(g).all():
        raise ConfigError(f"stripe_balance: expected a finite, non-negative (units × stripes) matrix, got shape "
                          f"{g.shape}; pass stripe_group_norms(W_L, m).")
    m = g.shape[1]
    if m == 1:
        return np.ones(g.shape[0])
    l1, l2 = g.sum(axis=1), np.sqrt((g * g).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        sparsity = np.clip((np.sqrt(m) - l1 / l2) / (np.sqrt(m) - 1.0), 0.0, 1.0)
    return 1.0 - sparsity


def weight_summary(W_G: Tensor | np.ndarray, W_L: Tensor | np.ndarray, m: int) -> dict[str, Any]:
    """The flat summary of :func:`summary` from the two matrices themselves."""
    cols = column_norms(W_G)
    groups = stripe_group_norms(W_L, m)
    k = stripes_for_mass(groups)
    out: dict[str, Any] = {
        # Eq. (1): W_G's input columns
        "wg_col_l2_hoyer": hoyer(cols),
        "wg_col_frac_below_1pct": fraction_below(cols),
        "wg_col_l2_max": float(cols.max()),
        # Eq. (2): inside each (unit, stripe) group, and the balance across a unit's stripes
        "wl_within_group_hoyer_mean": float(np.nanmean(within_group_hoyer(W_L, m))),
        "wl_stripe_balance_mean": float(np.nanmean(stripe_balance(groups))),
        # across-group concentration (Eq. 2 keeps it low); kept so old and new records compare
        "wl_group_l1_hoyer": hoyer(groups),
        "wl_group_l1_max": float(groups.max()),
        "wl_stripes_90_mean": float(k.mean()),
    }
    # the distribution of that count: fraction of units needing 0 (dead), 1, ..., m stripes
    for n in range(m + 1):
        out[f"wl_stripes_90_frac_{n}"] = float(np.mean(k == n))
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

    Eq. (1), ``wg_*`` — W_G's input-column ℓ2 norms: their Hoyer sparsity (``wg_col_l2_hoyer``; SFL
    raises it), the fraction below 1 % of the largest (``wg_col_frac_below_1pct``, columns switched
    off), the largest norm.

    Eq. (2), ``wl_*`` — inside each (unit, stripe) group: the mean Hoyer sparsity of its d_l weights
    (``wl_within_group_hoyer_mean``; SFL raises it); across a unit's stripes: the mean balance of its
    m group-ℓ1 norms (``wl_stripe_balance_mean``, 1 = every stripe carries the same mass; SFL keeps it
    high, :func:`stripe_balance`). Also, for comparison with records before issue 18, the across-group
    concentration Eq. (2) does *not* ask for: the Hoyer sparsity of all c_l·m group norms
    (``wl_group_l1_hoyer``), the largest group norm, the mean number of stripes carrying 90 % of a
    unit's mass and its distribution (``wl_stripes_90_frac_<n>``, n = 0 … m; 0 = a dead unit).
    """
    W_G, W_L, m = _weights(model)
    return weight_summary(W_G, W_L, m)


@torch.no_grad()
def sorted_column_norms(model: nn.Module) -> np.ndarray:
    """W_G's input-column ℓ2 norms, largest first (the picture of Eq. 1's selection)."""
    return np.sort(column_norms(_weights(model)[0]))[::-1].copy()


@torch.no_grad()
def unit_stripe_norms(model: nn.Module) -> np.ndarray:
    """W_L's group ℓ1 norms as a (output unit × stripe) matrix, units in their own order (the
    across-stripe balance of Eq. 2 is computed from each row: :func:`stripe_balance`)."""
    _, W_L, m = _weights(model)
    return stripe_group_norms(W_L, m)


@torch.no_grad()
def unit_stripe_hoyer(model: nn.Module) -> np.ndarray:
    """The Hoyer sparsity inside each (output unit, stripe) group of W_L, units in their own order
    (the heat map of what Eq. 2 makes sparse): :func:`within_group_hoyer`."""
    _, W_L, m = _weights(model)
    return within_group_hoyer(W_L, m)
