"""Test protocols (Market SQ/MQ, CUHK03 classic/new, VIPeR, GRID), feature extraction, aggregation.

The protocol logic is checked on hand-built 1-D features whose rankings can be worked out by
hand; the end-to-end path uses a stand-in model (mean colour per channel) on tiny images written
to a temporary folder, read through the real ``jlml_lib.data`` loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from jlml_lib import protocols
from jlml_lib.data import ReidDataset, build_loader
from jlml_lib.errors import ConfigError, DataError
from jlml_lib.evaluation import pairwise_distances, rank_metrics
from jlml_lib.features import extract_features
from jlml_lib.model import jlml_resnet39
from jlml_lib.reranking import k_reciprocal


def fs(feats, pids, cams):
    return torch.tensor(feats, dtype=torch.float32).reshape(len(pids), -1), np.array(pids), np.array(cams)


# --------------------------------------------------------------------------- Market-1501
def test_market_single_and_multi_query_by_hand():
    # query pid 1 cam 0 at x=0. Gallery: pid1/cam1 at 1 (good), pid2 at 0.5, pid -1 at 0.1 (junk),
    # pid1/cam0 at 0.05 (junk). SQ: non-junk ranking pid2 (0.5), pid1 (1) -> rank 2,
    # official AP (1-0)*(0/1 + 1/2)/2 = 1/4.
    # MQ: gt_bbox boxes of pid 1 / cam 0 at 0.8 and 1.2 -> mean 1.0 -> distance 0 to the good image
    # -> rank 1, AP 1. The second query (pid 2, cam 0, at 0.5) has no gt_bbox box: it keeps its own
    # feature (a fallback) and matches pid2/cam1 at 0.5 at rank 1 in both.
    query = fs([0.0, 0.5], [1, 2], [0, 0])
    gallery = fs([1.0, 0.5, 0.1, 0.05], [1, 2, -1, 1], [1, 1, 1, 0])
    bbox = fs([0.8, 1.2, 3.0], [1, 1, 1], [0, 0, 1])
    r = protocols.evaluate_features("market1501", query, gallery, gt_bbox=bbox, max_rank=4)
    assert r["protocol"] == "market1501" and r["ap"] == "official"
    sq, mq = r["single_query"], r["multi_query"]
    assert sq["protocol"] == "market1501-single-query" and mq["protocol"] == "market1501-multi-query"
    assert sq["mAP"] == pytest.approx((0.25 + 1.0) / 2) and sq["cmc"] == [0.5, 1.0, 1.0, 1.0]
    assert r["rank1"] == sq["rank1"] == 0.5 and r["mAP"] == sq["mAP"]
    assert mq["mAP"] == 1.0 and mq["rank1"] == 1.0 and mq["mq_fallbacks"] == 1
    no_mq = protocols.evaluate_features("market1501", query, gallery, ap="standard")
    assert "multi_query" not in no_mq and no_mq["ap"] == "standard"
    assert no_mq["mAP"] == pytest.approx((0.5 + 1.0) / 2)  # standard: precision 1/2 at the hit


def test_multi_query_features_are_group_means():
    rng = np.random.default_rng(0)
    bf = rng.normal(size=(30, 4))
    bp, bc = rng.integers(1, 4, 30), rng.integers(0, 3, 30)
    qp, qc = np.array([1, 2, 3, 3, 9]), np.array([0, 1, 2, 0, 0])
    qf = rng.normal(size=(5, 4))
    out, fallbacks = protocols.multi_query_features(
        (torch.from_numpy(qf), qp, qc), (torch.from_numpy(bf), bp, bc)
    )
    for i in range(5):
        sel = (bp == qp[i]) & (bc == qc[i])
        expected = bf[sel].mean(0) if sel.any() else qf[i]
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-12)
    assert fallbacks == sum(not ((bp == p) & (bc == c)).any() for p, c in zip(qp, qc))


# --------------------------------------------------------------------------- CUHK03
def test_cuhk03_classic_draws_only_from_the_other_camera():
    # each id: a same-camera gallery image (cam 0, the queries' camera) and an other-camera image,
    # both exactly at the query's feature. Drawing the same-camera one would leave the query
    # without a good match (rank-1 < 1); restricted to cam 1 every draw gives rank-1 = 1.
    pids = [1, 2, 3, 4]
    query = fs([float(10 * p) for p in pids], pids, [0] * 4)
    gallery = fs([float(10 * p) for p in pids for _ in (0, 1)], [p for p in pids for _ in (0, 1)], [0, 1] * 4)
    r = protocols.evaluate_features("cuhk03-classic", query, gallery, seed=3)
    assert r["protocol"] == "cuhk03-classic-single-shot" and r["num_draws"] == 10
    assert r["rank1"] == 1.0 and r["rank1_std"] == 0.0 and r["num_gallery"] == 4


def test_cuhk03_classic_averages_random_draws():
    # id p: a good other-camera image at 10p and a bad one at 10p + 1000. A query's rank 1 depends
    # on which of its two images the draw picked, so the 10 draws differ, are seeded, and each
    # draw's gallery holds exactly one image per id.
    pids = list(range(1, 9))
    query = fs([10.0 * p for p in pids], pids, [0] * 8)
    gallery = fs(
        [v for p in pids for v in (10.0 * p, 10.0 * p + 1000)], [p for p in pids for _ in (0, 1)], [1] * 16
    )
    a = protocols.cuhk03_classic_features(query, gallery, seed=0)
    b = protocols.cuhk03_classic_features(query, gallery, seed=0)
    c = protocols.cuhk03_classic_features(query, gallery, seed=1, num_draws=3)
    assert a == b
    assert c["num_draws"] == 3 and c["seed"] == 1
    assert 0 < a["rank1"] < 1 and a["rank1_std"] > 0 and a["num_gallery"] == 8
    # rank 1 in a draw = fraction of ids whose good image was drawn: a multiple of 1/8 per draw
    assert (a["rank1"] * 8 * 10) == pytest.approx(round(a["rank1"] * 80))


def test_cuhk03_new_uses_market_rules():
    query = fs([0.0], [1], [0])
    gallery = fs([0.0, 1.0, 2.0], [1, 5, 1], [0, 1, 1])  # same-camera copy is junk -> rank 2
    r = protocols.evaluate_features("cuhk03-new", query, gallery, max_rank=3)
    assert r["protocol"] == "cuhk03-new" and r["cmc"] == [0.0, 1.0, 1.0]


# --------------------------------------------------------------------------- VIPeR / GRID
def test_grid_distractors_are_negatives_and_cameras_are_ignored():
    # probe pid 1 (cam 3) at 0: a pid-0 distractor at 0.2 ranks first, its match (also camera 3:
    # not junk under the single-shot protocol) at 0.5 second. Probe pid 2 matches at rank 1.
    query = fs([0.0, 5.0], [1, 2], [3, 4])
    gallery = fs([0.5, 0.2, 5.1, 9.0], [1, 0, 2, 0], [3, 5, 1, 2])
    r = protocols.evaluate_features("grid", query, gallery, max_rank=4)
    assert r["protocol"] == "grid-single-shot" and r["num_gallery"] == 4
    assert r["cmc"] == [0.5, 1.0, 1.0, 1.0]


def test_viper_single_shot():
    query = fs([0.0, 1.0, 2.0], [1, 2, 3], [0, 0, 0])
    gallery = fs([1.1, 0.9, 2.0], [1, 2, 3], [1, 1, 1])  # probe 1 is nearer 2's image; 2 nearer 1's
    r = protocols.evaluate_features("viper", query, gallery, max_rank=3)
    assert r["protocol"] == "viper-single-shot" and r["cmc"] == pytest.approx([1 / 3, 1.0, 1.0])


def test_unknown_protocol_and_bad_features():
    q = fs([0.0], [1], [0])
    with pytest.raises(ConfigError, match="no test protocol for 'imagenet'"):
        protocols.evaluate_features("imagenet", q, q)
    with pytest.raises(DataError, match="N×D"):
        protocols.evaluate_features("viper", (torch.zeros(2, 3), np.array([1]), np.array([0])), q)
    with pytest.raises(ConfigError, match="ap must be"):
        protocols.evaluate_features("viper", q, q, ap="x")


# --------------------------------------------------------------------------- streamed = dense, re-ranking
def _random_split(seed=0, nq=30, ng=200, dim=12):
    """Market-1501-like labels (junk -1, distractors 0, several cameras) and identity-clustered features."""
    rng = np.random.default_rng(seed)
    qp, qc = rng.integers(1, 15, nq), rng.integers(0, 4, nq)
    gp = np.concatenate([rng.integers(1, 15, ng - 20), np.zeros(10, int), -np.ones(10, int)])
    gc = rng.integers(0, 4, ng)
    centres = rng.normal(size=(15, dim))
    qf = torch.from_numpy((centres[qp] + rng.normal(size=(nq, dim))).astype(np.float32))
    gf = torch.from_numpy((centres[np.abs(gp)] + rng.normal(size=(ng, dim))).astype(np.float32))
    return (qf, qp, qc), (gf, gp, gc), rng


def _same(result, m):
    assert result["cmc"] == pytest.approx(list(m.cmc), abs=0) and result["mAP"] == pytest.approx(m.mAP, abs=1e-12)
    assert result["mINP"] == pytest.approx(m.mINP, abs=1e-12) and result["query_key"] == m.query_key


def test_protocols_give_what_the_dense_matrix_gave():
    # no behaviour change: every protocol, from features in blocks = rank_metrics on the full matrix
    (qf, qp, qc), (gf, gp, gc), rng = _random_split()
    bf = qf + 0.1 * torch.from_numpy(rng.normal(size=tuple(qf.shape)).astype(np.float32))
    r = protocols.evaluate_features("market1501", (qf, qp, qc), (gf, gp, gc), gt_bbox=(bf, qp, qc))
    _same(r["single_query"], rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc))
    mqf, _ = protocols.multi_query_features((qf, qp, qc), (bf, qp, qc))
    _same(r["multi_query"], rank_metrics(pairwise_distances(mqf, gf), qp, gp, qc, gc))
    _same(protocols.evaluate_features("cuhk03-new", (qf, qp, qc), (gf, gp, gc), ap="standard"),
          rank_metrics(pairwise_distances(qf, gf), qp, gp, qc, gc, ap="standard"))
    grid = protocols.evaluate_features("grid", (qf, qp, qc), (gf, gp, gc))
    _same(grid, rank_metrics(pairwise_distances(qf, gf), qp, gp, np.zeros(len(qp)), np.ones(len(gp))))
    # CUHK03 classic: the same seeded draws, each ranked on the dense matrix's columns
    classic = protocols.evaluate_features("cuhk03-classic", (qf, qp, qc), (gf, gp, gc), seed=5, num_draws=4)
    d, draw_rng, maps = pairwise_distances(qf, gf), np.random.default_rng(5), []
    for _ in range(4):
        sel = protocols._single_shot_draw(gp, gc, qp, qc, draw_rng)
        maps.append(rank_metrics(d[:, sel], qp, gp[sel], qc, gc[sel]).mAP)
    assert classic["mAP"] == pytest.approx(np.mean(maps), abs=1e-12)
    assert classic["mAP_std"] == pytest.approx(np.std(maps, ddof=1), abs=1e-12)


def test_rerank_is_recorded_and_kept_apart():
    query, gallery, _ = _random_split(1)
    (qf, qp, qc), (gf, gp, gc) = query, gallery
    r = protocols.evaluate_features("cuhk03-new", query, gallery, rerank={"k1": 5})
    assert r["rerank"] == {"k1": 5, "k2": 6, "lambda_value": 0.3}
    _same(r, rank_metrics(k_reciprocal(qf, gf, k1=5), qp, gp, qc, gc))
    plain = protocols.evaluate_features("cuhk03-new", query, gallery)
    assert "rerank" not in plain and plain["mAP"] != r["mAP"]
    with pytest.raises(DataError, match="disagree on 'rerank'"):
        protocols.aggregate([r, plain])
    assert protocols.aggregate([r, r])["rerank"] == r["rerank"]
    mk = protocols.evaluate_features("market1501", query, gallery, gt_bbox=query, rerank=True)
    defaults = {"k1": 20, "k2": 6, "lambda_value": 0.3}
    assert mk["single_query"]["rerank"] == mk["multi_query"]["rerank"] == mk["rerank"] == defaults
    with pytest.raises(ConfigError, match="k1 must be"):
        protocols.evaluate_features("grid", query, gallery, rerank={"k1": 0})


# --------------------------------------------------------------------------- aggregation
def test_aggregate_mean_and_sample_std():
    a = {"protocol": "viper-single-shot", "ap": "official", "cmc": [0.5, 1.0], "rank1": 0.5, "mAP": 0.6,
         "num_queries": 2, "split": 0}
    b = {"protocol": "viper-single-shot", "ap": "official", "cmc": [1.0, 1.0], "rank1": 1.0, "mAP": 1.0,
         "num_queries": 2, "split": 1}
    r = protocols.aggregate([a, b])
    # mean (0.5 + 1)/2 = 0.75; sample std sqrt(((0.25)^2 + (0.25)^2) / 1) = 0.25 * sqrt(2)
    assert r["rank1"] == 0.75 and r["rank1_std"] == pytest.approx(0.25 * math.sqrt(2))
    assert r["cmc"] == [0.75, 1.0] and r["cmc_std"] == pytest.approx([0.25 * math.sqrt(2), 0.0])
    assert r["mAP"] == pytest.approx(0.8) and r["num_splits"] == 2 and r["splits"] == [0, 1]
    assert r["protocol"] == "viper-single-shot" and r["ap"] == "official"
    one = protocols.aggregate([a])
    assert one["rank1"] == 0.5 and one["rank1_std"] == 0.0
    with pytest.raises(DataError, match="disagree on 'ap'"):
        protocols.aggregate([a, {**b, "ap": "standard"}])
    with pytest.raises(DataError, match="no results"):
        protocols.aggregate([])


def test_aggregate_over_splits_replaces_the_draw_spread():
    # two CUHK03 splits whose draw-level spread is 0.1 and 0.3: over splits, rank-1 0.4 and 0.8
    # -> mean 0.6, sample std 0.2*sqrt(2); the draw-level stds are not averaged into it
    a = {"protocol": "cuhk03-classic-single-shot", "ap": "official", "rank1": 0.4, "rank1_std": 0.1, "num_draws": 10}
    b = {**a, "rank1": 0.8, "rank1_std": 0.3}
    r = protocols.aggregate([a, b])
    assert r["rank1"] == pytest.approx(0.6) and r["rank1_std"] == pytest.approx(0.2 * math.sqrt(2))
    assert r["num_draws"] == 10


def test_aggregate_nested_market_results():
    q = fs([0.0, 0.5], [1, 2], [0, 0])
    g = fs([1.0, 0.5, 0.1], [1, 2, -1], [1, 1, 1])
    bbox = fs([1.0], [1], [0])
    r1 = protocols.evaluate_features("market1501", q, g, gt_bbox=bbox)
    r = protocols.aggregate([r1, r1])
    assert r["single_query"]["rank1"] == r1["single_query"]["rank1"]
    assert r["multi_query"]["mAP"] == r1["multi_query"]["mAP"] and r["multi_query"]["mAP_std"] == 0.0


# --------------------------------------------------------------------------- end to end
class MeanColour(nn.Module):
    """Stand-in for JLML: the feature is the mean colour (3-D), the same for every ``kind``."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.calls: list[tuple[str, bool]] = []

    def features(self, x, kind="joint"):
        self.calls.append((kind, self.training))
        return x.mean(dim=(2, 3)) * self.scale


