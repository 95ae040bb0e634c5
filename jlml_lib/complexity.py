"""Model size and cost: Table 1's output sizes and Table 13's parameters and FLOPs.

Counting conventions (stated because the paper mixes them):

* **MACs** — multiply-accumulates of convolutions and linear layers, counted by
  ``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC; we halve it). BN, ReLU, pooling
  and additions are not counted, as in the usual tables.
* **FLOPs** — 2 × MACs (a multiply and an add).
* **Parameters** — every learnable tensor *except the final classifier(s)*: for JLML the two ID
  classifiers (their size depends on the dataset), for torchvision's ImageNet models the last
  1000-way Linear. Table 13's AlexNet/VGG16/ResNet50 rows match this convention.

Table 13's AlexNet, VGG16, ResNet50 and GoogLeNet "FLOPs" are multiply-accumulate counts; its
JLML value (1.54×10⁹) matches 2×MACs (we measure 1.58×10⁹ FLOPs = 0.79×10⁹ MACs). See
notebooks/02_model.ipynb for the full discussion. The paper's Tables 1 and 13 beside these
counts are :mod:`jlml_lib.results.complexity_tables`; the command line ``jlml complexity`` is
:mod:`jlml_lib.results.cli`; the bar chart is :func:`jlml_lib.results.plots.plot_table13`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from jlml_lib.model import JLML, jlml_resnet39

__all__ = ["count_parameters", "count_macs", "layer_output_sizes", "ModelCost", "measure", "torchvision_cost",
           "TABLE13_MODELS", "table13_measured", "CONVENTION", "parameters_by_part", "TraceStep", "stage_name",
           "trace_stages"]

# Table 13's reference CNNs, built from torchvision's definitions (random weights: nothing downloaded).
TABLE13_MODELS = ("alexnet", "vgg16", "resnet50", "googlenet")


def _final_classifier(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, JLML):
        return [m for m in (model.global_classifier, model.local_classifier, model.joint_classifier) if m is not None]
    for attr in ("fc", "classifier"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            return [head]
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            return [head[-1]]
    raise ValueError(f"cannot find the final classifier of {type(model).__name__}")


def count_parameters(model: nn.Module, *, exclude_classifier: bool = True) -> int:
    """Number of learnable parameters, without the final classifier(s) by default."""
    excluded = {id(p) for m in _final_classifier(model) for p in m.parameters()} if exclude_classifier else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def count_macs(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> int:
    """Multiply-accumulates of one forward pass of a single image (eval mode)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, *input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def parameters_by_part(model: JLML) -> dict[str, int]:
    """Learnable parameters of each part of JLML-ResNet39 (BN included); the ID classifiers last.

    Everything but the classifiers sums to :func:`count_parameters` (Table 13's convention).
    """
    parts = {"conv1 (shared)": [model.conv1, model.local_conv1], "global stages": [model.global_stages],
             "local stages (all streams)": [model.local_stages], "global feature layer (W_G)": [model.global_fc],
             "local feature layer (W_L)": [model.local_fc], "ID classifiers": _final_classifier(model)}
    return {name: sum(p.numel() for mod in mods if mod is not None for p in mod.parameters())
            for name, mods in parts.items()}


def layer_output_sizes(model: JLML, input_size: tuple[int, int] = (224, 224)) -> dict[str, tuple[int, int]]:
    """H×W after each row of Table 1, recorded with forward hooks.

    Local sizes are per stripe (the grouped local stages hold all m stripes side by side in the
    channel dimension, so the spatial size *is* the stripe size).
    """
    named = {"conv1": model.conv1, "G: pool1": model.global_pool, "L: pool1": model.stripe_pool}
    for i in range(len(model.global_stages)):
        named[f"G: {stage_name(i)}"] = model.global_stages[i]
        named[f"L: {stage_name(i)}"] = model.local_stages[i]
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, out, key=key: sizes.__setitem__(key, tuple(out.shape[-2:])))
             for key, mod in named.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {key: sizes[key] for key in named}



def stage_name(i: int) -> str:
    """Table 1's name of residual stage ``i`` (0-based): conv2_x, conv3_x, ..."""
    return f"conv{i + 2}_x"


class TraceStep(NamedTuple):
    """One module call of :func:`trace_stages` and the shape of what it returned."""

    layer: str                # Table 1's row (conv1, pool1, conv2_x..conv5_x, fc), or input / joint / ID
    branch: str               # "shared", "global" or "local" (results/paper/table1.csv), or "joint"
    code: str                 # the call, as it reads in JLML.forward
    shape: tuple[int, ...]    # the returned tensor's shape (local maps: all m stripes along channels)


