"""What notebooks/00_setup.ipynb reports: software, devices and which datasets are present."""
from __future__ import annotations

import os
import platform
from typing import Any, Mapping

import numpy
import torch
import torchvision

from jlml_lib import __version__
from jlml_lib.data.verify import verify
from jlml_lib.workbook.runner import DATASETS  # the datasets the workbook takes a --data-root for


def software() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__, "jlml_lib": __version__,
            "platform": platform.platform(), "cpu cores": os.cpu_count(), "torch threads": torch.get_num_threads()}


def devices() -> list[dict[str, Any]]:
    """Every device a run can use, with what the training engine will do on it."""
    rows = [{"device": "cpu", "name": platform.processor() or platform.machine(), "memory (GiB)": None,
             "bf16 autocast": True, "used for": "smoke profile, tests, notebooks' defaults"}]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        rows.append({"device": f"cuda:{i}", "name": p.name, "memory (GiB)": round(p.total_memory / 2**30, 1),
                     "bf16 autocast": torch.cuda.is_bf16_supported(),
                     "used for": "paper profile (AMP + channels_last); several GPUs via torchrun"})
    return rows


def datasets(roots: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """One row per dataset: the user's copy checked quickly against its manifest, or the synthetic
    stand-in the notebooks will use. A root that was given but does not hold the dataset is
    reported as a problem here (and is an error in the notebooks: never a silent fall-back)."""
    rows = []
    for name in DATASETS:
        root = roots.get(name)
        if not root:
            rows.append({"dataset": name, "root": "(not given)", "source": "synthetic",
                         "status": "the notebooks generate a synthetic copy in the original format"})
            continue
        report = verify(name, root, quick=True)  # never raises for a defect: it lists them
        if report.dataset_dir is None:
            status = "PROBLEM: " + "; ".join(str(p) for p in report.problems)
        elif report.ok:
            status = "complete (quick check)"
        else:
            status = f"{len(report.problems)} problem(s): " + "; ".join(str(p) for p in report.problems[:3])
        rows.append({"dataset": name, "root": report.dataset_dir or root, "source": report.source, "status": status})
    return rows
