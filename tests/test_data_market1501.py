"""Market-1501: the loader on synthetic copies, the manifest against the real id/camera lists,
and the two real query crops (skipped when ../shared/realdata is absent)."""
from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from jlml_lib.data import load_dataset, open_image
from jlml_lib.data.manifests import load_manifest, plan
from jlml_lib.data.market1501 import parse_name
from jlml_lib.data.synthetic import generate
from jlml_lib.errors import DataError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "market1501"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/realdata absent")
SCALE = 0.03


@pytest.fixture(scope="module")
def root(synthetic_root) -> Path:
    return synthetic_root("market1501", scale=SCALE, seed=3)


def test_counts_follow_the_plan(root):
    ds = load_dataset("market1501", root)
    p = plan("market1501", SCALE)
    assert ds.source == "synthetic" and ds.protocol == "market1501" and ds.num_splits == 1
    assert len(ds.train) == p["train"] and ds.num_train_pids == p["train_ids"]
    assert len(ds.query) == p["query"]
    assert len(ds.gallery) == p["gallery_good"] + p["junk"] + p["distractors"]
    g = Counter(pid for _, pid, _ in ds.gallery)
    assert g[-1] == p["junk"] and g[0] == p["distractors"]
    assert len(ds.extras["gt_bbox"]) == p["gt_bbox"]


def test_repr_is_a_short_summary(root):
    ds = load_dataset("market1501", root)
    lines = repr(ds).splitlines()
    assert lines[0] == "ReidDataset 'market1501' (synthetic data)"
    assert lines[1] == "  protocol  market1501, the fixed split" and lines[2] == f"  root      {ds.root}"
    assert lines[3:6] == [f"  train     {len(ds.train):,} images, {ds.num_train_pids:,} ids",
                          f"  query     {len(ds.query):,} images", f"  gallery   {len(ds.gallery):,} images"]
    assert lines[6].startswith("  test      ") and lines[6].endswith(" 6 cameras in all")
    assert "split 3 of 20 (0-based)" in repr(dataclasses.replace(ds, split=3, num_splits=20))


def test_pids_cameras_and_relabelling(root):
    ds = load_dataset("market1501", root)
    assert sorted({p for _, p, _ in ds.train}) == list(range(ds.num_train_pids))
    assert {c for part in (ds.train, ds.query, ds.gallery) for _, _, c in part} <= set(range(6))
    q_ids = {p for _, p, _ in ds.query}
    assert q_ids == {p for _, p, _ in ds.gallery} - {0, -1}
    # official protocol preconditions: <= 1 query per id and camera, a good match elsewhere
    assert max(Counter((p, c) for _, p, c in ds.query).values()) == 1
    gal = {(p, c) for _, p, c in ds.gallery}
    for _, p, c in ds.query:
        assert any(gp == p and gc != c for gp, gc in gal)
    # train and test identities are disjoint (by original pid in the file names)
    train_names = {Path(r).name.split("_")[0] for r, _, _ in ds.train}
    assert not train_names & {f"{p:04d}" for p in q_ids}


def test_multi_query_boxes_cover_every_query(root):
    ds = load_dataset("market1501", root)
    gt = {(p, c) for _, p, c in ds.extras["gt_bbox"]}
    assert all((p, c) in gt for _, p, c in ds.query)
    assert {Path(r).name for r, *_ in ds.query} <= {Path(r).name for r, *_ in ds.extras["gt_bbox"]}


def test_images_are_64x128_rgb(root):
    ds = load_dataset("market1501", root)
    im = open_image(ds.query[0][0])
    assert im.mode == "RGB" and im.size == (64, 128)


def test_accepts_dataset_folder_and_parent(root):
    a = load_dataset("market1501", root)
    b = load_dataset("market1501", root / "Market-1501-v15.09.15")
    assert a.train == b.train and a.gallery == b.gallery


def test_copy_without_marker_is_real(root, tmp_path):
    shutil.copytree(root / "Market-1501-v15.09.15", tmp_path / "Market-1501-v15.09.15")
    assert load_dataset("market1501", tmp_path).source == "real"