COLOURS = {1: (250, 10, 10), 2: (10, 250, 10), 3: (10, 10, 250), 0: (128, 128, 128), -1: (0, 0, 0)}


def _write(tmp_path, name, pid, i):
    rgb = np.array(COLOURS[pid], dtype=np.int16) + 3 * i
    img = np.broadcast_to(np.clip(rgb, 0, 255).astype(np.uint8), (16, 8, 3))
    path = tmp_path / name
    Image.fromarray(np.ascontiguousarray(img)).save(path)
    return str(path)


def _dataset(tmp_path, protocol, with_bbox=True):
    q = [(_write(tmp_path, f"q{p}.png", p, 0), p, 0) for p in (1, 2, 3)]
    g = [(_write(tmp_path, f"g{p}_{i}.png", p, i + 1), p, 1) for p in (1, 2, 3) for i in range(2)]
    g += [(_write(tmp_path, "d0.png", 0, 0), 0, 2), (_write(tmp_path, "j.png", -1, 0), -1, 2)]
    extras = {"gt_bbox": [(_write(tmp_path, f"b{p}.png", p, 1), p, 0) for p in (1, 2, 3)]} if with_bbox else {}
    return ReidDataset(name="toy", train=[], query=q, gallery=g, num_train_pids=0, split=0, num_splits=1,
                       protocol=protocol, source="synthetic", root=str(tmp_path), extras=extras)


