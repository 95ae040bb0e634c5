"""JLML-ResNet39: the two-branch local/global re-id CNN of Table 1 (Li, Zhu, Gong, IJCAI 2017).

Layout (input 224×224; sizes are H×W; every conv is followed by BatchNorm and, as Table 1's
caption says, a ReLU that the table omits):

    conv1        3×3, 32, stride 2                          -> 112×112   (shared, §2.2 principle I)
    global:  3×3 max-pool s2 -> conv2_x..conv5_x (3 bottlenecks each,
             widths [32,32,64] [64,64,128] [128,128,256] [256,256,512])
             -> 56×56, 28×28, 14×14, 7×7 -> average pool -> fc 512        (W_G of Eq. 1)
    local:   the conv1 map cut into m=4 horizontal stripes (28×112 each), one stream per stripe
             with half the widths ([16,16,32] ... [128,128,256])
             -> 28×56, 14×28, 7×14, 4×7 -> average pool -> concat m·256 -> fc 512 (W_L of Eq. 2)
    one ID classifier per branch (MultiLoss, Eq. 5), or one on the joint feature (UniLoss).

The re-id representation (§2.3) is ``joint`` = concat(global 512-d, local 512-d) = 1,024-d.

Choices where Table 1 is ambiguous (each is tested in tests/test_model.py):

* "SL-4, 2×2 MP, S-1": the stripe (28×112) must become 28×56 (Table 1's conv2_x L size). We read
  it as a 2×2 max-pool with stride 1 over height and 2 over width, with one row of zero padding
  at the bottom so the height is kept. The input is post-ReLU (>= 0), so a zero row can never win
  the max over a real activation: it is the same as MATLAB/Caffe-style "same" pooling.
* Downsampling: conv3_x..conv5_x halve the resolution in their first block. By default the
  stride sits on the block's first 1×1 conv, as in the Caffe ResNet-50 (He et al. 2016) that the
  paper customised in Caffe; the projection shortcut is a strided 1×1 conv. ``stride_on="3x3"``
  moves it to the 3×3 conv (torchvision's "ResNet v1.5"). Output sizes are identical; FLOPs
  differ (1.58 vs 1.67 GFLOPs at 224×224), and the Caffe placement is the closer to Table 13's
  1.54×10^9 — see `jlml_lib.complexity`.
* The feature layers ("fc, [1×1, 512]") are Linear -> BatchNorm1d -> ReLU, i.e. a 1×1 conv with
  its BN and ReLU like every other conv of the table; the ID classifiers are plain Linear layers.
* The m local streams have separate weights (the paper: "m streams of an identical structure").
  They run as ONE grouped convolution (groups=m) over the stripes stacked along channels, which
  computes exactly what m separate streams compute (tested) and is much faster than a Python loop.
  ``share_local=True`` shares one stream's weights across stripes instead (batched).
* Inputs whose conv1 map height is not a multiple of m are zero-padded at the bottom to the next
  multiple (never the case at 224×224); all pooling before the fc layers is adaptive, so any input
  size works (small images for quick CPU runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["JLMLConfig", "JLMLOutput", "JLML", "Bottleneck", "jlml_resnet39"]

# Table 1: (bottleneck widths [1×1, 3×3, 1×1 out], stride of the stage's first block)
GLOBAL_STAGES: tuple[tuple[tuple[int, int, int], int], ...] = (
    ((32, 32, 64), 1),      # conv2_x, 56×56
    ((64, 64, 128), 2),     # conv3_x, 28×28
    ((128, 128, 256), 2),   # conv4_x, 14×14
    ((256, 256, 512), 2),   # conv5_x, 7×7
)
LOCAL_STAGES: tuple[tuple[tuple[int, int, int], int], ...] = (
    ((16, 16, 32), 1),      # conv2_x, 28×56 per stripe
    ((32, 32, 64), 2),      # conv3_x, 14×28
    ((64, 64, 128), 2),     # conv4_x, 7×14
    ((128, 128, 256), 2),   # conv5_x, 4×7
)


#: classifier heads: "multi" = one per branch (MultiLoss, Eq. 5); "uni" = one on the joint feature (Table 10)
HEADS = ("multi", "uni")
#: re-id representations (§2.3, Table 9): the 1,024-d joint feature, or one branch's 512-d feature
FEATURE_KINDS = ("joint", "global", "local")
#: the JLMLConfig fields a training config sets (everything else is Table 1)
ARCH_KEYS = ("m", "share_local", "shared_conv1", "head", "stride_on", "feature_layer")


@dataclass
class JLMLConfig:
    """Every architectural setting of JLML-ResNet39; defaults are Table 1."""

    num_classes: int
    m: int = 4                       # number of horizontal stripes / local streams
    share_local: bool = False        # one set of weights for all m streams (not the paper's)
    shared_conv1: bool = True        # Table 11: "with shared feature"
    head: str = "multi"              # "multi": one classifier per branch (Eq. 5); "uni": Table 10
    stride_on: str = "1x1"           # where a downsampling block's stride sits: "1x1" (Caffe) or "3x3"
    feature_layer: str = "bn"        # "bn": Linear→BN→ReLU; "plain": Linear(+bias)→ReLU (see feature_layer)
    conv1_width: int = 32
    blocks_per_stage: int = 3
    feat_dim: int = 512
    global_stages: tuple = field(default=GLOBAL_STAGES)
    local_stages: tuple = field(default=LOCAL_STAGES)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be 'multi' (MultiLoss) or 'uni' (UniLoss), not {self.head!r}")
        if self.stride_on not in ("1x1", "3x3"):
            raise ValueError(f"stride_on must be '1x1' (Caffe ResNet) or '3x3' (ResNet v1.5), not {self.stride_on!r}")
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"feature_layer must be one of {FEATURE_LAYERS}, not {self.feature_layer!r}")
        if self.m < 1 or self.num_classes < 1:
            raise ValueError(f"m and num_classes must be >= 1 (got m={self.m}, num_classes={self.num_classes})")


class JLMLOutput(NamedTuple):
    """What ``JLML.forward`` returns (a NamedTuple so DDP and torch.compile can walk it)."""

    global_feat: Tensor                 # N×512, input of the global classifier
    local_feat: Tensor                  # N×512, input of the local classifier
    joint: Tensor                       # N×1024, the re-id representation of §2.3
    global_logits: Optional[Tensor]     # N×classes (MultiLoss)
    local_logits: Optional[Tensor]      # N×classes (MultiLoss)
    joint_logits: Optional[Tensor]      # N×classes (UniLoss only)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """ResNet bottleneck [1×1, w1; 3×3, w2; 1×1, w3] (He et al. 2016).

    The stride sits on the first 1×1 (``stride_on="1x1"``, Caffe) or on the 3×3 (``"3x3"``).

    ``groups=g`` runs g independent streams at once: every channel count is multiplied by g and
    every conv (shortcut included) is grouped, so stream j only ever sees channels of stream j.
    """

    def __init__(self, cin: int, widths: tuple[int, int, int], stride: int = 1, groups: int = 1,
                 stride_on: str = "1x1") -> None:
        super().__init__()
        w1, w2, w3 = (w * groups for w in widths)
        cin = cin * groups
        s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = nn.Conv2d(cin, w1, 1, stride=s1, bias=False, groups=groups)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = nn.Conv2d(w1, w2, 3, stride=s3, padding=1, bias=False, groups=groups)
        self.bn2 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, w3, 1, bias=False, groups=groups)
        self.bn3 = nn.BatchNorm2d(w3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or cin != w3:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, w3, 1, stride=stride, bias=False, groups=groups), nn.BatchNorm2d(w3)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stages(cin: int, stages: tuple, blocks: int, groups: int = 1, stride_on: str = "1x1") -> nn.Sequential:
    """conv2_x..conv5_x: ``blocks`` bottlenecks per stage, the first one carrying the stride."""
    layers: list[nn.Module] = []
    for widths, stride in stages:
        stage = [Bottleneck(cin, widths, stride, groups, stride_on)]
        stage += [Bottleneck(widths[2], widths, 1, groups) for _ in range(blocks - 1)]
        layers.append(nn.Sequential(*stage))
        cin = widths[2]
    return nn.Sequential(*layers)


FEATURE_LAYERS = ("bn", "plain")


def feature_layer(cin: int, dim: int, kind: str = "bn") -> nn.Sequential:
    """Table 1's "fc [1×1, 512]"; ``weight`` of its first module is the W of Eqs. 1–2.

    ``"bn"``: Linear (no bias) + BN + ReLU, as every conv of the table. BN makes each output unit
    invariant to the scale of its weight row, so the penalties of Eqs. 1–2 can be lowered by
    shrinking W without changing any output (issue 11). ``"plain"``: Linear (with bias) + ReLU,
    where W's scale is not normalised away. The paper is silent on BN here.
    """
    if kind == "bn":
        return nn.Sequential(nn.Linear(cin, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
    if kind == "plain":
        return nn.Sequential(nn.Linear(cin, dim, bias=True), nn.ReLU(inplace=True))
    raise ValueError(f"feature_layer must be one of {FEATURE_LAYERS}, not {kind!r}")


class StripePool(nn.Module):
    """Table 1's local "2×2 MP, S-1": 2×2 max-pool, stride 1 over H and 2 over W, height kept.

    One zero row is added at the bottom; inputs are post-ReLU (>= 0) so it never wins the max
    over a real activation.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.pad(x, (0, 0, 0, 1)), kernel_size=2, stride=(1, 2))


