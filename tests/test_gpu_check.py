"""benchmarks/gpu_check.py: its CPU path runs from the source tree without the notebook packages,
says what it skipped, and its pieces compute what they claim (hand-checked cases)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
BLOCKED = ("papermill", "nbformat", "ipykernel")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env(tmp: Path) -> dict[str, str]:
    """As on the GPU machines: run from the source tree (PYTHONPATH, no install needed), no
    papermill/nbformat/ipykernel (a sitecustomize makes importing them fail), and no CUDA."""
    stubs = tmp / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in BLOCKED))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), str(ROOT)]), "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}


def test_cpu_path_without_notebook_packages(tmp_path):
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["header"]["notebook_packages"] == {m: False for m in BLOCKED}  # the block was in force
    parts = rep["parts"]
    # one line per part that needs CUDA
    assert parts["tests"]["skipped"].startswith("no CUDA")
    assert parts["input"]["train"]["skipped"].startswith("no CUDA")
    assert "[tests] skipped: no CUDA" in p.stdout and "training: skipped: no CUDA" in p.stdout
    # the CPU parts ran, at tiny size
    rows = parts["throughput"]["rows"]
    assert rows and all(r["jlml_ips"] > 0 and r["resnet50_ips"] > 0 for r in rows)
    assert all(r["ratio"] == pytest.approx(r["jlml_ips"] / r["resnet50_ips"]) for r in rows)
    assert parts["input"]["loader_ips"] > 0 and parts["input"]["train_images"] >= 8
    ev = parts["evaluation"]
    assert ev["features"].startswith("random")
    if "mAP" in ev["streamed"]:  # two code paths on the same features: the same metrics
        assert ev["streamed"]["mAP"] == pytest.approx(ev["dense_mAP"], abs=1e-9)
        assert ev["streamed"]["rank1"] == ev["dense_rank1"]


def test_spent_budget_skips_every_part(gpu_check, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert gpu_check.main(["--budget", "1", "--only", "throughput", "input", "--out", str(out)]) == 0
    parts = json.loads(out.read_text())["parts"]
    assert parts["throughput"]["skipped"].startswith("budget") and parts["input"]["skipped"].startswith("budget")
    assert parts["tests"]["skipped"].startswith("not requested")
    assert parts["evaluation"]["skipped"].startswith("not requested")
    printed = capsys.readouterr().out
    assert all(f"[{part}] skipped: " in printed for part in parts)


def test_gpu_tests_are_marked_and_the_marker_registered():
    """``pytest -m gpu tests/test_gpu.py`` selects every test of the file (module-level mark),
    and the marker is declared, so --strict-markers accepts it."""
    import tomllib

    spec = importlib.util.spec_from_file_location("test_gpu_module", ROOT / "tests" / "test_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert any(m.name == "gpu" for m in mod.pytestmark)
    skip = next(m for m in mod.pytestmark if m.name == "skipif")
    assert skip.args[0] == (not __import__("torch").cuda.is_available())
    tests = {n for n in dir(mod) if n.startswith("test_")}
    assert {"test_amp_training_tracks_fp32", "test_channels_last_equals_nchw",
            "test_nccl_syncbn_ddp_step_matches_plain_model", "test_torchrun_trains_and_resumes_on_cuda",
            "test_cuda_checkpoint_loads_on_cpu"} <= tests
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("gpu:") for m in markers)


def test_verdict(gpu_check):
    assert gpu_check.verdict(900, 5000, 1000).startswith("the GPU")          # 90% of the model step
    assert gpu_check.verdict(500, 600, 2000).startswith("the loader")        # loader barely above
    assert gpu_check.verdict(500, 3000, 2000).startswith("neither")          # both far above
    assert gpu_check.verdict(500, 600, None).startswith("the loader")        # no model figure


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                       ("NVIDIA H100 PCIe", 756.0), ("NVIDIA L40S", 362.0),
                                       ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", None)])
def test_peak_table(gpu_check, name, peak):
    assert gpu_check.peak_tflops(name, None) == peak
    assert gpu_check.peak_tflops(name, 123.0) == 123.0


def test_market_like_labels(gpu_check):
    qp, gp, qc, gc = gpu_check.market_like_labels(30, 600, ids=10, cams=6)
    assert qp.shape == qc.shape == (30,) and gp.shape == gc.shape == (600,)
    assert qp.min() >= 1 and qp.max() <= 10 and set(np.unique(qc)) <= set(range(6))
    assert (gp == 0).sum() == 100 and (gp == -1).sum() == 100 and (gp > 0).sum() == 400
