"""The training stream: a deterministic function of (seed, iteration), sliced exactly for DDP."""
from __future__ import annotations

from collections import Counter
from itertools import islice

import torch
from hypothesis import given, settings, strategies as st

from jlml_lib.engine.sampler import StreamSampler, apply_flip, flip_mask


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch=st.integers(1, 17), seed=st.integers(0, 2**31))
def test_every_pass_is_a_permutation(n, batch, seed):
    s = StreamSampler(n, batch, seed=seed)
    stream = [i for it in range((3 * n) // batch + 2) for i in s.global_batch(it)]
    # positions [e·n, (e+1)·n) of the stream hold every item exactly once (epoch e)
    for e in range(len(stream) // n):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))


def test_same_seed_same_batches_other_seed_other_order():
    a, b, c = StreamSampler(100, 32, seed=1), StreamSampler(100, 32, seed=1), StreamSampler(100, 32, seed=2)
    assert [a.global_batch(i) for i in range(10)] == [b.global_batch(i) for i in range(10)]
    assert [a.global_batch(i) for i in range(10)] != [c.global_batch(i) for i in range(10)]
    # a new pass is reshuffled, not a repeat of the first
    assert a.permutation(0).tolist() != a.permutation(1).tolist()


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 40), n=st.integers(5, 50), seed=st.integers(0, 1000))
def test_resumed_stream_continues_where_it_stopped(start, n, seed):
    batch = 8
    straight = list(islice(iter(StreamSampler(n, batch, seed=seed)), (start + 3) * batch))
    resumed = list(islice(iter(StreamSampler(n, batch, seed=seed, start_iteration=start)), 3 * batch))
    assert resumed == straight[start * batch:]


@settings(max_examples=25, deadline=None)
@given(world=st.sampled_from([1, 2, 4, 8]), n=st.integers(1, 70), it=st.integers(0, 30))
def test_ranks_partition_the_global_batch(world, n, it):
    batch = 32
    whole = StreamSampler(n, batch, seed=5).global_batch(it)
    parts = [StreamSampler(n, batch, seed=5, rank=r, world_size=world).rank_batch(it) for r in range(world)]
    assert [i for p in parts for i in p] == whole
    masks = [flip_mask(5, it, batch, r, world) for r in range(world)]
    assert torch.equal(torch.cat(masks), flip_mask(5, it, batch))


def test_flip_is_seeded_per_iteration_and_fair():
    assert torch.equal(flip_mask(0, 7, 32), flip_mask(0, 7, 32))
    assert not torch.equal(flip_mask(0, 7, 32), flip_mask(0, 8, 32))
    share = torch.cat([flip_mask(0, i, 32) for i in range(200)]).float().mean().item()
    assert 0.45 < share < 0.55   # p = 0.5; 6,400 draws: std 0.006, so ±0.05 is > 8 sigma


def test_apply_flip_mirrors_exactly_the_masked_images():
    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    out = apply_flip(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0][..., [3, 2, 1, 0]])   # W reversed
    assert torch.equal(out[1], x[1])


def test_items_seen_equally_often():
    s = StreamSampler(10, 4, seed=0)
    counts = Counter(i for it in range(25) for i in s.global_batch(it))  # 100 draws = 10 passes
    assert set(counts.values()) == {10}


def _items(tmp_path, n=6):
    from PIL import Image

    items = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray((torch.arange(40 * 24 * 3).reshape(40, 24, 3) * (i + 1) % 251).byte().numpy()).save(path)
        items.append((str(path), i % 3, 0))
    return items


def test_random_resized_crops_are_a_function_of_seed_and_iteration(tmp_path):
    from jlml_lib.engine.sampler import build_train_loader

    items = _items(tmp_path)

    def batches(workers, seed=0, start=0, crop=True):
        loader = build_train_loader(items, image_size=(16, 8), batch_size=4, workers=workers, seed=seed,
                                    start_iteration=start, random_resized_crop=crop)
        return [b[0] for b in islice(iter(loader), 3)]

    a, b = batches(0), batches(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))            # worker processes change nothing
    assert torch.equal(batches(0, start=2)[0], a[2])                # a resumed run sees the same crops
    assert not torch.equal(batches(0, seed=1)[0], a[0])             # another seed, other crops
    plain = batches(0, crop=False)
    assert all(x.shape == y.shape == (4, 3, 16, 8) for x, y in zip(a, plain))
    assert not all(torch.equal(x, y) for x, y in zip(a, plain))      # the switch does crop


def test_crop_params_stay_in_the_recipe_bounds(tmp_path):
    from jlml_lib.engine.sampler import CROP_SCALE, ResizedCrops
    from torchvision import transforms as T

    ds = ResizedCrops(_items(tmp_path, 1), (16, 8), seed=3)
    seen = []
    orig = T.RandomResizedCrop.get_params

    def spy(img, scale, ratio):
        out = orig(img, scale, ratio)
        seen.append((out, img.size))
        return out

    T.RandomResizedCrop.get_params = staticmethod(spy)
    try:
        for it in range(20):
            ds[(0, it, 0)]
    finally:
        T.RandomResizedCrop.get_params = staticmethod(orig)
    for (top, left, h, w), (W, H) in seen:
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        # torchvision falls back to a central crop when 10 draws fail; both stay inside the image
        assert h * w <= CROP_SCALE[1] * H * W + 1e-9
    assert len({s[0] for s in seen}) > 5                               # iterations draw different crops
