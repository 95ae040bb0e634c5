"""The set-up files agree with each other, and the console script works."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml  # installed with jupyter (jupyter_events depends on PyYAML)

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {r for r in pip_section if not r.startswith("-e")}
    assert {_name(r) for r in listed} == {_name(r) for r in wanted}
    # pins must be identical where pyproject pins
    pins = {_name(r): r for r in wanted if "==" in r}
    for r in listed:
        if _name(r) in pins:
            assert r == pins[_name(r)]
    assert "-e ." in pip_section, "environment.yml must install the package itself"


def test_console_script_lists_commands():
    out = subprocess.run([sys.executable, "-m", "jlml_lib.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("data", "train", "complexity", "tables", "workbook"):
        assert cmd in out.stdout
    bad = subprocess.run([sys.executable, "-m", "jlml_lib.cli", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_makefile_and_ci_use_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make workbook" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_torch_pins_agree_and_meet_the_floor():
    """The Makefile installs exact torch releases (TORCH_PINS); environment.yml lists the same
    ones and both satisfy pyproject.toml's floor (which the GPU machines' torch 2.11 also meets)."""
    from packaging.requirements import Requirement

    pins = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pins) == sorted(r for r in pip_section if _name(r) in ("torch", "torchvision"))
    floors = {Requirement(r).name: Requirement(r).specifier
              for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for pin in pins:
        name, version = pin.split("==")
        assert floors[name].contains(version), f"{pin} does not meet pyproject's {name}{floors[name]}"
    assert floors["torch"].contains("2.11.0") and floors["torchvision"].contains("0.26.0")
