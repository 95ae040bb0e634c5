"""Shared fixtures: synthetic dataset copies generated once per test session, a private cache.

``synthetic_root("market1501", scale=0.05, seed=3)`` generates that copy the first time it is
asked for and returns the same folder afterwards, so test files that need the same data share
one generation. Tests that damage files work on a copy (see test_data_verify.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from jlml_lib.data.synthetic import generate


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Callable[..., Path]:
    made: dict[tuple, Path] = {}

    def make(*names: str, scale: float | dict[str, float], seed: int = 0) -> Path:
        """``names`` side by side in one root; ``scale`` one value or one per name."""
        scales = {n: float(scale[n] if isinstance(scale, dict) else scale) for n in names}
        key = (tuple(sorted(scales.items())), int(seed))
        if key not in made:
            root = tmp_path_factory.mktemp("synthetic")
            for name in names:
                generate(name, root, scale=scales[name], seed=seed)
            made[key] = root
        return made[key]

    return make


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """``$JLML_CACHE`` in the session's temporary folder: generated copies never touch ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "jlml-cache"
    monkeypatch.setenv("JLML_CACHE", str(cache))
    return cache
