"""``jlml export MODEL --format onnx --out model.onnx``: the trained model as an ONNX graph.

The exported graph maps a batch of preprocessed images ``images`` (``N×3×H×W`` float32, the
run's image size, ImageNet-normalised: :attr:`jlml_lib.inference.TrainedModel.preprocess`) to
``features``, the test feature the run evaluates (``N×1,024`` joint feature of §2.3; L2-normalised
when the run set ``eval_normalize``). The batch dimension is dynamic; the image size is fixed
to the run's. Opset :data:`OPSET`; exported with PyTorch's TorchScript-based exporter, which
needs no package beyond ``onnx``. Flip averaging (``eval_flip``) is not part of the graph.

onnx / onnxruntime are optional (``pip install .[export]``); :func:`onnx_features` runs an
exported file with onnxruntime on the CPU (the parity test, tests/test_export.py, compares it
with PyTorch's features).
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from jlml_lib.errors import ConfigError, DataError
from jlml_lib.inference import TrainedModel, load_model
from jlml_lib.model import FEATURE_KINDS

__all__ = ["OPSET", "FORMATS", "INPUT_NAME", "OUTPUT_NAME", "require", "export_onnx", "onnx_features", "main"]

#: ONNX opset of the exported graph (onnxruntime >= 1.14 runs it)
OPSET = 17
FORMATS = ("onnx",)
INPUT_NAME, OUTPUT_NAME = "images", "features"
INSTALL_HINT = "pip install .[export]"


def require(module: str) -> Any:
    """Import an optional export dependency, or one clear line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed; it is an optional extra: {INSTALL_HINT} "
                          "(or pip install onnx onnxruntime)") from None


class _FeatureGraph(nn.Module):
    """``forward(images) = net.features(images, kind)``: what the exporter traces."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images, self.kind)


def export_onnx(model: str | os.PathLike | TrainedModel, out: str | os.PathLike, *, kind: str = "joint",
                opset: int = OPSET) -> Path:
    """Write the model's feature graph to ``out`` (dynamic batch); returns the path."""
    require("onnx")
    if kind not in FEATURE_KINDS:
        raise ConfigError(f"kind={kind!r}: expected one of {FEATURE_KINDS}")
    tm = model if isinstance(model, TrainedModel) else load_model(model, "cpu")
    graph = _FeatureGraph(tm.net(), kind).eval().cpu()
    h, w = tm.image_size
    example = torch.zeros(2, 3, h, w)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter announces its successor; nothing to act on here
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(out), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return out


@functools.lru_cache(maxsize=4)
def _session(path: str, mtime_ns: int) -> Any:
    """One onnxruntime session per exported file (and version of it): creating one costs more
    than running a batch."""
    return require("onnxruntime").InferenceSession(path, providers=["CPUExecutionProvider"])


def onnx_features(path: str | os.PathLike, images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run an exported graph with onnxruntime on the CPU: preprocessed ``N×3×H×W`` images -> features."""
    require("onnxruntime")  # the one-line error when it is missing, before the file is looked at
    if not Path(path).is_file():
        raise DataError(f"{path}: no such ONNX file; write it with `jlml export MODEL --out {path}`")
    session = _session(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jlml export", description=f"Export a trained model's feature graph "
                                f"(dynamic batch, output '{OUTPUT_NAME}', opset {OPSET}).")
    p.add_argument("model", help="a run folder of `jlml train` or a checkpoint (.pt)")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, help="the file to write, e.g. model.onnx")
    p.add_argument("--kind", choices=FEATURE_KINDS, default="joint", help="the output feature (default joint)")
    p.add_argument("--opset", type=int, default=OPSET)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        tm = load_model(args.model, "cpu")
        out = export_onnx(tm, args.out, kind=args.kind, opset=args.opset)
    except (ConfigError, DataError) as exc:
        print(f"jlml export: {exc}", file=sys.stderr)
        return 2
    h, w = tm.image_size
    print(f"{out}: input '{INPUT_NAME}' N×3×{h}×{w} float32 (ImageNet-normalised), output '{OUTPUT_NAME}' "
          f"({args.kind}{', L2-normalised' if tm.normalize else ''}), opset {args.opset}")
    return 0