def test_evaluate_end_to_end_market(tmp_path):
    model = MeanColour().train()
    ds = _dataset(tmp_path, "market1501")
    r = protocols.evaluate(model, ds, image_size=(16, 8), device="cpu", batch_size=2, kind="global")
    assert r["rank1"] == 1.0 and r["mAP"] == 1.0 and r["num_queries"] == 3
    assert r["multi_query"]["rank1"] == 1.0 and r["multi_query"]["mq_fallbacks"] == 0
    assert r["dataset"] == "toy" and r["kind"] == "global" and r["flip"] is False and r["split"] == 0
    assert model.training and all(kind == "global" and not training for kind, training in model.calls)
    import json

    json.dumps(r)  # JSON-ready


@pytest.mark.parametrize("protocol, name", [("viper", "viper-single-shot"), ("grid", "grid-single-shot"),
                                             ("cuhk03-classic", "cuhk03-classic-single-shot"),
                                             ("cuhk03-new", "cuhk03-new")])
def test_evaluate_end_to_end_other_protocols(tmp_path, protocol, name):
    ds = _dataset(tmp_path, protocol, with_bbox=False)
    r = protocols.evaluate(MeanColour(), ds, image_size=(16, 8), batch_size=4, flip=True)
    assert r["protocol"] == name and r["rank1"] == 1.0 and r["flip"] is True