def test_bad_name_is_a_clear_error(root, tmp_path):
    d = tmp_path / "Market-1501-v15.09.15"
    shutil.copytree(root / "Market-1501-v15.09.15", d)
    (d / "query" / "12_c1.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"12_c1\.jpg.*grammar"):
        load_dataset("market1501", tmp_path)


@pytest.mark.parametrize("name,pid,cam", [("0001_c1s1_001051_00.jpg", 1, 0),
                                          ("-1_c3s2_000101_04.jpg", -1, 2),
                                          ("0000_c6s4_002202_01.jpg", 0, 5)])
def test_parse_name(name, pid, cam):
    assert parse_name(name) == (pid, cam)


@pytest.mark.parametrize("name", ["0001_c7s1_001051_00.jpg", "001_c1s1_001051_00.jpg",
                                  "0001_c1s1_001051_00.png", "0001_c1_001051_00.jpg"])
def test_parse_name_rejects(name):
    with pytest.raises(DataError):
        parse_name(name)


# ------------------------------------------------------------------ real files

@pytest.mark.realdata
@needs_real
def test_real_query_crops_load(tmp_path):
    crops = sorted((REAL / "query").glob("*.jpg"))
    assert [c.name for c in crops] == ["0001_c1s1_001051_00.jpg", "0001_c6s1_009601_00.jpg"]
    assert [parse_name(c.name) for c in crops] == [(1, 0), (1, 5)]
    for c in crops:
        im = open_image(str(c))
        assert im.size == (64, 128) and im.mode == "RGB"
    # the real crops inside an otherwise synthetic copy load like any other image
    generate("market1501", tmp_path, scale=0.005, seed=0, structure_only=True)
    q = tmp_path / "Market-1501-v15.09.15" / "query"
    for c in crops:
        shutil.copy(c, q / c.name)
    ds = load_dataset("market1501", tmp_path)
    refs = [r for r, p, c in ds.query if Path(r).name in {c.name for c in crops}]
    assert len(refs) == 2
    assert all(open_image(r).size == (64, 128) for r in refs)


def _mat(name: str) -> np.ndarray:
    from scipy.io import loadmat

    m = loadmat(str(REAL / name))
    return next(v for k, v in m.items() if not k.startswith("__")).ravel().astype(int)


@pytest.mark.realdata
@needs_real
def test_manifest_counts_match_the_real_lists():
    man = load_manifest("market1501")["image_folders"]
    q, qc = _mat("queryID.mat"), _mat("queryCam.mat")
    t, tc = _mat("testID.mat"), _mat("testCam.mat")
    tr, trc = _mat("train_label.mat"), _mat("train_cam.mat")
    assert len(q) == man["query"]["count"] and len(set(q)) == man["query"]["ids"]
    assert len(t) == man["bounding_box_test"]["count"]
    assert (t == -1).sum() == man["bounding_box_test"]["pid_counts"]["-1"]
    assert (t == 0).sum() == man["bounding_box_test"]["pid_counts"]["0"]
    assert len(set(t) - {0, -1}) == man["bounding_box_test"]["ids"]
    assert set(t) - {0, -1} == set(q)
    assert len(tr) == man["bounding_box_train"]["count"]
    assert len(set(tr)) == man["bounding_box_train"]["ids"]
    assert not set(tr) & set(q)
    assert len(set(tr)) + len(set(q)) == load_manifest("market1501")["table2"]["ids"]
    for cams in (qc, tc, trc):
        assert set(cams) == set(man["query"]["cameras"])
    # the query folder's rule: at most one image per id and camera
    assert max(Counter(zip(q, qc)).values()) == 1
    # the plan at scale 1 is the real dataset
    p = plan("market1501", 1.0)
    assert (p["train"], p["query"], p["gallery_good"], p["junk"], p["distractors"]) == (
        len(tr), len(q), int(((t != 0) & (t != -1)).sum()), int((t == -1).sum()),
        int((t == 0).sum()))


@pytest.mark.realdata
@needs_real
def test_real_train_file_names_follow_the_grammar():
    lines = (REAL / "train.txt").read_text().split() + (REAL / "val.txt").read_text().split()
    names = [Path(x).name for x in lines[0::2]]
    assert len(names) == load_manifest("market1501")["image_folders"]["bounding_box_train"]["count"]
    pids = {parse_name(n)[0] for n in names}
    assert pids == set(_mat("train_label.mat").tolist())
