"""The JLML training objective: Eqs. (1)–(5) of Li, Zhu, Gong (IJCAI 2017).

* Eq. (1) group LASSO on the global feature layer W_G (c_g × d_g):  sum_i ||w_g^i||_2 over the
  d_g input columns — a whole input feature is switched on or off (feature selection).
* Eq. (2) exclusive group LASSO on the local feature layer W_L (c_l × m·d_l): for each output row
  i and stripe j, the squared L1 norm of the d_l weights of stripe j — stripes compete *within*
  an output unit, so each unit keeps a few inputs from every stripe.
* Eqs. (3)–(4) softmax cross-entropy averaged over the batch, one per branch.
* Eq. (5) l_global = l + λ_global·ℓ21,  l_local = l + λ_local·ℓ12, λ = 5×10⁻⁴ each; the network
  is trained on their sum (MultiLoss). Table 10's UniLoss: one classifier on the joint feature,
  one cross-entropy.

Weights are taken exactly as ``nn.Linear`` stores them: (out_features × in_features).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jlml_lib.model import HEADS, JLMLOutput

__all__ = ["group_lasso_l21", "exclusive_group_lasso_l12", "LossTerms", "MultiLoss", "UniLoss", "build_loss"]

LAMBDA = 5e-4  # λ_global = λ_local, §2.2 after Eq. (5)


def _check_matrix(W: Tensor, name: str) -> None:
    if W.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D weight (out_features × in_features), got shape {tuple(W.shape)}")


def group_lasso_l21(W: Tensor) -> Tensor:
    """Eq. (1): ||W_G||_{2,1} = sum over input dimensions i of the L2 norm of column w^i."""
    _check_matrix(W, "group_lasso_l21")
    return torch.linalg.vector_norm(W, ord=2, dim=0).sum()


def exclusive_group_lasso_l12(W: Tensor, m: int) -> Tensor:
    """Eq. (2): ||W_L||_{1,2} = sum_i sum_j ||w^i_{l,j}||_1², W_L of shape (c_l, m·d_l).

    Input columns [j·d_l, (j+1)·d_l) belong to stripe j (the order of the local branch's CA-m).
    """
    _check_matrix(W, "exclusive_group_lasso_l12")
    if m < 1 or W.shape[1] % m:
        raise ValueError(
            f"exclusive_group_lasso_l12: in_features={W.shape[1]} is not divisible into m={m} stripes"
        )
    return W.reshape(W.shape[0], m, W.shape[1] // m).abs().sum(dim=2).square().sum()


class LossTerms(NamedTuple):
    """Every term of the objective, so logs can show what each one contributes."""

    total: Tensor
    global_ce: Tensor      # Eq. (4) on the global branch (UniLoss: the joint CE)
    local_ce: Tensor       # Eq. (4) on the local branch (UniLoss: same as global_ce)
    global_reg: Tensor     # λ_global·ℓ21 (0 when SFL is off)
    local_reg: Tensor      # λ_local·ℓ12 (0 when SFL is off)


#: the names of the objective's terms, in order (logs, curves)
LOSS_TERMS: tuple[str, ...] = LossTerms._fields


class MultiLoss(nn.Module):
    """Eq. (5): CE_global + λ_global·ℓ21(W_G) + CE_local + λ_local·ℓ12(W_L).

    ``sfl=False`` drops both regularisers (Table 12, "without selective feature learning").
    """

    def __init__(self, m: int = 4, lambda_global: float = LAMBDA, lambda_local: float = LAMBDA,
                 sfl: bool = True) -> None:
        super().__init__()
        self.m, self.lambda_global, self.lambda_local, self.sfl = m, lambda_global, lambda_local, sfl

    def regularisers(self, W_G: Tensor, W_L: Tensor) -> tuple[Tensor, Tensor]:
        if not self.sfl:
            zero = W_G.new_zeros(())
            return zero, zero
        return (self.lambda_global * group_lasso_l21(W_G),
                self.lambda_local * exclusive_group_lasso_l12(W_L, self.m))

    def forward(self, out: JLMLOutput, targets: Tensor, W_G: Tensor, W_L: Tensor) -> LossTerms:
        if out.global_logits is None or out.local_logits is None:
            raise ValueError("MultiLoss needs a model built with head='multi' (one classifier per branch)")
        g_ce = F.cross_entropy(out.global_logits.float(), targets)
        l_ce = F.cross_entropy(out.local_logits.float(), targets)
        g_reg, l_reg = self.regularisers(W_G.float(), W_L.float())
        return LossTerms(g_ce + g_reg + l_ce + l_reg, g_ce, l_ce, g_reg, l_reg)


class UniLoss(MultiLoss):
    """Table 10's UniLoss: both branches feed one classifier trained by one CE.

    The same SFL regularisers are kept (switch them off with ``sfl=False``), so the ablation
    isolates the loss design.
    """

    def forward(self, out: JLMLOutput, targets: Tensor, W_G: Tensor, W_L: Tensor) -> LossTerms:
        if out.joint_logits is None:
            raise ValueError("UniLoss needs a model built with head='uni' (one classifier on the joint feature)")
        ce = F.cross_entropy(out.joint_logits.float(), targets)
        g_reg, l_reg = self.regularisers(W_G.float(), W_L.float())
        return LossTerms(ce + g_reg + l_reg, ce, ce, g_reg, l_reg)


def build_loss(head: str = "multi", *, m: int = 4, lambda_global: float = LAMBDA,
               lambda_local: float = LAMBDA, sfl: bool = True) -> MultiLoss:
    """The loss that matches a model's ``head`` ("multi" -> MultiLoss, "uni" -> UniLoss)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, not {head!r}")
    cls = MultiLoss if head == "multi" else UniLoss
    return cls(m=m, lambda_global=lambda_global, lambda_local=lambda_local, sfl=sfl)
