"""Re-id features of a trained model over a data loader (paper §2.3: the 1,024-D joint feature)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.model import FEATURE_KINDS

KINDS = FEATURE_KINDS  # re-exported: the model owns the list

__all__ = ["KINDS", "EVAL_BATCH", "eval_batch", "extract_features"]

#: images per evaluation batch by device type. The CPU's is measured: oneDNN embeds 224×224
#: images about twice as fast in batches of 16 as of 128, whose activations leave the cache
#: (``benchmarks/feature_speed.py``, benchmarks/NOTES.md "Feature extraction"). CUDA keeps the
#: earlier default of 128 (no GPU has measured it).
EVAL_BATCH: dict[str, int] = {"cpu": 16, "cuda": 128}


def eval_batch(requested: int | None, device: Any) -> int:
    """Images per evaluation batch: ``requested``, or (``0``/``None``) :data:`EVAL_BATCH` for
    ``device``'s type (the CPU's for any other type)."""
    return requested or EVAL_BATCH.get(torch.device(device).type, EVAL_BATCH["cpu"])


def _convs_nchw(model: torch.nn.Module) -> bool:
    """Whether the model's 4-D weights are in the default (NCHW) layout, i.e. not channels_last."""
    return any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


def extract_features(
    model: torch.nn.Module,
    loader: Iterable[Any],
    device: Any = "cpu",
    kind: str = "joint",
    flip: bool = False,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``model.features(x, kind)`` for every batch of ``loader``, in loader order.

    ``loader`` yields ``(images, pids, camids)`` (e.g. ``jlml_lib.data.build_loader(items,
    train=False, ...)``, which keeps the item order). Runs in eval mode under ``torch.no_grad``
    and restores the model's previous mode. ``flip=True`` averages the features of the image
    and its horizontal mirror; off by default because the paper does not use it. The images and
    the model's weights go through in channels_last (an NCHW model is converted back afterwards):
    the same features up to float rounding, faster (``benchmarks/feature_speed.py``).

    Returns ``(feats, pids, camids)``: a float32 CPU tensor ``N × D`` and two int64 arrays.
    """
    if kind not in KINDS:
        raise ConfigError(f"extract_features: kind must be one of {KINDS}, got {kind!r}")
    if not hasattr(model, "features"):
        raise ConfigError(
            f"extract_features: {type(model).__name__} has no .features(x, kind) method; pass a JLML model "
            "(jlml_lib.model.jlml_resnet39) or a wrapper that provides it"
        )
    dev = torch.device(device)
    was_training = model.training
    was_nchw = _convs_nchw(model)
    model.eval()
    if was_nchw:  # channels_last: 1.15-1.4x faster embedding on CPU (NOTES); restored below
        model.to(memory_format=torch.channels_last)
    feats: list[torch.Tensor] = []
    pids: list[np.ndarray] = []
    cams: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for batch in loader:
                try:
                    x, pid, cam = batch[0], batch[1], batch[2]
                except (TypeError, IndexError, KeyError):
                    raise DataError(
                        "extract_features: each batch must be (images, pids, camids), as "
                        "jlml_lib.data.build_loader yields"
                    ) from None
                x = x.to(dev, non_blocking=True)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                f = model.features(x, kind)
                if flip:
                    f = (f + model.features(torch.flip(x, dims=[3]), kind)) / 2
                feats.append(f.detach().float().cpu())
                pids.append(np.asarray(torch.as_tensor(pid).cpu(), dtype=np.int64).reshape(-1))
                cams.append(np.asarray(torch.as_tensor(cam).cpu(), dtype=np.int64).reshape(-1))
    finally:
        model.train(was_training)
        if was_nchw:
            model.to(memory_format=torch.contiguous_format)
    if not feats:
        raise DataError("extract_features: the loader yielded no batches (empty query or gallery list?)")
    out = torch.cat(feats)
    if not bool(torch.isfinite(out).all()):
        raise DataError(
            "extract_features: the model produced NaN/inf features; the checkpoint is probably diverged or corrupt"
        )
    return out, np.concatenate(pids), np.concatenate(cams)
