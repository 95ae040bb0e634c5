"""VIPeR, GRID, ImageNet and the CUHK03+Market union on synthetic copies; the stored VIPeR
splits; structure-only copies at the real counts pass verify."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jlml_lib.data import load_dataset, open_image
from jlml_lib.data.manifests import MANIFEST_DIR, make_viper_splits, plan, viper_splits
from jlml_lib.data.synthetic import generate
from jlml_lib.data.verify import verify
from jlml_lib.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(synthetic_root) -> Path:
    # three datasets side by side in one root, as a user's data folder holds them
    return synthetic_root("viper", "grid", "imagenet", scale={"viper": 0.1, "grid": 0.1, "imagenet": 0.005})


def test_stored_viper_splits_are_the_seeded_draw():
    stored = json.loads((MANIFEST_DIR / "viper_splits.json").read_text())
    assert stored["num_persons"] == 632 and stored["splits"] == make_viper_splits(632)
    splits = viper_splits(632)
    assert len(splits) == 10
    for s in splits:
        assert len(s["train"]) == len(s["test"]) == 316
        assert sorted(s["train"] + s["test"]) == list(range(632))
    assert len({tuple(s["test"]) for s in splits}) == 10  # ten different draws


def test_viper_loader(root):
    p = plan("viper", 0.1)
    ds = load_dataset("viper", root, split=2)
    assert ds.protocol == "viper" and ds.num_splits == 10 and ds.split == 2
    assert len(ds.query) == len(ds.gallery) == p["test_ids"] == ds.num_train_pids
    assert len(ds.train) == 2 * p["train_ids"]
    assert [pid for _, pid, _ in ds.query] == [pid for _, pid, _ in ds.gallery]
    assert {c for _, _, c in ds.query} == {0} and {c for _, _, c in ds.gallery} == {1}
    # the i-th file of cam_a and of cam_b is the same person
    for (qa, pa, _), (gb, pb, _) in zip(ds.query, ds.gallery):
        assert Path(qa).name.split("_")[0] == Path(gb).name.split("_")[0]
    im = open_image(ds.query[0][0])
    assert im.size == (48, 128)
    with pytest.raises(ConfigError, match="split 10 is out of range"):
        load_dataset("viper", root, split=10)


def test_viper_unequal_cameras_is_an_error(root, tmp_path):
    import shutil

    shutil.copytree(root / "VIPeR", tmp_path / "VIPeR")
    next((tmp_path / "VIPeR" / "cam_b").iterdir()).unlink()
    with pytest.raises(DataError, match="cam_b holds"):
        load_dataset("viper", tmp_path)


def test_grid_loader_keeps_distractors_in_every_fold(root):
    p = plan("grid", 0.1)
    seen = []
    for split in range(10):
        ds = load_dataset("grid", root, split=split)
        assert ds.num_train_pids == p["train_ids"] and len(ds.train) == 2 * p["train_ids"]
        assert len(ds.query) == p["ids"] - p["train_ids"]
        assert sum(1 for _, pid, _ in ds.gallery if pid == 0) == p["distractors"]
        assert {pid for _, pid, _ in ds.gallery} - {0} == {pid for _, pid, _ in ds.query}
        # a probe and its match come from different cameras
        gcam = {pid: c for _, pid, c in ds.gallery if pid}
        assert all(gcam[pid] != c for _, pid, c in ds.query)
        seen.append(frozenset(pid for _, pid, _ in ds.query))
    assert len(set(seen)) > 1


def test_imagenet_imagefolder(root):
    from torchvision.datasets import ImageFolder

    p = plan("imagenet", 0.005)
    ds = load_dataset("imagenet", root)
    assert ds.num_train_pids == p["classes"] and len(ds.train) == p["train"]
    assert len(ds.extras["val"]) == p["val"]
    ref = ImageFolder(str(Path(ds.root) / "train"))   # torchvision's own reading
    assert [(s, c) for s, c in ref.samples] == [(r, c) for r, c, _ in ds.train]


def test_combined_union_has_disjoint_relabelled_ids(tmp_path):
    generate("cuhk03+market1501", tmp_path, scale=0.02, seed=0)
    ds = load_dataset("cuhk03+market1501", tmp_path)
    c = load_dataset("cuhk03", tmp_path)
    m = load_dataset("market1501", tmp_path)
    n_c = c.num_train_pids + len({p for _, p, _ in c.query + c.gallery})
    n_m = m.num_train_pids + len({p for _, p, _ in m.query + m.gallery} - {0, -1})
    assert ds.extras["cuhk03_ids"] == n_c and ds.extras["market1501_ids"] == n_m
    assert sorted({p for _, p, _ in ds.train}) == list(range(n_c + n_m))
    cams_c = {cam for r, _, cam in ds.train if "::" in r}
    cams_m = {cam for r, _, cam in ds.train if "::" not in r}
    assert cams_c <= set(range(10)) and cams_m <= set(range(10, 16))
    ids_c = {p for r, p, _ in ds.train if "::" in r}
    assert ids_c.isdisjoint({p for r, p, _ in ds.train if "::" not in r})
    assert ds.source == "synthetic"
    part = load_dataset("cuhk03+market1501", tmp_path, whole=False, cuhk03_images="labeled")
    assert part.num_train_pids == c.num_train_pids + m.num_train_pids


@pytest.mark.parametrize("name,count", [("viper", 1264), ("grid", 1275)])
def test_structure_only_at_real_counts_passes_verify(tmp_path, name, count):
    generate(name, tmp_path, scale=1.0, seed=0, structure_only=True)
    rep = verify(name, tmp_path)
    assert rep.ok, rep.problems
    assert sum(rep.counts.values()) == count  # Table 2's "Labelled" column
    ds = load_dataset(name, tmp_path)
    assert ds.num_train_pids == (316 if name == "viper" else 125)
