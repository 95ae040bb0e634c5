"""The GitHub workflows (.github/workflows/) are valid and call only what the Makefile defines.

Validation is offline: check-jsonschema ships the GitHub workflow schema (``--builtin-schema
vendor.github-workflows``). Every ``run:`` step must be a plain ``make TARGET`` of an existing target,
so the hosted CI and the project's own commands cannot drift apart.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jlml_lib.book import DEFAULT_OUT

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def makefile_targets(makefile: Path) -> set[str]:
    """Explicit target names of a Makefile (rules ``name: deps``; not ``VAR := x`` nor ``$(VAR):``)."""
    targets = set()
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-/ ]+?)\s*:(?![=:])", line)
        if m and not line.startswith("\t"):
            targets.update(t for t in m.group(1).split() if not t.startswith("."))
    return targets


def run_step_problems(workflow: dict, targets: set[str]) -> list[str]:
    """Each line of each ``run:`` step must be ``make T1 [T2 ...]`` with every T a Makefile target."""
    problems = []
    for job_name, job in workflow.get("jobs", {}).items():
        for i, step in enumerate(job.get("steps", [])):
            for line in str(step.get("run", "")).splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                words = line.split()
                if words[0] != "make" or len(words) < 2 or any(not re.fullmatch(r"[\w\-]+", w) for w in words[1:]):
                    problems.append(f"{job_name} step {i}: {line!r} is not a plain `make TARGET`")
                    continue
                problems += [f"{job_name} step {i}: make {w}: no such Makefile target" for w in words[1:] if w not in targets]
    return problems


def _load(path: Path) -> dict:
    wf = yaml.safe_load(path.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as the boolean true
    return wf


def _check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_there_are_workflows():
    assert {p.stem for p in WORKFLOWS} >= {"test", "workbook"}


def test_workflows_match_the_github_schema():
    done = _check_jsonschema(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  test:\n    steps:\n      - run: make test\n")  # no runs-on
    done = _check_jsonschema(bad)
    assert done.returncode != 0 and "runs-on" in done.stdout


def test_makefile_targets_are_parsed():
    targets = makefile_targets(ROOT / "Makefile")
    assert {"venv", "test", "workbook", "book", "browser-test", "clean"} <= targets
    assert not any(t.startswith("$") or "=" in t for t in targets)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_steps_call_only_makefile_targets(path):
    assert run_step_problems(_load(path), makefile_targets(ROOT / "Makefile")) == []


def test_the_target_check_catches_drift():
    wf = {"jobs": {"j": {"steps": [{"run": "make test"}, {"run": "make tset"}, {"run": "pip install x"},
                                   {"run": "make test && rm -rf /"}]}}}
    problems = run_step_problems(wf, {"test"})
    assert len(problems) == 3 and "tset" in problems[0] and "pip install" in problems[1]


def test_push_runs_the_tests_and_the_schedule_regenerates_tables_and_book():
    flows = {p.stem: _load(p) for p in WORKFLOWS}
    test = flows["test"]
    assert {"push", "pull_request"} <= set(test["on"])
    assert [s["run"] for j in test["jobs"].values() for s in j["steps"] if "run" in s] == ["make test"]
    wb = flows["workbook"]
    assert {"schedule", "workflow_dispatch"} <= set(wb["on"])
    steps = wb["jobs"]["workbook"]["steps"]
    assert [s["run"] for s in steps if "run" in s] == ["make workbook", "make book"]
    uploaded = {s["with"]["path"].rstrip("/") for s in steps if s.get("uses", "").startswith("actions/upload-artifact")}
    # the book is uploaded from where `jlml book` writes it (one owner: jlml_lib.book.DEFAULT_OUT)
    assert uploaded == {"results/tables", "results/executed", str((DEFAULT_OUT / "html").relative_to(ROOT))}
