"""``verify`` catches each kind of defect, names the file, and the CLI exits non-zero."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jlml_lib.data.cli import main as cli
from jlml_lib.data.synthetic import generate
from jlml_lib.data.verify import verify

M = "Market-1501-v15.09.15"


@pytest.fixture(scope="module")
def pristine(synthetic_root) -> Path:
    # never damaged: each test works on a copy (fixture ``copy``)
    return synthetic_root("market1501", "cuhk03", "grid", scale={"market1501": 0.01, "cuhk03": 0.02, "grid": 0.05})


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    return tmp_path


def kinds(rep) -> set[str]:
    return {p.kind for p in rep.problems}


def test_pristine_copies_pass_and_the_marker_is_not_flagged(pristine):
    for name in ("market1501", "cuhk03", "grid"):
        rep = verify(name, pristine)
        assert rep.ok, rep.problems
        assert rep.source == "synthetic" and rep.manifest_scale < 1
    assert (pristine / "JLML_SYNTHETIC.json").is_file()


def test_a_parent_folder_named_like_the_dataset(tmp_path):
    """``viper/VIPeR``: the parent carries one of VIPeR's folder names; verify must look inside
    it (as the loaders do) rather than report cam_a/cam_b missing from the parent."""
    generate("viper", tmp_path / "viper", scale=0.02, seed=0)
    rep = verify("viper", tmp_path / "viper")
    assert rep.ok, rep.problems
    assert rep.dataset_dir == str(tmp_path / "viper" / "VIPeR")
    empty = tmp_path / "other" / "VIPeR"
    empty.mkdir(parents=True)
    rep = verify("viper", empty)
    assert {p.path for p in rep.problems} == {str(empty / "cam_a"), str(empty / "cam_b")}


def test_missing_folder(copy):
    shutil.rmtree(copy / M / "query")
    rep = verify("market1501", copy)
    assert [p.path for p in rep.problems if p.kind == "missing-folder"] == [str(copy / M / "query")]


def test_wrong_root(tmp_path):
    rep = verify("market1501", tmp_path / "nowhere")
    assert kinds(rep) == {"missing-folder"}
    rep = verify("market1501", tmp_path)
    assert kinds(rep) == {"missing-folder"} and M in rep.problems[0].path


def test_wrong_count_and_junk_count(copy):
    junk = sorted((copy / M / "bounding_box_test").glob("-1_*.jpg"))[0]
    junk.unlink()
    rep = verify("market1501", copy, quick=True)
    msgs = [p.message for p in rep.problems if p.kind == "count"]
    assert any("well-named files, expected" in m for m in msgs)
    assert any("junk (-1)" in m for m in msgs)


def test_bad_name(copy):
    bad = copy / M / "bounding_box_train" / "0002_c9s1_000001_01.jpg"
    shutil.copy(next((copy / M / "bounding_box_train").iterdir()), bad)
    rep = verify("market1501", copy, quick=True)
    assert any(p.kind == "name" and p.path == str(bad) for p in rep.problems)


def test_duplicate_query_camera(copy):
    q = sorted((copy / M / "query").iterdir())[0]
    pid, cam = q.name.split("_")[:2]
    shutil.copy(q, q.with_name(f"{pid}_{cam[:2]}s1_999976_00.jpg"))
    rep = verify("market1501", copy, quick=True)
    assert "duplicate" in kinds(rep)


def test_unreadable_image_only_in_full_mode(copy):
    img = sorted((copy / M / "gt_bbox").iterdir())[3]
    img.write_bytes(b"\xff\xd8 not really a jpeg")
    assert verify("market1501", copy, quick=True).ok
    rep = verify("market1501", copy)
    assert [p.path for p in rep.problems] == [str(img)] and kinds(rep) == {"unreadable"}


def test_wrong_image_size(copy):
    from PIL import Image

    img = sorted((copy / M / "query").iterdir())[0]
    Image.new("RGB", (32, 64)).save(img)
    rep = verify("market1501", copy)
    assert kinds(rep) == {"size"} and "expected 64×128" in rep.problems[0].message


def test_mat_wrong_version(copy):
    from scipy.io import savemat

    mat = copy / "cuhk03_release" / "cuhk-03.mat"
    mat.unlink()
    savemat(str(mat), {"labeled": 1})
    rep = verify("cuhk03", copy, quick=True)
    assert [p.kind for p in rep.problems] == ["mat-version"]
    assert "MATLAB v5, expected MATLAB v7.3" in rep.problems[0].message


def test_mat_missing_field(copy):
    from scipy.io import loadmat, savemat

    cfg = copy / "cuhk03_release" / "cuhk03_new_protocol_config_labeled.mat"
    m = {k: v for k, v in loadmat(str(cfg)).items() if not k.startswith("__") and k != "camId"}
    savemat(str(cfg), m)
    rep = verify("cuhk03", copy, quick=True)
    assert any(p.kind == "mat-field" and "'camId'" in p.message for p in rep.problems)


def test_truncated_mat(copy):
    mat = copy / "cuhk03_release" / "cuhk-03.mat"
    data = mat.read_bytes()
    mat.write_bytes(data[: len(data) // 2])
    rep = verify("cuhk03", copy)
    assert kinds(rep) == {"mat-content"} and "truncated" in rep.problems[0].message


def test_grid_fold_content(copy):
    from scipy.io import loadmat, savemat

    mat = copy / "underground_reid" / "features_and_partitions.mat"
    m = loadmat(str(mat))
    m["trainIdxAll"][0, 4][0, 0]["personIdx"][0, 0] = 9999
    savemat(str(mat), {"trainIdxAll": m["trainIdxAll"]})
    rep = verify("grid", copy)
    assert kinds(rep) == {"mat-content"} and "fold 5" in rep.problems[0].message


def test_every_problem_is_listed(copy):
    shutil.rmtree(copy / M / "gt_bbox")
    (copy / M / "query" / "oops.jpg").write_bytes(b"")
    rep = verify("market1501", copy, quick=True)
    assert {"missing-folder", "name"} <= kinds(rep)


def test_cli_exit_codes(pristine, copy, capsys):
    assert cli(["verify", "grid", str(pristine), "--quick"]) == 0
    assert "OK" in capsys.readouterr().out
    shutil.rmtree(copy / "underground_reid" / "probe")
    assert cli(["verify", "grid", str(copy)]) == 1
    out = capsys.readouterr()
    assert "[missing-folder]" in out.out and "FAILED" in out.err
    assert cli(["verify", "nosuch", str(copy)]) == 2
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err


def test_real_manifest_used_for_a_real_copy(pristine, tmp_path):
    # the same files without the marker are checked against the real counts: all wrong
    shutil.copytree(pristine / M, tmp_path / M)
    rep = verify("market1501", tmp_path, quick=True)
    assert rep.source == "real" and "count" in kinds(rep)
