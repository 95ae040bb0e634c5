"""Activation maps of the global branch and each stripe stream (issue 20): shapes, each stripe's map
inside its own stripe only, and a stripe stream blind to the other stripes (a fresh model)."""
from __future__ import annotations

import pytest
import torch

from jlml_lib.activation_maps import activation_maps, map_names, plot_activation_maps, stripe_rows
from jlml_lib.model import jlml_resnet39


def test_stripe_rows_by_hand():
    # 64 rows -> conv1 32 rows -> 8 per stripe -> 16 image rows each
    assert stripe_rows(64, 4) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    # 30 rows -> conv1 15, padded to 16 -> 4 per stripe -> 8 image rows; the last stripe is cut at 30
    assert stripe_rows(30, 4) == [(0, 8), (8, 16), (16, 24), (24, 30)]
    assert map_names(4) == ["global", "stripe 1", "stripe 2", "stripe 3", "stripe 4"]


@pytest.mark.parametrize("share_local", [False, True])
def test_shapes_and_each_stripe_covers_its_own_rows(share_local):
    torch.manual_seed(0)
    model = jlml_resnet39(5, share_local=share_local).eval()
    x = torch.randn(2, 3, 128, 64)
    maps = activation_maps(model, x)
    assert maps.shape == (2, 5, 128, 64) and maps.min() >= 0 and maps.max() <= 1
    assert (maps[:, 0].flatten(1).max(1).values > 0).all()      # the global map spans the image
    for j, (r0, r1) in enumerate(stripe_rows(128, 4)):
        inside = maps[:, 1 + j, r0:r1]
        outside = torch.cat([maps[:, 1 + j, :r0], maps[:, 1 + j, r1:]], dim=1)
        assert (inside.flatten(1).max(1).values > 0).all() and outside.abs().max() == 0
    assert model.training is False


def test_a_stripe_stream_does_not_see_other_stripes():
    torch.manual_seed(0)
    model = jlml_resnet39(5).eval()
    x = torch.randn(1, 3, 128, 64)   # conv5 of a stripe: 2×2 (at 64×32 it would be 1×1, a constant map)
    y = x.clone()
    # rows 0-28 feed conv1 rows 0-14 only (3×3, stride 2): stripe 1 (conv1 rows 0-15) alone sees them
    y[:, :, :29] = torch.randn(1, 3, 29, 64)
    a, b = activation_maps(model, x), activation_maps(model, y)
    assert not torch.allclose(a[:, 1], b[:, 1])            # stripe 1 looks there
    assert torch.equal(a[:, 2:], b[:, 2:])                  # stripes 2-4 never do
    assert not torch.allclose(a[:, 0], b[:, 0])            # the global branch sees the whole image


def test_overlay_figure():
    torch.manual_seed(0)
    from jlml_lib.inference import TrainedModel
    from jlml_lib.data import build_transform
    from jlml_lib.engine.config import make_config

    cfg = make_config("smoke", image_height=64, image_width=32)
    tm = TrainedModel(model=cfg.build_model(5).eval(), config=cfg, preprocess=build_transform((64, 32), False),
                      checkpoint=None, device=torch.device("cpu"))
    fig = plot_activation_maps(tm, torch.randn(3, 3, 64, 32), titles=["q", "top 1", "top 2"])
    assert len(fig.axes) == 3 * 6
