"""jlml_lib.inference (issue 20): a trained model loaded with its preprocessing, features of paths,
PIL images, arrays and tensors equal to the training evaluation's, bf16 close to fp32.

The model is a fresh JLML-ResNet39 written as a run's final checkpoint (no training: the features
only need to be the same function of the image whatever the weights are); images are random noise.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jlml_lib.data import build_loader
from jlml_lib.engine.checkpoint import save_final
from jlml_lib.engine.config import make_config
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.features import extract_features
from jlml_lib.inference import list_images, load_model, resolve_checkpoint


def write_run(folder, **overrides):
    """A run folder holding only checkpoints/final.pt of a fresh model (32×16 images, 5 classes)."""
    cfg = make_config("smoke", image_height=32, image_width=16, eval_batch_size=4, **overrides)
    torch.manual_seed(0)
    save_final(folder, model=cfg.build_model(5), iteration=0, config=cfg.to_dict(), num_classes=5,
               data={"dataset": cfg.dataset, "source": "synthetic", "split": 0, "num_train_pids": 5})
    return folder


def write_images(folder, n=6, size=(40, 20)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    return write_run(root / "run"), write_images(root)


def test_load_model_from_run_folder_or_file(run_and_images):
    run, _ = run_and_images
    tm = load_model(run)
    assert tm.checkpoint == run / "checkpoints" / "final.pt" == resolve_checkpoint(tm.checkpoint)
    assert not tm.model.training and tm.image_size == (32, 16)
    assert tm.preprocess(Image.new("RGB", (20, 40))).shape == (3, 32, 16)
    with pytest.raises(ConfigError, match="no-such-run"):
        load_model(run.parent / "no-such-run")


def test_features_equal_the_training_evaluations(run_and_images):
    run, paths = run_and_images
    tm = load_model(run)
    feats = tm.features(paths)
    # the training evaluation's path: build_loader + extract_features, in batches of the run's size
    items = [(str(p), 0, 0) for p in paths]
    ref, _, _ = extract_features(tm.model, build_loader(items, image_size=(32, 16), train=False, batch_size=4))
    assert feats.shape == (6, 1024) and torch.equal(feats, ref)
    # every input type gives the same features, in input order
    pils = [Image.open(p) for p in paths]
    arrays = [np.asarray(im.convert("RGB")) for im in pils]
    tensors = torch.stack([tm.preprocess(im) for im in pils])
    for other in (pils, arrays, tensors, [str(p) for p in paths], np.stack(arrays)):
        assert torch.equal(tm.features(other), feats)
    # other batches: the same up to float rounding (oneDNN's kernels depend on the batch)
    assert torch.allclose(tm.features(paths[::-1]), feats.flip(0), rtol=1e-4, atol=1e-5)
    assert torch.allclose(tm.features(paths[2]), feats[2:3], rtol=1e-4, atol=1e-5)
    assert tm.features(paths, kind="global").shape == (6, 512)


def test_normalised_features_and_the_runs_own_setting(run_and_images, tmp_path):
    run, paths = run_and_images
    raw = load_model(run).features(paths)
    unit = load_model(run).features(paths, normalize=True)
    assert torch.allclose(unit.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(unit, torch.nn.functional.normalize(raw, dim=1), atol=1e-6)
    # a run that evaluated normalised features is embedded normalised by default
    norm_run = load_model(write_run(tmp_path / "norm", eval_normalize=True))
    assert torch.allclose(norm_run.features(paths).norm(dim=1), torch.ones(6), atol=1e-6)


def test_bf16_autocast_stays_close_to_fp32(run_and_images):
    run, paths = run_and_images
    tm = load_model(run)
    fp32, bf16 = tm.features(paths), tm.features(paths, amp="bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # it did run in bfloat16
    cos = torch.nn.functional.cosine_similarity(fp32, bf16, dim=1)
    assert (cos > 0.99).all()   # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits
    with pytest.raises(ConfigError, match="amp"):
        tm.features(paths, amp="fp8")


def test_bad_inputs_are_named(run_and_images, tmp_path):
    run, paths = run_and_images
    tm = load_model(run)
    with pytest.raises(DataError, match="uint8"):
        tm.features(np.zeros((40, 20, 3), dtype=np.float32))
    with pytest.raises(DataError, match="3×32×16"):
        tm.features(torch.zeros(3, 64, 64))
    with pytest.raises(DataError, match="not found"):
        tm.features([tmp_path / "missing.png"])
    with pytest.raises(DataError, match="empty"):
        tm.features([])
    # a folder expands to its images, sorted
    assert list_images([paths[0].parent]) == sorted(paths)


def test_embed_and_search_commands(run_and_images, tmp_path):
    from jlml_lib.search import embed_main, search, search_main

    run, paths = run_and_images
    assert embed_main([str(run), str(paths[0]), str(paths[1]), "--out", str(tmp_path / "f.npz")]) == 0
    with np.load(tmp_path / "f.npz") as z:
        assert list(z["files"]) == [str(paths[0]), str(paths[1])] and z["features"].shape == (2, 1024)
        assert np.array_equal(z["features"], load_model(run).features(paths[:2]).numpy())
    # a query that is also in the gallery finds itself first, at distance 0 (§2.3's L2 distance)
    results = search(run, [paths[3]], paths, top=4)
    assert results[0].files[0] == paths[3] and results[0].distances[0] == pytest.approx(0, abs=1e-3)
    assert list(results[0].distances) == sorted(results[0].distances) and len(results[0].files) == 4
    page = tmp_path / "s.html"
    assert search_main([str(run), "--query", str(paths[3]), "--gallery", str(paths[0].parent), "--top", "3",
                        "--out", str(page)]) == 0
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") == 1 + 3 and "img3.png" in text and "src=\"http" not in text