@torch.no_grad()
def trace_stages(model: JLML, x: Tensor) -> tuple[list[TraceStep], Tensor]:
    """Push ``x`` through ``model`` one Table 1 stage at a time (d2l's ``blk(X).shape``).

    The calls are JLML.forward's own, in its order, so the returned joint feature (§2.3) must
    equal ``model.features(x)`` (tested); the steps give every stage's output shape. Runs in
    eval mode and restores the model's mode.
    """
    steps: list[TraceStep] = []

    def step(layer: str, branch: str, code: str, t: Tensor) -> Tensor:
        steps.append(TraceStep(layer, branch, code, tuple(t.shape)))
        return t

    cfg, was_training = model.cfg, model.training
    model.eval()
    try:
        step("input", "shared", "X", x)
        g = step("conv1", "shared", "model.conv1(X)", model.conv1(x))
        l_in = g if model.local_conv1 is None else step("conv1", "local", "model.local_conv1(X)",
                                                        model.local_conv1(x))
        g = step("pool1", "global", "model.global_pool(G)", model.global_pool(g))
        for i, stage in enumerate(model.global_stages):
            g = step(stage_name(i), "global", f"model.global_stages[{i}](G)", stage(g))
        g = step("fc", "global", "F.adaptive_avg_pool2d(G, 1)", F.adaptive_avg_pool2d(g, 1))
        g = step("fc", "global", "model.global_fc(G.flatten(1))", model.global_fc(torch.flatten(g, 1)))
        n, m = x.shape[0], cfg.m
        s = step("pool1", "local", f"model.stripes(L)  # SL-{m}", model.stripes(l_in))
        s = step("pool1", "local", "model.stripe_pool(L)", model.stripe_pool(s))
        if cfg.share_local:  # one stream's weights for every stripe: stripes into the batch
            s = step("pool1", "local", f"L.view({n}·{m}, ...)", s.view(n * m, -1, *s.shape[2:]))
        for i, stage in enumerate(model.local_stages):
            s = step(stage_name(i), "local", f"model.local_stages[{i}](L)", stage(s))
        s = step("fc", "local", "F.adaptive_avg_pool2d(L, 1)", F.adaptive_avg_pool2d(s, 1))
        s = step("fc", "local", f"L.reshape({n}, -1)  # CA-{m}", s.reshape(n, -1))
        s = step("fc", "local", "model.local_fc(L)", model.local_fc(s))
        joint = step("joint", "joint", "torch.cat([G, L], 1)", torch.cat([g, s], dim=1))
        for branch, head, feat in (("global", model.global_classifier, g), ("local", model.local_classifier, s),
                                   ("joint", model.joint_classifier, joint)):
            if head is not None:
                step("ID", branch, f"model.{branch}_classifier", head(feat))
    finally:
        model.train(was_training)
    return steps, joint


@dataclass
class ModelCost:
    name: str
    params: int          # without the final classifier(s)
    macs: int            # multiply-accumulates at 224×224
    depth: int           # weight layers on the longest path (conv + fc)
    streams: int

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def key(self) -> str:
        """The ``model_key`` of results/paper/table13.csv."""
        return "jlml_resnet39" if self.name == "JLML-ResNet39" else self.name


def jlml_depth(model: JLML) -> int:
    """conv1 + 3 convs per bottleneck on one branch + feature fc + ID fc (= 39 for Table 1)."""
    blocks = sum(len(stage) for stage in model.global_stages)
    return 1 + 3 * blocks + 2


def measure(model: JLML | None = None, input_size: tuple[int, int] = (224, 224)) -> ModelCost:
    """JLML-ResNet39's row of Table 13 (1,000 ImageNet classes; classifiers are not counted)."""
    model = model if model is not None else jlml_resnet39(1000)
    return ModelCost("JLML-ResNet39", count_parameters(model), count_macs(model, input_size),
                     jlml_depth(model), 1 + model.cfg.m)


# depth as the papers that introduced them count it (weight layers); streams = 1
_TORCHVISION_DEPTH = {"alexnet": 8, "vgg16": 16, "resnet50": 50, "googlenet": 22}


def torchvision_cost(name: str, input_size: tuple[int, int] = (224, 224)) -> ModelCost:
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return ModelCost(name, count_parameters(model), count_macs(model, input_size), _TORCHVISION_DEPTH[name], 1)


def table13_measured(input_size: tuple[int, int] = (224, 224)) -> list[ModelCost]:
    """Every row of Table 13, measured with the same counter."""
    return [torchvision_cost(n, input_size) for n in TABLE13_MODELS] + [measure(input_size=input_size)]


#: the counting convention, as a Table 13 record states it (``extra.convention``)
CONVENTION = ("flops = multiply-accumulates (MACs) of conv and linear layers at 224x224, counted by "
              "torch.utils.flop_counter (its 2-per-MAC count halved); flops_2mac = 2 x MACs; params "
              "exclude the final classifier(s)")
