"""JLML-ResNet39 against Table 1: output sizes, widths, stream equivalence, variants."""
import copy

import pytest
import torch
from torch import nn

from jlml_lib.complexity import layer_output_sizes
from jlml_lib.model import Bottleneck, jlml_resnet39

# Table 1 of the paper, transcribed independently of the model code: (H, W) per row.
TABLE1_SIZES = {
    "conv1": (112, 112),
    "G: conv2_x": (56, 56), "L: conv2_x": (28, 56),
    "G: conv3_x": (28, 28), "L: conv3_x": (14, 28),
    "G: conv4_x": (14, 14), "L: conv4_x": (7, 14),
    "G: conv5_x": (7, 7), "L: conv5_x": (4, 7),
}
# Table 1 bottleneck widths [1×1, 3×3, 1×1] per stage.
TABLE1_GLOBAL_WIDTHS = [(32, 32, 64), (64, 64, 128), (128, 128, 256), (256, 256, 512)]
TABLE1_LOCAL_WIDTHS = [(16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128, 256)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return jlml_resnet39(10)


@pytest.mark.parametrize("stride_on", ["1x1", "3x3"])
def test_table1_output_sizes(stride_on):
    sizes = layer_output_sizes(jlml_resnet39(10, stride_on=stride_on), (224, 224))
    for layer, expected in TABLE1_SIZES.items():
        assert sizes[layer] == expected, f"{layer}: Table 1 says {expected}, model gives {sizes[layer]}"


def test_table1_widths_and_block_counts(model):
    for stages, widths, groups in ((model.global_stages, TABLE1_GLOBAL_WIDTHS, 1),
                                   (model.local_stages, TABLE1_LOCAL_WIDTHS, 4)):
        assert len(stages) == 4
        for stage, (w1, w2, w3) in zip(stages, widths):
            assert len(stage) == 3, "Table 1: ×3 bottlenecks per stage"
            for block in stage:
                # grouped local streams hold m=4 streams side by side
                assert (block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels) == \
                    (w1 * groups, w2 * groups, w3 * groups)
                assert block.conv2.kernel_size == (3, 3) and block.conv1.kernel_size == (1, 1)
                assert block.conv1.groups == groups
    assert model.conv1[0].out_channels == 32 and model.conv1[0].stride == (2, 2)
    assert model.global_fc_weight.shape == (512, 512)
    assert model.local_fc_weight.shape == (512, 4 * 256)


def test_forward_outputs(model):
    out = model.eval()(torch.randn(2, 3, 224, 224))
    assert out.global_feat.shape == (2, 512) and out.local_feat.shape == (2, 512)
    assert out.joint.shape == (2, 1024)
    assert torch.equal(out.joint, torch.cat([out.global_feat, out.local_feat], 1))
    assert out.global_logits.shape == (2, 10) and out.local_logits.shape == (2, 10)
    assert out.joint_logits is None
    for kind, dim in (("joint", 1024), ("global", 512), ("local", 512)):
        f = model.features(torch.randn(2, 3, 224, 224), kind)
        assert f.shape == (2, dim)
    x = torch.randn(3, 3, 224, 224)
    out = model(x)
    torch.testing.assert_close(model.features(x, "joint"), out.joint)
    torch.testing.assert_close(model.features(x, "global"), out.global_feat)
    torch.testing.assert_close(model.features(x, "local"), out.local_feat)
    with pytest.raises(ValueError, match="feature kind"):
        model.features(x, "both")


@pytest.mark.parametrize("size", [(64, 32), (96, 48), (100, 50), (128, 64), (161, 97)])
def test_any_input_size(size):
    m = jlml_resnet39(5).eval()
    out = m(torch.randn(2, 3, *size))
    assert out.joint.shape == (2, 1024) and torch.isfinite(out.joint).all()


def _separate_stream(model, j: int) -> nn.Sequential:
    """Stream j of the grouped local branch as a plain groups=1 network, weights copied slice by slice."""
    m = model.cfg.m
    stages = []
    cin = model.cfg.conv1_width
    for g_stage, ((w1, w2, w3), stride) in zip(model.local_stages, model.cfg.local_stages):
        blocks = []
        for i, g_block in enumerate(g_stage):
            b = Bottleneck(cin if i == 0 else w3, (w1, w2, w3), stride if i == 0 else 1, 1, model.cfg.stride_on)
            b = b.to(g_block.conv1.weight.dtype)
            for name, mod in b.named_modules():
                src = g_block.get_submodule(name) if name else None
                if isinstance(mod, nn.Conv2d):
                    n = src.out_channels // m
                    mod.weight.data.copy_(src.weight.data[j * n:(j + 1) * n])
                elif isinstance(mod, nn.BatchNorm2d):
                    n = src.num_features // m
                    for attr in ("weight", "bias", "running_mean", "running_var"):
                        getattr(mod, attr).data.copy_(getattr(src, attr).data[j * n:(j + 1) * n])
            blocks.append(b)
        stages.append(nn.Sequential(*blocks))
        cin = w3
    return nn.Sequential(*stages)


@pytest.mark.parametrize("train_mode", [False, True])
def test_grouped_streams_equal_separate_streams(train_mode):
    """The groups=m local branch computes exactly what m separate streams compute.

    float64: in float32, train-mode BN backward through 12 blocks amplifies summation-order
    noise to ~1% of the gradient, which would hide nothing but would make the check loose.
    """
    torch.manual_seed(0)
    model = jlml_resnet39(7).double()
    # non-trivial BN statistics and affine parameters, so a channel mix-up cannot hide
    for mod in model.local_stages.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.2, 0.2)
            mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
    streams = [_separate_stream(model, j) for j in range(4)]
    model.train(train_mode)
    for s in streams:
        s.train(train_mode)
    x = torch.randn(3, 32, 112, 56, dtype=torch.float64, requires_grad=True)  # a conv1 map
    x_ref = x.detach().clone().requires_grad_(True)

    pooled = model.stripe_pool(model.stripes(x))
    grouped = torch.flatten(nn.functional.adaptive_avg_pool2d(model.local_stages(pooled), 1), 1)
    # reference: cut the stripes by hand, run each through its own stream, concatenate (CA-4)
    ref = []
    for j, stripe in enumerate(x_ref.split(x_ref.shape[2] // 4, dim=2)):
        s = nn.functional.max_pool2d(nn.functional.pad(stripe, (0, 0, 0, 1)), 2, stride=(1, 2))
        ref.append(torch.flatten(nn.functional.adaptive_avg_pool2d(streams[j](s), 1), 1))
    ref = torch.cat(ref, 1)
    torch.testing.assert_close(grouped, ref, rtol=1e-12, atol=1e-12)

    w = torch.randn_like(ref)
    (grouped * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    # parameter gradients: stream j's conv weight grads equal the j-th slice of the grouped grads
    g_conv = model.local_stages[1][0].conv2
    for j in range(4):
        n = g_conv.out_channels // 4
        torch.testing.assert_close(g_conv.weight.grad[j * n:(j + 1) * n], streams[j][1][0].conv2.weight.grad,
                                   rtol=1e-10, atol=1e-10)


def test_stripes_are_horizontal_and_ordered_top_to_bottom(model):
    x = torch.arange(4 * 8, dtype=torch.float32).view(1, 1, 8, 4).repeat(1, 2, 1, 1)
    s = model.stripes(x)  # m=4 stripes of 2 rows, stacked along channels
    assert s.shape == (1, 8, 2, 4)
    for j in range(4):
        torch.testing.assert_close(s[0, 2 * j:2 * j + 2], x[0, :, 2 * j:2 * j + 2])


def test_stripe_pool_matches_table1_and_zero_row_never_wins():
    from jlml_lib.model import StripePool
    x = torch.rand(2, 3, 28, 112)  # post-ReLU: non-negative
    y = StripePool()(x)
    assert y.shape == (2, 3, 28, 56)
    # last row: max over the stripe's last row pair of columns (the zero pad row cannot win)
    torch.testing.assert_close(y[..., -1, :], x[..., -1, :].view(2, 3, 56, 2).amax(-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0:2, :].view(2, 3, 2, 56, 2).amax((-1, -3)))


def test_shared_conv1_variant():
    shared, separate = jlml_resnet39(5), jlml_resnet39(5, shared_conv1=False)
    assert shared.local_conv1 is None and separate.local_conv1 is not None
    n = lambda mdl: sum(p.numel() for p in mdl.parameters())  # noqa: E731
    assert n(separate) - n(shared) == sum(p.numel() for p in separate.local_conv1.parameters())
    x = torch.randn(2, 3, 64, 32, requires_grad=False)
    separate.eval()
    out = separate(x)
    # the global branch does not depend on the local conv1: perturbing it leaves global_feat unchanged
    with torch.no_grad():
        separate.local_conv1[0].weight.add_(1.0)
    out2 = separate(x)
    torch.testing.assert_close(out.global_feat, out2.global_feat)
    assert not torch.allclose(out.local_feat, out2.local_feat)


def test_uniloss_head_and_reset_classifiers():
    m = jlml_resnet39(6, head="uni").eval()
    out = m(torch.randn(2, 3, 64, 32))
    assert out.global_logits is None and out.joint_logits.shape == (2, 6)
    m.reset_classifiers(11)
    assert m(torch.randn(2, 3, 64, 32)).joint_logits.shape == (2, 11)
    mm = jlml_resnet39(6)
    before = copy.deepcopy(mm.global_fc.state_dict())
    mm.reset_classifiers(3)
    assert mm.global_classifier.out_features == 3 and mm.local_classifier.out_features == 3
    assert all(torch.equal(before[k], v) for k, v in mm.global_fc.state_dict().items())
    with pytest.raises(ValueError, match="head"):
        jlml_resnet39(3, head="dual")


def test_share_local_variant_shares_one_stream():
    shared = jlml_resnet39(5, share_local=True)
    separate = jlml_resnet39(5)
    assert shared.local_stages[0][0].conv1.groups == 1
    assert sum(p.numel() for p in shared.local_stages.parameters()) * 4 == \
        sum(p.numel() for p in separate.local_stages.parameters())
    out = shared.eval()(torch.randn(2, 3, 64, 32))
    assert out.local_feat.shape == (2, 512)
