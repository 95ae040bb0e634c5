"""Images to tensors: transforms, the DataLoader, and clear errors for bad images and roots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jlml_lib.data import ImageDataset, build_loader, build_transform, load_dataset, open_image
from jlml_lib.data.images import IMAGENET_MEAN, IMAGENET_STD
from jlml_lib.data.synthetic import generate
from jlml_lib.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def viper(synthetic_root) -> Path:
    return synthetic_root("viper", scale=0.05, seed=0)


def test_test_transform_is_resize_and_imagenet_normalisation(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    x = build_transform((32, 16), train=False)(Image.fromarray(arr))
    assert x.shape == (3, 32, 16)
    ref = np.asarray(Image.fromarray(arr).resize((16, 32), Image.BILINEAR), np.float32) / 255
    ref = (ref - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.permute(1, 2, 0).numpy(), ref, atol=0.02)


def test_train_transform_flips_and_only_flips():
    arr = np.zeros((8, 4, 3), np.uint8)
    arr[:, 0] = 255  # a bright left column
    im = Image.fromarray(arr)
    tr, te = build_transform((8, 4), train=True), build_transform((8, 4), train=False)
    torch.manual_seed(0)
    outs = [tr(im) for _ in range(40)]
    plain, flipped = te(im), torch.flip(te(im), dims=[2])
    assert all(torch.equal(o, plain) or torch.equal(o, flipped) for o in outs)
    assert any(torch.equal(o, plain) for o in outs) and any(torch.equal(o, flipped) for o in outs)


def test_bad_image_size():
    with pytest.raises(ConfigError, match="image_size"):
        build_transform((0, 16), train=False)


def test_loader_batches(viper):
    ds = load_dataset("viper", viper)
    loader = build_loader(ds.train, image_size=(64, 32), train=True, batch_size=4, seed=1)
    x, pid, cam = next(iter(loader))
    assert x.shape == (4, 3, 64, 32) and x.dtype == torch.float32
    assert pid.dtype == torch.int64 and set(cam.tolist()) <= {0, 1}
    assert len(loader) == len(ds.train) // 4  # drop_last for training
    order = lambda s: [p.tolist() for _, p, _ in build_loader(  # noqa: E731
        ds.train, image_size=(8, 4), train=True, batch_size=4, seed=s)]
    assert order(3) == order(3) and order(3) != order(4)  # seeded shuffling
    test = build_loader(ds.query, image_size=(64, 32), train=False, batch_size=5)
    assert [p for _, p, _ in test.dataset.items] == [p for _, p, _ in ds.query]
    assert sum(len(b[1]) for b in test) == len(ds.query)


def test_loader_with_worker_processes(viper):
    ds = load_dataset("viper", viper)
    loader = build_loader(ds.query, image_size=(32, 16), train=False, batch_size=8, workers=2)
    assert sum(len(b[0]) for b in loader) == len(ds.query)


def test_loader_reads_cuhk03_references_in_workers(tmp_path):
    generate("cuhk03", tmp_path, scale=0.02, seed=0)
    ds = load_dataset("cuhk03", tmp_path)
    loader = build_loader(ds.train[:16], image_size=(32, 16), train=False, batch_size=8,
                          workers=2)
    assert sum(len(b[0]) for b in loader) == 16


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=str(bad).replace(".", r"\.") + ".*not a readable image"):
        open_image(str(bad))
    with pytest.raises(DataError, match="not found"):
        open_image(str(tmp_path / "nope.jpg"))
    with pytest.raises(DataError, match="not a readable image"):
        ImageDataset([(str(bad), 1, 0)])[0]
    with pytest.raises(DataError, match="CUHK03 image reference"):
        open_image("x.mat::labeled/0/1")
    with pytest.raises(DataError, match="cannot open as a MATLAB v7.3"):
        open_image(f"{bad}::labeled/0/0/0")


@pytest.mark.parametrize("name", ["market1501", "cuhk03", "viper", "grid", "imagenet"])
def test_wrong_root_is_one_clear_error(tmp_path, name):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(name, tmp_path / "absent")
    with pytest.raises(DataError, match="does not hold the dataset.*jlml data verify"):
        load_dataset(name, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is a file"):
        load_dataset(name, tmp_path / "file")


def test_empty_items():
    with pytest.raises(DataError, match="empty"):
        build_loader([], image_size=(8, 4), train=False, batch_size=2)
