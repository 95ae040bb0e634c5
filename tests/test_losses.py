"""Eqs. (1)-(5) against hand-computed values, gradcheck, and a loop reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jlml_lib.losses import LAMBDA, MultiLoss, UniLoss, build_loss, exclusive_group_lasso_l12, group_lasso_l21
from jlml_lib.model import JLMLOutput, jlml_resnet39


def test_group_lasso_hand_computed():
    # columns (3,4) -> 5, (0,0) -> 0, (1,-2) -> sqrt(5)   [W is out×in = 2×3]
    W = torch.tensor([[3.0, 0.0, 1.0], [4.0, 0.0, -2.0]])
    assert group_lasso_l21(W).item() == pytest.approx(5 + 0 + math.sqrt(5))


def test_group_lasso_is_over_input_columns_not_rows():
    # rows norms would give sqrt(9+1)+sqrt(16+4) = 7.63...; columns give 5 + sqrt(5)
    W = torch.tensor([[3.0, 1.0], [4.0, -2.0]])
    assert group_lasso_l21(W).item() == pytest.approx(5 + math.sqrt(5))
    assert group_lasso_l21(W.t()).item() == pytest.approx(math.sqrt(10) + math.sqrt(20))


def test_exclusive_group_lasso_hand_computed():
    # 2 outputs, m=2 stripes of d_l=2 inputs each
    W = torch.tensor([[1.0, -2.0, 0.5, 0.5],
                      [0.0, 3.0, -1.0, 0.0]])
    # row 0: (|1|+|-2|)^2 + (0.5+0.5)^2 = 9 + 1 ; row 1: 3^2 + 1^2 = 10
    assert exclusive_group_lasso_l12(W, 2).item() == pytest.approx(20.0)
    # m=1: the whole row is one group: row0 (1+2+.5+.5)^2=16, row1 (3+1)^2=16
    assert exclusive_group_lasso_l12(W, 1).item() == pytest.approx(32.0)
    # m=4: each weight its own group: sum of squares = 1+4+.25+.25+9+1
    assert exclusive_group_lasso_l12(W, 4).item() == pytest.approx(15.5)


def _l12_loop(W, m):
    d = W.shape[1] // m
    return sum(sum(abs(float(W[i, j * d + k])) for k in range(d)) ** 2 for i in range(W.shape[0]) for j in range(m))


def _l21_loop(W):
    return sum(math.sqrt(sum(float(W[i, c]) ** 2 for i in range(W.shape[0]))) for c in range(W.shape[1]))


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 5), m=st.integers(1, 4), d=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_regularisers_match_loop_reference(out, m, d, seed):
    W = torch.randn(out, m * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert exclusive_group_lasso_l12(W, m).item() == pytest.approx(_l12_loop(W, m), rel=1e-12)
    assert group_lasso_l21(W).item() == pytest.approx(_l21_loop(W), rel=1e-12)


def test_gradcheck_float64():
    W = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(group_lasso_l21, (W,))
    assert torch.autograd.gradcheck(lambda w: exclusive_group_lasso_l12(w, 3), (W,))
    assert torch.autograd.gradcheck(lambda w: exclusive_group_lasso_l12(w, 2), (W,))


def test_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        exclusive_group_lasso_l12(torch.ones(2, 5), 4)
    with pytest.raises(ValueError, match="2-D"):
        group_lasso_l21(torch.ones(2, 3, 4))


def test_multiloss_is_eq5():
    torch.manual_seed(0)
    model = jlml_resnet39(5).eval()
    x, y = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 2, 4])
    out = model(x)
    terms = MultiLoss()(out, y, model.global_fc_weight, model.local_fc_weight)
    ce = torch.nn.functional.cross_entropy
    g = ce(out.global_logits, y) + LAMBDA * group_lasso_l21(model.global_fc_weight)
    loc = ce(out.local_logits, y) + LAMBDA * exclusive_group_lasso_l12(model.local_fc_weight, 4)
    torch.testing.assert_close(terms.total, g + loc)
    assert LAMBDA == 5e-4  # §2.2: λ_local = λ_global = 5×10⁻⁴
    nosfl = MultiLoss(sfl=False)(out, y, model.global_fc_weight, model.local_fc_weight)
    torch.testing.assert_close(nosfl.total, ce(out.global_logits, y) + ce(out.local_logits, y))
    assert nosfl.global_reg.item() == 0 and nosfl.local_reg.item() == 0


def test_cross_entropy_is_eq4_mean_negative_log_softmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = 1 / (1 + math.e)
    out = JLMLOutput(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 2), logits, logits, None)
    terms = MultiLoss(sfl=False)(out, y, torch.zeros(1, 1), torch.zeros(1, 4))
    expected = -(math.log(p0) + math.log(p1)) / 2
    assert terms.global_ce.item() == pytest.approx(expected, rel=1e-6)
    assert terms.total.item() == pytest.approx(2 * expected, rel=1e-6)


def test_uniloss_and_head_mismatch():
    model = jlml_resnet39(3, head="uni").eval()
    x, y = torch.randn(2, 3, 64, 32), torch.tensor([0, 2])
    out = model(x)
    terms = UniLoss()(out, y, model.global_fc_weight, model.local_fc_weight)
    expected = torch.nn.functional.cross_entropy(out.joint_logits, y) + terms.global_reg + terms.local_reg
    torch.testing.assert_close(terms.total, expected)
    assert isinstance(build_loss("uni"), UniLoss) and type(build_loss("multi")) is MultiLoss
    with pytest.raises(ValueError, match="head='multi'"):
        MultiLoss()(out, y, model.global_fc_weight, model.local_fc_weight)
