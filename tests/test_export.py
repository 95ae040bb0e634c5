"""``jlml export`` (issue 20): the ONNX graph's features equal PyTorch's (≤ 1e-4 max abs on L2-normalised
features, through onnxruntime on the CPU) and give the same evaluation on a synthetic test set.

Skipped with a reason when onnx / onnxruntime are not installed (``pip install .[export]``); the
one-line message for that case is tested without them.
"""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from jlml_lib import protocols
from jlml_lib.data import load_dataset
from jlml_lib.errors import ConfigError
from jlml_lib.export import OPSET, export_onnx, main, onnx_features, require
from jlml_lib.inference import load_model
from test_inference import write_run

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnx / onnxruntime not installed: pip install .[export]")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not HAVE_ORT:
        pytest.skip("onnx / onnxruntime not installed: pip install .[export]")
    root = tmp_path_factory.mktemp("export")
    tm = load_model(write_run(root / "run"))
    return tm, export_onnx(tm, root / "model.onnx")


@needs_ort
def test_onnx_features_match_pytorch(exported):
    tm, path = exported
    import onnx

    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == OPSET
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1024
    torch.manual_seed(1)
    for n in (1, 3, 7):                    # dynamic batch: any size runs
        x = torch.randn(n, 3, 32, 16)
        ours = torch.nn.functional.normalize(tm.features(x), dim=1)
        theirs = torch.nn.functional.normalize(torch.from_numpy(onnx_features(path, x)), dim=1)
        assert theirs.shape == (n, 1024)
        assert (ours - theirs).abs().max().item() <= 1e-4


@needs_ort
def test_same_evaluation_on_a_synthetic_test_set(exported, synthetic_root):
    tm, path = exported
    ds = load_dataset("viper", synthetic_root("viper", scale=0.05), split=0)
    results = []
    for extract in (lambda x: tm.features(x), lambda x: torch.from_numpy(onnx_features(path, x))):
        sets = []
        for items in (ds.query, ds.gallery):
            x = torch.stack([tm.preprocess(img) for img in _images(items)])
            sets.append((extract(x), [p for _, p, _ in items], [c for _, _, c in items]))
        r = protocols.evaluate_features("viper", *sets)
        protocols.pop_queries(r)
        results.append(r)
    assert results[0]["cmc"] == results[1]["cmc"]
    assert results[0]["mAP"] == pytest.approx(results[1]["mAP"], abs=1e-9)


def _images(items):
    from jlml_lib.data import open_image

    return [open_image(ref) for ref, _, _ in items]


@needs_ort
def test_cli(exported, tmp_path, capsys):
    tm, _ = exported
    assert main([str(tm.checkpoint), "--out", str(tmp_path / "m.onnx")]) == 0
    assert f"opset {OPSET}" in capsys.readouterr().out and (tmp_path / "m.onnx").is_file()


def test_missing_onnxruntime_is_one_clear_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # as if not installed: import raises ImportError
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"pip install \.\[export\]") as err:
        require("onnxruntime")
    assert "\n" not in str(err.value)
    # the command says the same in one line, exit status 2
    run = write_run(tmp_path / "run")
    assert main([str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "m.onnx").exists()
