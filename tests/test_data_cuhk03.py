"""CUHK03: the v7.3 file as MATLAB writes it, both protocols, labelled vs detected crops, and
the real new-protocol configs (skipped when ../shared/realdata is absent)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from jlml_lib.data import load_dataset, open_image
from jlml_lib.data.cuhk03 import read_config
from jlml_lib.data.images import parse_cuhk03_ref, read_cuhk03_cell
from jlml_lib.data.manifests import load_manifest, plan
from jlml_lib.data.synthetic import generate
from jlml_lib.errors import ConfigError, DataError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "cuhk03"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata absent")
SCALE = 0.05


@pytest.fixture(scope="module")
def root(synthetic_root) -> Path:
    return synthetic_root("cuhk03", scale=SCALE, seed=1)


def test_file_is_matlab_v73_with_the_real_nesting(root):
    path = root / "cuhk03_release" / "cuhk-03.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3" and h5py.is_hdf5(path)
    p = plan("cuhk03", SCALE)
    with h5py.File(path, "r") as f:
        assert {"labeled", "detected", "testsets", "#refs#"} <= set(f)
        assert f["labeled"].shape == (1, 5) and f["testsets"].shape == (1, 20)
        persons = [f[r].shape for r in f["labeled"][0]]
        assert persons == [(10, n) for n in p["persons_per_pair"]]  # dims reversed
        cells = [f[c] for r in f["detected"][0] for c in f[r][()].ravel()]
        empty = [c for c in cells if c.ndim != 3]
        full = [c for c in cells if c.ndim == 3]
        assert len(full) == sum(p["images"]["detected"])
        assert empty and all(c.shape == (2,) and c.attrs["MATLAB_empty"] == 1 for c in empty)
        assert all(c.dtype == np.uint8 and c.shape[0] == 3 for c in full)  # 3×W×H
        assert f[f["testsets"][0][0]].shape == (2, p["test_ids"])


def test_classic_protocol(root):
    p = plan("cuhk03", SCALE)
    total = sum(p["persons_per_pair"])
    for split in (0, 19):
        ds = load_dataset("cuhk03", root, split=split)
        assert ds.protocol == "cuhk03-classic" and ds.num_splits == 20 and ds.split == split
        test = {pid for _, pid, _ in ds.query} | {pid for _, pid, _ in ds.gallery}
        assert len(test) == p["test_ids"] and ds.num_train_pids == total - p["test_ids"]
        assert {c for _, _, c in ds.query} == {0} and {c for _, _, c in ds.gallery} == {1}
        assert len(ds.train) + len(ds.query) + len(ds.gallery) == sum(p["images"]["labeled"])
        assert set(ds.extras["query_pairs"]) <= {1, 2, 3, 4, 5}
        # view 1 = cells 1-5 -> query, view 2 = cells 6-10 -> gallery
        assert all(parse_cuhk03_ref(r)[4] < 5 for r, _, _ in ds.query)
        assert all(parse_cuhk03_ref(r)[4] >= 5 for r, _, _ in ds.gallery)
    a, b = load_dataset("cuhk03", root, split=0), load_dataset("cuhk03", root, split=1)
    assert {p for _, p, _ in a.query} != {p for _, p, _ in b.query}


def test_new_protocol(root):
    p = plan("cuhk03", SCALE)
    for kind in ("labeled", "detected"):
        ds = load_dataset("cuhk03", root, images=kind, protocol="new")
        assert ds.protocol == "cuhk03-new" and ds.num_train_pids == p["new_train_ids"]
        q = {pid for _, pid, _ in ds.query}
        assert len(q) == p["new_test_ids"] and len(ds.query) == 2 * p["new_test_ids"]
        person = lambda ref: parse_cuhk03_ref(ref)[2:4]  # noqa: E731  (pair, person)
        assert not {person(r) for r, _, _ in ds.train} & {person(r) for r, _, _ in ds.query}
        assert {pid for _, pid, _ in ds.gallery} == q
        assert len(ds.train) + len(ds.query) + len(ds.gallery) == sum(p["images"][kind])
        assert {c for _, _, c in ds.query} == {0, 1}


def test_labeled_and_detected_are_two_boxes_of_one_capture(root):
    mat = str(root / "cuhk03_release" / "cuhk-03.mat")
    lab = read_cuhk03_cell(mat, "labeled", 0, 0, 0)
    det = read_cuhk03_cell(mat, "detected", 0, 0, 0)
    assert lab.ndim == 3 and lab.shape[2] == 3 and det.shape == lab.shape
    assert not np.array_equal(lab, det)  # the detector's box is misaligned
    # same capture: colours agree far better than with another person's crop
    other = read_cuhk03_cell(mat, "labeled", 1, 1, 0)
    d_same = abs(lab.mean((0, 1)) - det.mean((0, 1))).sum()
    d_other = abs(lab.mean((0, 1)) - np.asarray(
        open_image(f"{mat}::labeled/1/1/0").resize(lab.shape[1::-1])).mean((0, 1))).sum()
    assert other is not None and d_same < d_other


def test_open_image_on_references(root):
    ds = load_dataset("cuhk03", root, images="detected")
    im = open_image(ds.train[0][0])
    assert im.mode == "RGB" and min(im.size) > 20


def test_bad_options(root):
    with pytest.raises(ConfigError, match="split 20 is out of range.*0..19"):
        load_dataset("cuhk03", root, split=20)
    with pytest.raises(ConfigError, match="labeled' or 'detected"):
        load_dataset("cuhk03", root, images="hand")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        load_dataset("cuhk03", root, protocl="new")


def test_missing_config_names_where_to_get_it(root, tmp_path):
    import shutil

    shutil.copy(root / "cuhk03_release" / "cuhk-03.mat", tmp_path / "cuhk-03.mat")
    with pytest.raises(DataError, match="cuhk03_new_protocol_config_labeled.mat.*person-re-ranking"):
        load_dataset("cuhk03", tmp_path, protocol="new")


def test_truncated_mat_is_a_clear_error(root, tmp_path):
    d = tmp_path / "cuhk03_release"
    d.mkdir()
    data = (root / "cuhk03_release" / "cuhk-03.mat").read_bytes()
    (d / "cuhk-03.mat").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cuhk-03.mat"):
        load_dataset("cuhk03", tmp_path)


# ------------------------------------------------------------------ real configs

@pytest.mark.realdata
@needs_real
@pytest.mark.parametrize("kind", ["labeled", "detected"])
def test_real_new_protocol_config(kind):
    cfg = read_config(REAL / f"cuhk03_new_protocol_config_{kind}.mat")
    spec = load_manifest("cuhk03")["mat_files"][f"cuhk03_new_protocol_config_{kind}.mat"]
    for k, want in spec["counts"].items():
        assert len(cfg[k]) == want
    labels = cfg["labels"].astype(int)
    assert len(np.unique(labels[cfg["train_idx"] - 1])) == 767
    assert len(np.unique(labels[cfg["query_idx"] - 1])) == 700
    assert not set(cfg["train_idx"]) & set(cfg["query_idx"])
    # the filelist grammar and the per-pair image counts our manifest records
    pairs = np.bincount([int(n[0]) for n in cfg["filelist"]], minlength=6)[1:]
    assert pairs.tolist() == load_manifest("cuhk03")["mat_files"]["cuhk-03.mat"][
        "cuhk03"]["images"][kind]["per_pair"]
    # labels are global person numbers: pair offsets from the persons per pair
    persons = load_manifest("cuhk03")["mat_files"]["cuhk-03.mat"]["cuhk03"]["persons_per_pair"]
    offs = np.concatenate([[0], np.cumsum(persons)[:-1]])
    for name, lab, cam in zip(cfg["filelist"][::97], labels[::97], cfg["camId"][::97]):
        pair, person, view, img = (int(x) for x in name[:-4].split("_"))
        assert lab == offs[pair - 1] + person and cam == view == (1 if img <= 5 else 2)


@pytest.mark.realdata
@needs_real
def test_real_config_drives_the_loader_on_a_matching_file(tmp_path):
    """The loader's new-protocol path on the real config: a structure-only copy at scale 1
    whose empty cells are taken from the real filelist, so every entry names a full cell."""
    import shutil

    from jlml_lib.data.synthetic import cuhk03 as writer

    cfg = read_config(REAL / "cuhk03_new_protocol_config_labeled.mat")
    present = {tuple(int(x) for x in n[:-4].split("_")) for n in cfg["filelist"]}
    persons = load_manifest("cuhk03")["mat_files"]["cuhk-03.mat"]["cuhk03"]["persons_per_pair"]
    counts = [np.zeros((n, 2), int) for n in persons]
    for pair, person, view, img in present:
        counts[pair - 1][person - 1, view - 1] += 1
    orig = writer._fill
    try:
        def fill(rng, n, images):  # labelled layout; detected has one more cell in pair 3
            c = next(c for c in counts if len(c) == n).copy()
            while c.sum() < images:
                c.ravel()[np.flatnonzero(c.ravel() < 5)[0]] += 1
            return c

        writer._fill = fill
        generate("cuhk03", tmp_path, scale=1.0, seed=0, structure_only=True)
    finally:
        writer._fill = orig
    shutil.copy(REAL / "cuhk03_new_protocol_config_labeled.mat",
                tmp_path / "cuhk03_release" / "cuhk03_new_protocol_config_labeled.mat")
    ds = load_dataset("cuhk03", tmp_path, protocol="new")
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (7368, 1400, 5328)
    assert ds.num_train_pids == 767 and len({p for _, p, _ in ds.query}) == 700