class JLML(nn.Module):
    """JLML-ResNet39 (Table 1). Build it with :func:`jlml_resnet39`."""

    def __init__(self, cfg: JLMLConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, c1 = cfg.m, cfg.conv1_width
        self.conv1 = conv_bn_relu(3, c1, 3, stride=2)
        # Table 11 "without shared feature": the local branch gets its own first conv.
        self.local_conv1 = None if cfg.shared_conv1 else conv_bn_relu(3, c1, 3, stride=2)

        self.global_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.global_stages = make_stages(c1, cfg.global_stages, cfg.blocks_per_stage, stride_on=cfg.stride_on)
        self.global_fc = feature_layer(cfg.global_stages[-1][0][2], cfg.feat_dim, cfg.feature_layer)

        self.stripe_pool = StripePool()
        groups = 1 if cfg.share_local else m
        self.local_stages = make_stages(c1, cfg.local_stages, cfg.blocks_per_stage, groups=groups,
                                        stride_on=cfg.stride_on)
        self.local_fc = feature_layer(m * cfg.local_stages[-1][0][2], cfg.feat_dim, cfg.feature_layer)

        self.global_classifier: Optional[nn.Linear] = None
        self.local_classifier: Optional[nn.Linear] = None
        self.joint_classifier: Optional[nn.Linear] = None
        self.reset_classifiers(cfg.num_classes)
        self._init_weights()

    # -- construction -------------------------------------------------------------------------
    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def reset_classifiers(self, num_classes: int) -> None:
        """Fresh ID classifiers (fine-tuning on a new identity set, §3 Implementation)."""
        d = self.cfg.feat_dim
        self.cfg.num_classes = num_classes
        if self.cfg.head == "multi":
            self.global_classifier = nn.Linear(d, num_classes)
            self.local_classifier = nn.Linear(d, num_classes)
            self.joint_classifier = None
        else:
            self.global_classifier = self.local_classifier = None
            self.joint_classifier = nn.Linear(2 * d, num_classes)
        for mod in (self.global_classifier, self.local_classifier, self.joint_classifier):
            if mod is not None:
                mod.to(device=self.conv1[0].weight.device)
                nn.init.normal_(mod.weight, std=0.01)
                nn.init.zeros_(mod.bias)

    def classifier_parameters(self) -> list[nn.Parameter]:
        return [p for mod in (self.global_classifier, self.local_classifier, self.joint_classifier)
                if mod is not None for p in mod.parameters()]

    # -- forward ------------------------------------------------------------------------------
    def stripes(self, x: Tensor) -> Tensor:
        """Cut the conv1 map into m horizontal stripes stacked along channels (N, m·C, H/m, W)."""
        m = self.cfg.m
        pad = (-x.shape[2]) % m
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        n, c, h, w = x.shape
        # (N, C, m, H/m, W) -> (N, m, C, H/m, W): stripe j becomes channel group j (top to bottom).
        return x.view(n, c, m, h // m, w).transpose(1, 2).reshape(n, m * c, h // m, w)

    def global_branch(self, x: Tensor) -> Tensor:
        x = self.global_stages(self.global_pool(x))
        return self.global_fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def local_branch(self, x: Tensor) -> Tensor:
        n, m = x.shape[0], self.cfg.m
        s = self.stripe_pool(self.stripes(x))
        if self.cfg.share_local:
            # stripes into the batch dimension, one set of weights for all of them
            s = s.view(n * m, -1, *s.shape[2:])
        s = torch.flatten(F.adaptive_avg_pool2d(self.local_stages(s), 1), 1)
        # CA-4: stream j's 256-d vector occupies input columns [j·256, (j+1)·256) of W_L
        return self.local_fc(s.reshape(n, -1))

    def forward(self, x: Tensor) -> JLMLOutput:
        g_in = self.conv1(x)
        l_in = g_in if self.local_conv1 is None else self.local_conv1(x)
        g, l = self.global_branch(g_in), self.local_branch(l_in)
        joint = torch.cat([g, l], dim=1)
        if self.cfg.head == "multi":
            return JLMLOutput(g, l, joint, self.global_classifier(g), self.local_classifier(l), None)
        return JLMLOutput(g, l, joint, None, None, self.joint_classifier(joint))

    @torch.no_grad()
    def features(self, x: Tensor, kind: str = "joint") -> Tensor:
        """Re-id representation (§2.3): ``joint`` (1,024-d), or ``global`` / ``local`` (Table 9)."""
        if kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, not {kind!r}")
        g_in = self.conv1(x)
        if kind == "global":
            return self.global_branch(g_in)
        l_in = g_in if self.local_conv1 is None else self.local_conv1(x)
        if kind == "local":
            return self.local_branch(l_in)
        return torch.cat([self.global_branch(g_in), self.local_branch(l_in)], dim=1)

    # -- the weights the regularisers of Eqs. (1)-(2) act on ------------------------------------
    @property
    def global_fc_weight(self) -> Tensor:
        """W_G of Eq. (1), stored (out=512) × (in=512) as nn.Linear does."""
        return self.global_fc[0].weight

    @property
    def local_fc_weight(self) -> Tensor:
        """W_L of Eq. (2), (out=512) × (in=m·256); columns grouped by stripe."""
        return self.local_fc[0].weight


def jlml_resnet39(
    num_classes: int,
    *,
    m: int = 4,
    share_local: bool = False,
    shared_conv1: bool = True,
    head: str = "multi",
    stride_on: str = "1x1",
    feature_layer: str = "bn",
) -> JLML:
    """JLML-ResNet39 of Table 1 with ``num_classes`` training identities per ID classifier.

    ``shared_conv1=False`` gives Table 11's "without shared feature" variant; ``head="uni"`` the
    UniLoss design of Table 10 (one classifier on the joint feature); ``feature_layer="plain"``
    drops the BN of the two feature layers (see :func:`feature_layer`).
    """
    return JLML(JLMLConfig(num_classes=num_classes, m=m, share_local=share_local,
                           shared_conv1=shared_conv1, head=head, stride_on=stride_on,
                           feature_layer=feature_layer))