def test_evaluate_rejects_unknown_protocol(tmp_path):
    ds = _dataset(tmp_path, "imagenet", with_bbox=False)
    with pytest.raises(ConfigError, match="protocol 'imagenet'"):
        protocols.evaluate(MeanColour(), ds, image_size=(16, 8))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_extract_features_runs_channels_last_and_leaves_the_model_as_it_was(layout):
    torch.manual_seed(0)
    model = jlml_resnet39(5).to(memory_format=layout).train()
    x = torch.randn(6, 3, 32, 16)
    with torch.no_grad():
        expected = model.eval().features(x.contiguous(), "joint")  # the NCHW reference
    model.train()
    batch = [(x[:4], torch.arange(4), torch.zeros(4)), (x[4:], torch.arange(2), torch.zeros(2))]
    f, _, _ = extract_features(model, batch, "cpu")
    torch.testing.assert_close(f, expected, rtol=1e-4, atol=1e-4)
    assert model.training
    conv = model.conv1[0].weight
    assert conv.is_contiguous(memory_format=layout) and (
        layout == torch.channels_last or conv.is_contiguous())


def test_extract_features_order_flip_and_errors(tmp_path):
    ds = _dataset(tmp_path, "market1501")
    loader = build_loader(ds.gallery, image_size=(16, 8), train=False, batch_size=3)
    f, p, c = extract_features(MeanColour(), loader, "cpu")
    assert f.shape == (8, 3) and f.dtype == torch.float32
    np.testing.assert_array_equal(p, [it[1] for it in ds.gallery])
    np.testing.assert_array_equal(c, [it[2] for it in ds.gallery])

    class Asym(MeanColour):  # a feature that changes under a horizontal flip
        def features(self, x, kind="joint"):
            return x[:, :, :, :1].mean(dim=(2, 3))

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    batch = [(x, torch.tensor([1, 2]), torch.tensor([0, 0]))]
    ff, _, _ = extract_features(Asym(), batch, "cpu", flip=True)
    expected = (x[:, :, :, 0].mean(2) + x[:, :, :, -1].mean(2)) / 2
    torch.testing.assert_close(ff, expected)

    with pytest.raises(DataError, match="no batches"):
        extract_features(MeanColour(), [], "cpu")
    with pytest.raises(ConfigError, match="kind must be"):
        extract_features(MeanColour(), batch, "cpu", kind="both")
    with pytest.raises(ConfigError, match="no .features"):
        extract_features(nn.Linear(2, 2), batch, "cpu")

    class NaNModel(MeanColour):
        def features(self, x, kind="joint"):
            return torch.full((x.shape[0], 2), float("nan"))

    with pytest.raises(DataError, match="NaN/inf features"):
        extract_features(NaNModel(), batch, "cpu")
