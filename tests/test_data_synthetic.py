"""The generator: deterministic, real counts at scale 1, identity learnable from appearance."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from jlml_lib.data import load_dataset, open_image, resolve_root
from jlml_lib.data.manifests import load_manifest, plan, scaled_manifest
from jlml_lib.data.synthetic import generate
from jlml_lib.errors import ConfigError, DataError


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name,scale", [("market1501", 0.01), ("cuhk03", 0.02),
                                        ("viper", 0.05), ("grid", 0.05), ("imagenet", 0.003)])
def test_deterministic_for_a_seed(tmp_path, name, scale):
    a = generate(name, tmp_path / "a", scale=scale, seed=5)
    b = generate(name, tmp_path / "b", scale=scale, seed=5)
    c = generate(name, tmp_path / "c", scale=scale, seed=6)
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


@pytest.mark.parametrize("name,scale", [("market1501", 0.01), ("cuhk03", 0.02), ("viper", 0.02)])
def test_same_files_for_any_number_of_workers(tmp_path, name, scale):
    """Worker processes split the work at render-batch boundaries: the bytes must not change
    (CUHK03: the images are streamed into one HDF5 file in cell order)."""
    one = generate(name, tmp_path / "one", scale=scale, seed=3, workers=1)
    three = generate(name, tmp_path / "three", scale=scale, seed=3, workers=3)
    assert digest(one) == digest(three)


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_bad_workers(tmp_path, workers):
    with pytest.raises(ConfigError, match="workers"):
        generate("viper", tmp_path, scale=0.02, workers=workers)


def test_marker_beside_the_dataset(tmp_path):
    d = generate("viper", tmp_path, scale=0.05, seed=2)
    marker = json.loads((tmp_path / "JLML_SYNTHETIC.json").read_text())
    entry = marker["datasets"]["viper"]
    assert entry["folder"] == d.name == "VIPeR" and entry["scale"] == 0.05 and entry["seed"] == 2
    assert sorted(p.name for p in d.iterdir()) == ["cam_a", "cam_b"]  # nothing extra inside


@pytest.mark.parametrize("name", ["market1501", "cuhk03", "viper", "grid", "imagenet"])
def test_plan_at_scale_one_is_the_real_dataset(name):
    assert scaled_manifest(name, 1.0) == load_manifest(name)
    p, t2 = plan(name, 1.0), load_manifest(name).get("table2")
    if name == "market1501":
        assert p["train"] + p["gallery_good"] + p["junk"] + p["distractors"] == t2["detected"]
        assert p["train_ids"] + p["test_ids"] == t2["ids"]
    elif name == "cuhk03":
        assert sum(p["persons_per_pair"]) == t2["ids"] and p["test_ids"] == t2["test_ids"]
        assert (p["new_train_ids"], p["new_test_ids"]) == (767, 700)
    elif name in ("viper", "grid"):
        assert p["train_ids"] == t2["train_ids"]
    else:
        assert (p["classes"], p["train"], p["val"]) == (1000, 1281167, 50000)


@pytest.mark.parametrize("scale", [0, -1, 1.5, "big"])
def test_bad_scale(tmp_path, scale):
    with pytest.raises(ConfigError, match="scale"):
        generate("viper", tmp_path, scale=scale)


def test_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'market'"):
        generate("market", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'market'"):
        load_dataset("market", tmp_path)


def test_identity_is_learnable_by_a_plain_colour_descriptor(tmp_path):
    """Rank-1 of a hand-made descriptor (mean colour of 8 horizontal stripes, per-image
    normalised) across cameras must beat chance by far, yet stay well below 100%: the
    identity is in the pixels and the camera nuisance is real."""
    generate("market1501", tmp_path, scale=0.05, seed=0)
    ds = load_dataset("market1501", tmp_path)

    def feat(items):
        f = []
        for ref, _, _ in items:
            a = np.asarray(open_image(ref), np.float32) / 255
            s = a.reshape(8, 16, 64, 3)[:, :, 16:48].mean((1, 2))  # central stripes
            s = s / (s.mean(0, keepdims=True) + 1e-3)               # undo the colour cast
            f.append(s.ravel())
        return np.array(f)

    gal = [it for it in ds.gallery if it[1] > 0]
    q, g = feat(ds.query), feat(gal)
    qp, qc = np.array([p for _, p, _ in ds.query]), np.array([c for _, _, c in ds.query])
    gp, gc = np.array([p for _, p, _ in gal]), np.array([c for _, _, c in gal])
    d = ((q[:, None] - g[None]) ** 2).sum(-1)
    d[(qp[:, None] == gp[None]) & (qc[:, None] == gc[None])] = np.inf  # official junk rule
    rank1 = (gp[d.argmin(1)] == qp).mean()
    chance = 1 / len(set(gp))
    assert rank1 > 10 * chance and rank1 > 0.3
    assert rank1 < 0.98


def test_resolve_root(tmp_path, monkeypatch):
    monkeypatch.setenv("JLML_CACHE", str(tmp_path / "cache"))
    root, source = resolve_root("viper", None, scale=0.05, seed=1)
    assert source == "synthetic" and root.name == "VIPeR"
    stamp = (root / "cam_a").stat().st_mtime_ns
    again, _ = resolve_root("viper", None, scale=0.05, seed=1)
    assert again == root and (root / "cam_a").stat().st_mtime_ns == stamp  # reused
    assert load_dataset("viper", root).source == "synthetic"
    # a user's root that does not hold the dataset is an error, never a silent fall-back
    with pytest.raises(DataError, match="does not hold the dataset"):
        resolve_root("viper", tmp_path / "cache", scale=0.05, seed=1)
    with pytest.raises(DataError, match="does not exist"):
        resolve_root("grid", tmp_path / "missing")
    r, s = resolve_root("viper", root.parent)
    assert (r, s) == (root, "synthetic")


def test_resolve_root_of_the_union_reads_each_component(tmp_path):
    """cuhk03+market1501 from one root: each dataset's own marker decides its source, so a
    Market-1501 without a marker (a real copy) beside a generated CUHK03 is "mixed"."""
    import shutil

    both = tmp_path / "both"
    generate("cuhk03+market1501", both, scale=0.02, seed=0, structure_only=True)
    assert resolve_root("cuhk03+market1501", both) == (both, "synthetic")
    mixed = tmp_path / "mixed"
    generate("cuhk03", mixed, scale=0.02, seed=0, structure_only=True)
    shutil.copytree(both / "Market-1501-v15.09.15", mixed / "Market-1501-v15.09.15")  # no marker entry
    assert resolve_root("cuhk03+market1501", mixed) == (mixed, "mixed")
    with pytest.raises(DataError, match="does not exist"):
        resolve_root("cuhk03+market1501", tmp_path / "nothing-here")
