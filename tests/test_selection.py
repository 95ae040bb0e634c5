"""jlml_lib.selection: group-sparsity statistics of W_G / W_L (Eqs. 1–2, issues 11 and 18).

Every expected value below is derived by hand in the comment next to it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jlml_lib.errors import ConfigError
from jlml_lib.model import jlml_resnet39
from jlml_lib.selection import (EQ1_KEYS, EQ2_KEYS, column_norms, fraction_below, hoyer, sorted_column_norms,
                                stripe_balance, stripe_group_norms, stripes_for_mass, summary, unit_stripe_hoyer,
                                unit_stripe_norms, weight_summary, within_group_hoyer)

SQ2 = math.sqrt(2.0)


# ---------------------------------------------------------------- Hoyer sparsity
def test_hoyer_hand_cases():
    # one non-zero of 4: ‖x‖₁/‖x‖₂ = 1 -> (2 - 1)/(2 - 1) = 1
    assert hoyer(np.array([0.0, 3.0, 0.0, 0.0])) == pytest.approx(1.0)
    # all equal: ‖x‖₁/‖x‖₂ = 4/2 = 2 = √4 -> 0
    assert hoyer(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.0, abs=1e-12)
    # two ones of 4 (signs ignored): 2/√2 = √2 -> (2 - √2)/1
    assert hoyer(np.array([-1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0 - SQ2)
    # four ones of 9: 4/2 = 2 -> (3 - 2)/(3 - 1) = 0.5; a torch tensor and a matrix shape work too
    assert hoyer(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [np.array([2.0]), np.zeros(5), np.array([1.0, np.nan])])
def test_hoyer_undefined_is_an_error(bad):
    with pytest.raises(ConfigError, match="hoyer"):
        hoyer(bad)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(2, 40), elements=st.floats(-1e3, 1e3)).filter(lambda a: np.abs(a).max() > 1e-3),
       st.floats(1e-3, 1e3))
def test_hoyer_is_scale_and_order_free_and_in_unit_interval(x, c):
    h = hoyer(x)
    assert 0.0 <= h <= 1.0
    assert hoyer(c * x) == pytest.approx(h, abs=1e-9)
    assert hoyer(x[::-1]) == pytest.approx(h, abs=1e-9)


# ---------------------------------------------------------------- W_G (Eq. 1)
def test_column_norms_are_over_input_columns():
    # W_G is out × in (2 × 3); columns (3,4), (0,0), (1,-1) -> 5, 0, √2.
    # Rows would give two numbers (√10, √17): the orientation is visible in the shape.
    W = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, -1.0]])
    np.testing.assert_allclose(column_norms(W), [5.0, 0.0, SQ2])


def test_fraction_below_one_percent_of_largest():
    # 1 % of 5 = 0.05: only the 0 column is below -> 1/3
    assert fraction_below(np.array([5.0, 0.0, SQ2])) == pytest.approx(1 / 3)
    # 1 % of 100 = 1: 0.99 is below, 1 is not ("strictly below") -> 1/4
    assert fraction_below(np.array([100.0, 1.0, 0.99, 2.0])) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="rel"):
        fraction_below(np.array([1.0, 2.0]), rel=1.5)


# ---------------------------------------------------------------- W_L (Eq. 2)
def test_stripe_groups_are_contiguous_column_blocks():
    # m=2, d_l=2: row 0 = [1,-2 | 0,3] -> ℓ1 per stripe (3, 3); row 1 = [0,0 | 5,-5] -> (0, 10).
    # An interleaved grouping (columns j::m) would give row 0 = (|1|+|0|, |-2|+|3|) = (1, 5).
    W = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, 5.0, -5.0]])
    np.testing.assert_allclose(stripe_group_norms(W, 2), [[3.0, 3.0], [0.0, 10.0]])


def test_stripes_for_ninety_percent_of_the_mass():
    groups = np.array([[9.0, 1.0, 0.0, 0.0],   # 9 >= 0.9·10 -> 1 stripe (the boundary counts)
                       [5.0, 3.0, 2.0, 0.0],   # 5, 8 < 9; 10 >= 9 -> 3
                       [1.0, 1.0, 1.0, 1.0],   # 3 < 3.6 -> all 4
                       [0.0, 0.0, 7.0, 0.0],   # order does not matter -> 1
                       [0.0, 0.0, 0.0, 0.0]])  # a dead unit -> 0
    np.testing.assert_array_equal(stripes_for_mass(groups), [1, 3, 4, 1, 0])
    # at 50 %: 9 >= 5 -> 1; 5 >= 5 -> 1; 1, 2 >= 2 -> 2; 1; 0
    np.testing.assert_array_equal(stripes_for_mass(groups, 0.5), [1, 1, 2, 1, 0])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(0.0, 100.0)))
def test_stripes_for_mass_is_the_fewest_that_suffice(groups):
    k = stripes_for_mass(groups)
    top = -np.sort(-groups, axis=1)
    for row, n, total in zip(top, k, groups.sum(axis=1)):
        if total == 0:
            assert n == 0
            continue
        assert row[:n].sum() >= 0.9 * total * (1 - 1e-9)         # n stripes suffice
        assert row[:n - 1].sum() < 0.9 * total * (1 + 1e-9)       # n - 1 do not


def test_within_group_hoyer():
    # m=2, d_l=4: group (0,0) = [1,0,0,0] -> 1; group (0,1) = [1,1,0,0] -> 2 - √2 (see Hoyer cases);
    # row 1 is zero -> NaN (undefined) for both of its groups
    W = np.array([[1.0, 0, 0, 0, 1, 1, 0, 0], [0.0] * 8])
    h = within_group_hoyer(W, 2)
    np.testing.assert_allclose(h[0], [1.0, 2.0 - SQ2])
    assert np.isnan(h[1]).all()


def test_stripe_balance_hand_cases():
    groups = np.array([[1.0, 1.0, 1.0, 1.0],   # even: Hoyer 0 -> balance 1
                       [2.0, 0.0, 0.0, 0.0],   # one stripe: Hoyer 1 -> 0
                       [1.0, 1.0, 0.0, 0.0],   # 2/√2 = √2: Hoyer (2 - √2)/1 -> balance √2 - 1
                       [0.0, 3.0, 0.0, 3.0],   # order and scale do not matter: the same as the row above
                       [0.0, 0.0, 0.0, 0.0]])  # a dead unit: undefined
    b = stripe_balance(groups)
    np.testing.assert_allclose(b[:4], [1.0, 0.0, SQ2 - 1, SQ2 - 1], atol=1e-12)
    assert np.isnan(b[4])
    # m = 1: one stripe is all a unit has -> balanced by definition
    np.testing.assert_array_equal(stripe_balance(np.array([[2.0], [0.5]])), [1.0, 1.0])


def test_eq2_prefers_even_stripes_and_sparse_groups():
    """The 4.0-vs-16.0 example: Eq. (2) charges the same ℓ1 mass 4× more on one stripe than on four,
    and the statistics say which of the two matrices Eq. (2) prefers the right way round."""
    from jlml_lib.losses import exclusive_group_lasso_l12
    # one unit, m = 4, d_l = 2; ℓ1 mass 4 either way
    even = np.array([[1.0, 0, 1, 0, 1, 0, 1, 0]])     # groups (1,1,1,1), each [1,0]: one weight per group
    one = np.array([[4.0, 0, 0, 0, 0, 0, 0, 0]])      # groups (4,0,0,0): one stripe carries it all
    assert float(exclusive_group_lasso_l12(torch.tensor(even), 4)) == pytest.approx(4.0)   # 1²·4
    assert float(exclusive_group_lasso_l12(torch.tensor(one), 4)) == pytest.approx(16.0)   # 4²
    se, so = weight_summary(np.eye(2), even, 4), weight_summary(np.eye(2), one, 4)
    assert se["wl_stripe_balance_mean"] == pytest.approx(1.0) and so["wl_stripe_balance_mean"] == pytest.approx(0.0)
    assert se["wl_within_group_hoyer_mean"] == pytest.approx(1.0)   # [1,0] in every group
    # the old across-group statistic ranks them the other way: the matrix Eq. (2) penalises more is "sparser"
    assert so["wl_group_l1_hoyer"] > se["wl_group_l1_hoyer"]


@pytest.mark.parametrize("call,match", [
    (lambda: stripe_group_norms(np.ones((2, 6)), 4), "m=4"),
    (lambda: stripe_group_norms(np.ones((2, 6)), 0), "m=0"),
    (lambda: column_norms(np.ones(5)), "2-D"),
    (lambda: column_norms(np.ones((0, 3))), "2-D"),
    (lambda: column_norms(np.array([[1.0, np.inf]])), "NaN/inf"),
    (lambda: stripes_for_mass(np.array([[1.0, -1.0]])), "non-negative"),
    (lambda: stripes_for_mass(np.ones((2, 2)), 0.0), "mass"),
    (lambda: within_group_hoyer(np.ones((2, 4)), 4), "at least 2"),
    (lambda: stripe_balance(np.array([[1.0, -1.0]])), "non-negative"),
    (lambda: stripe_balance(np.ones(3)), "units × stripes"),
    (lambda: summary(torch.nn.Linear(3, 3)), "JLML model"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# ---------------------------------------------------------------- the summary
def test_weight_summary_hand_case():
    # W_G (2 × 4): only column 0 non-zero -> norms (1,0,0,0): Hoyer 1, 3 of 4 below 1 %, max 1.
    W_G = np.array([[1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    # W_L (2 × 8), m=4, d_l=2: row 0 = [1,1|0,0|0,0|0,0] -> groups (2,0,0,0);
    #                          row 1 = [1,0|1,0|1,0|1,0] -> groups (1,1,1,1).
    W_L = np.array([[1.0, 1, 0, 0, 0, 0, 0, 0], [1.0, 0, 1, 0, 1, 0, 1, 0]])
    s = weight_summary(W_G, W_L, 4)
    assert s["wg_col_l2_hoyer"] == pytest.approx(1.0)
    assert s["wg_col_frac_below_1pct"] == pytest.approx(0.75)
    assert s["wg_col_l2_max"] == pytest.approx(1.0)
    # 8 groups (2,0,0,0,1,1,1,1): ‖·‖₁ = 6, ‖·‖₂ = √8 = 2√2, ratio 3/√2;
    # Hoyer = (2√2 - 3/√2)/(2√2 - 1) = (√2/2)/(2√2 - 1)
    assert s["wl_group_l1_hoyer"] == pytest.approx((SQ2 / 2) / (2 * SQ2 - 1))
    assert s["wl_group_l1_max"] == pytest.approx(2.0)
    # stripes for 90 %: row 0 -> 1, row 1 -> 4 (3 < 3.6): mean 2.5, half the units each
    assert s["wl_stripes_90_mean"] == pytest.approx(2.5)
    assert [s[f"wl_stripes_90_frac_{n}"] for n in range(5)] == pytest.approx([0, 0.5, 0, 0, 0.5])
    # inside groups (d_l=2): [1,1] -> 0, three zero groups -> NaN (skipped), four [1,0] -> 1: mean 4/5
    assert s["wl_within_group_hoyer_mean"] == pytest.approx(0.8)
    # across stripes: row 0 (2,0,0,0) -> balance 0, row 1 (1,1,1,1) -> 1: mean 0.5
    assert s["wl_stripe_balance_mean"] == pytest.approx(0.5)
    assert set(EQ1_KEYS) | set(EQ2_KEYS) <= set(s)
    assert all(isinstance(v, float) for v in s.values())


def test_summary_reads_the_models_own_matrices_and_m():
    model = jlml_resnet39(3, m=4)
    with torch.no_grad():
        W_G, W_L = model.global_fc_weight, model.local_fc_weight   # 512 × 512, 512 × 4·256
        W_G.zero_()
        W_G[:, 7] = 1.0           # column 7 only: norms (√512 once, 0 × 511)
        W_L.zero_()
        W_L[:, 2 * 256 + 5] = -1.0  # stripe 2 only, every unit: groups (0, 0, 1, 0) per row
    s = summary(model)
    assert s["wg_col_l2_hoyer"] == pytest.approx(1.0)
    assert s["wg_col_frac_below_1pct"] == pytest.approx(511 / 512)
    assert s["wg_col_l2_max"] == pytest.approx(math.sqrt(512))
    # 2048 groups, 512 of them 1: ratio 512/√512 = √512; Hoyer = (√2048 - √512)/(√2048 - 1) = √512/(2√512 - 1)
    r = math.sqrt(512)
    assert s["wl_group_l1_hoyer"] == pytest.approx(r / (2 * r - 1))
    assert s["wl_stripes_90_mean"] == 1.0 and s["wl_stripes_90_frac_1"] == 1.0
    assert s["wl_within_group_hoyer_mean"] == pytest.approx(1.0)
    assert s["wl_stripe_balance_mean"] == pytest.approx(0.0)   # every unit on one stripe
    # the picture arrays
    cols = sorted_column_norms(model)
    assert cols.shape == (512,) and cols[0] == pytest.approx(r) and not cols[1:].any()
    heat = unit_stripe_norms(model)
    assert heat.shape == (512, 4)
    np.testing.assert_allclose(heat, np.tile([0.0, 0.0, 1.0, 0.0], (512, 1)))
    inside = unit_stripe_hoyer(model)   # stripe 2's groups hold one weight each (1); the others are zero (NaN)
    assert inside.shape == (512, 4) and (inside[:, 2] == 1.0).all() and np.isnan(inside[:, [0, 1, 3]]).all()


# ---------------------------------------------------------------- the mechanism, in a short run
# The measured run: the synthetic smoke profile (Market-1501 copy), 60 iterations at lr 0.01 (before
# the first step at 120), 32×16 images, batches of 8, λ raised to 0.05 (global) / 0.005 (local)
# so that so short a run shows the mechanism (the paper's 5e-4 moves nothing this fast), seed 0,
# no loader workers (batches depend on (seed, iteration) only, so workers change nothing but the cost).
BEHAVIOUR = ["iterations=60", "image_height=32", "image_width=16", "batch_size=8", "seed=0", "workers=0",
             "lambda_global=0.05", "lambda_local=0.005", "evaluate=false", "progress=false"]
# Each equation is tested on the statistic it acts on (issue 18), default feature layer (bn):
#   Eq. 1, W_G column-ℓ2 Hoyer: SFL on / off measured 0.00088 / 0.00024 = ×3.7 -> asked ≥ ×2
#     (issue 11's 5 seeds at 60 iterations: ≥ ×3.1 per seed).
#   Eq. 2, W_L Hoyer inside the (unit, stripe) groups: on 0.336 vs off 0.149 -> asked on ≥ off + 0.1 (measured +0.187);
#     and the balance across a unit's stripes stays high: on 0.978 (off 0.999) -> asked ≥ 0.95.
#   Mutation that must fail (test below): the same λ on a plain group LASSO over the stripes,
#   Σᵢ Σⱼ ‖wⁱ_{l,j}‖₂, instead of Eq. 2: W_L within-group Hoyer 0.150
#     (+0.001 over off: a group LASSO shrinks each group as a whole, which leaves its Hoyer unchanged), so the
#     Eq. 2 check fails; W_G 0.00087 (×3.6: Eq. 1 untouched passes); balance 0.9989 (60 iterations barely
#     move it, so the balance check guards against units collapsing onto few stripes, not against this mutant).
# Seed 0 only was measured for issue 18 (each run costs minutes on the shared 2-core machine).
WG_RATIO, WL_GAIN, BAL_MIN = 2.0, 0.1, 0.95


def _train(tmp_path, name: str, sfl: bool) -> dict:
    from jlml_lib.engine.config import make_config
    from jlml_lib.train import run

    cfg = make_config("smoke", [*BEHAVIOUR, f"sfl={str(sfl).lower()}"])
    got = {}

    def grab(done: int, model) -> None:
        if done == cfg.iterations:
            got.update(summary(model))

    run(cfg, tmp_path / name, on_iteration=grab)
    return got


def _plain_group_lasso_over_stripes(W, m):
    """The mutation: Σᵢ Σⱼ ‖wⁱ_{l,j}‖₂ (a group LASSO: switches whole groups off) instead of Eq. 2's ‖·‖₁²."""
    return W.reshape(W.shape[0], m, W.shape[1] // m).norm(dim=2).sum()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Short runs, each trained once per test session: "on", "off" and "mutant" (SFL on, Eq. 2 replaced)."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            with pytest.MonkeyPatch.context() as mp:
                if name == "mutant":
                    import jlml_lib.losses
                    mp.setattr(jlml_lib.losses, "exclusive_group_lasso_l12", _plain_group_lasso_over_stripes)
                cache[name] = _train(tmp_path_factory.mktemp(name), name, sfl=name != "off")
        return cache[name]
    return get


def _failures(on: dict, off: dict) -> dict[str, str]:
    """Which equation's check a run fails, against the SFL-off run: {"eq1" | "eq2": why}."""
    out = {}
    if not on["wg_col_l2_hoyer"] >= WG_RATIO * off["wg_col_l2_hoyer"]:
        out["eq1"] = (f"W_G column-norm Hoyer {on['wg_col_l2_hoyer']:.5f} vs off {off['wg_col_l2_hoyer']:.5f}: "
                      f"expected ≥ ×{WG_RATIO} (Eq. 1 not switching W_G's input columns off)")
    inside, balance = on["wl_within_group_hoyer_mean"], on["wl_stripe_balance_mean"]
    if not inside >= off["wl_within_group_hoyer_mean"] + WL_GAIN:
        out["eq2"] = (f"W_L within-group Hoyer {inside:.4f} vs off {off['wl_within_group_hoyer_mean']:.4f}: expected "
                      f"≥ off + {WL_GAIN} (Eq. 2 not making the (unit, stripe) groups sparse inside)")
    elif not balance >= BAL_MIN:
        out["eq2"] = (f"W_L balance across stripes {balance:.4f}: expected ≥ {BAL_MIN} "
                      "(units collapsing onto few stripes, which Eq. 2 discourages)")
    return out


@pytest.mark.slow
def test_sfl_acts_on_what_each_equation_acts_on(trained):
    from jlml_lib.engine.config import TrainConfig

    assert TrainConfig().feature_layer == "bn", "the margins above were measured for the bn feature layer"
    assert _failures(trained("on"), trained("off")) == {}


@pytest.mark.slow
def test_a_plain_group_lasso_over_stripes_fails_the_eq2_check(trained):
    # the mutant keeps Eq. 1, so only the Eq. 2 check may (and must) fail
    assert set(_failures(trained("mutant"), trained("off"))) == {"eq2"}
