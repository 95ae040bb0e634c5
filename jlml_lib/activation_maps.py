"""Where each branch looks: activation maps of the global branch and of each local stripe stream (§2.1).

JLML's global branch sees the whole image; each of the m = 4 local streams sees one horizontal
stripe of the conv1 map only (Table 1, "SL-4"). The map of a branch is the last conv stage's
output (``conv5_x``) summed over channels of the squared activations -- the usual "activation map"
of re-id toolkits (torchreid's ``visualize_actmap``) -- divided by its maximum per image and resized to
the part of the image the branch sees: the whole image for the global branch, stripe j's rows for
local stream j (zero elsewhere: a stream cannot look outside its stripe).

The maps come from forward hooks on ``model.global_stages`` and ``model.local_stages`` during the
model's own ``features`` call, so they are the activations the re-id feature is pooled from.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jlml_lib.errors import ConfigError

__all__ = ["map_names", "stripe_rows", "activation_maps", "plot_activation_maps"]


def map_names(m: int) -> list[str]:
    """``["global", "stripe 1", ..., "stripe m"]`` (stripe 1 at the top)."""
    return ["global"] + [f"stripe {j + 1}" for j in range(m)]


def stripe_rows(height: int, m: int) -> list[tuple[int, int]]:
    """Image rows ``[start, stop)`` of each stripe: conv1 (3×3, stride 2, padding 1) gives
    ``ceil(H/2)`` rows, padded at the bottom to a multiple of m (``JLML.stripes``), cut into m."""
    h1 = (height + 1) // 2
    per = (h1 + (-h1) % m) // m  # conv1 rows per stripe
    return [(min(height, 2 * j * per), min(height, 2 * (j + 1) * per)) for j in range(m)]


def _scaled(a: torch.Tensor) -> torch.Tensor:
    """Each map (N × h × w, >= 0) divided by its maximum: in [0, 1], zero where nothing fires. Not
    min-max: at small inputs a stripe's conv5 map is 1×1, and min-max would erase it."""
    return a / a.flatten(1).max(1).values[:, None, None].clamp_min(1e-12)


@torch.no_grad()
def activation_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Maps ``N × (1 + m) × H × W`` in [0, 1] of preprocessed ``images`` (N×3×H×W): channel 0 the
    global branch, channel j the local stream of stripe j (zero outside its stripe, :func:`stripe_rows`)."""
    for name in ("global_stages", "local_stages", "cfg"):
        if not hasattr(model, name):
            raise ConfigError(f"activation_maps: {type(model).__name__} has no {name}; pass a JLML model")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"activation_maps: images must be N×3×H×W, got {tuple(images.shape)}")
    m, (n, _, height, width) = model.cfg.m, images.shape
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.global_stages.register_forward_hook(lambda mod, i, o: seen.__setitem__("global", o)),
             model.local_stages.register_forward_hook(lambda mod, i, o: seen.__setitem__("local", o))]
    was_training = model.training
    try:
        model.eval()
        model.features(images, "joint")
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = torch.zeros(n, 1 + m, height, width)
    g = _scaled(seen["global"].float().pow(2).sum(1))
    out[:, 0] = F.interpolate(g[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0].cpu()
    loc = seen["local"].float()
    loc = loc.reshape(n, m, -1, *loc.shape[2:])  # grouped streams: channel group j is stripe j; shared: batch
    for j, (r0, r1) in enumerate(stripe_rows(height, m)):
        if r1 > r0:
            a = _scaled(loc[:, j].pow(2).sum(1))
            out[:, 1 + j, r0:r1] = F.interpolate(a[:, None], size=(r1 - r0, width), mode="bilinear",
                                                 align_corners=False)[:, 0].cpu()
    return out


def _display(x: torch.Tensor) -> np.ndarray:
    """A preprocessed image back to H×W×3 in [0, 1] (undo the ImageNet normalisation)."""
    from jlml_lib.data.images import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_activation_maps(model: Any, images: Any, *, titles: Sequence[str] | None = None, alpha: float = 0.5,
                         path: Any = None):
    """One row per image: the image, then the global map and each stripe's map overlaid on it.

    ``model``: a :class:`jlml_lib.inference.TrainedModel`, run folder or checkpoint; ``images``:
    whatever :func:`jlml_lib.inference.image_features` takes (paths, PIL images, arrays, tensors).
    """
    import matplotlib.pyplot as plt

    from jlml_lib.inference import TrainedModel, _as_items, _Images, load_model
    from jlml_lib.results.plots import _finish

    tm = model if isinstance(model, TrainedModel) else load_model(model)
    items = _as_items(images)
    ds = _Images(items, tm.preprocess, tm.image_size)
    x = torch.stack([ds[i][0] for i in range(len(ds))]).to(tm.device)
    maps = activation_maps(tm.model, x)
    names = map_names(tm.model.cfg.m)
    rows, cols = len(items), 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 2.4 * rows), squeeze=False)
    for r in range(rows):
        img = _display(x[r])
        axes[r, 0].imshow(img)
        axes[r, 0].set_title(titles[r] if titles else "image", fontsize=8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(img)
            axes[r, c].imshow(maps[r, c - 1].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return _finish(fig, path)
