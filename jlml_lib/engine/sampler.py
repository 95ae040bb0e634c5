"""Training batches as a pure function of (seed, iteration): resumable and DDP-exact.

Caffe-style training counts iterations, not epochs (Table 4). The training images are read as
an endless stream made of one random permutation per pass ("epoch" e uses a generator seeded
from (seed, e)); iteration i takes stream positions [i·B, (i+1)·B) where B is the *global*
batch. Under DDP, rank r of W takes the r-th contiguous slice of B/W of that global batch, so
W processes see exactly the images one process sees with batch B.

Augmentation (horizontal flip, p = 0.5 — the one ``jlml_lib.data.build_transform(train=True)``
applies) is drawn per iteration from a generator seeded from (seed, i) for the whole global
batch and applied to the batch tensor in the main process. Images are loaded with the *test*
transform (resize + normalise, no randomness), so neither the number of DataLoader workers nor
a restart can change what a given iteration sees. Flipping a normalised tensor equals
normalising a flipped image (flip permutes pixels; normalisation is per channel).

``random_resized_crop=true`` (off by default; the paper only says images are resized) adds the
common ImageNet recipe — a crop of 8–100% of the area and aspect 3/4–4/3, resized to the input
size — drawn per image from (seed, iteration, position in the global batch), so it keeps the
same guarantees; the flip still applies on top.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from jlml_lib.data import build_loader, open_image
from jlml_lib.data.images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["StreamSampler", "KeyedStreamSampler", "ResizedCrops", "flip_mask", "apply_flip",
           "build_train_loader"]

_ORDER, _FLIP, _CROP = 0x0D, 0xF1, 0xC4  # stream tags, so order, flips and crops never share a generator
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop defaults


def _generator(seed: int, tag: int, *index: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), tag, *map(int, index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class StreamSampler(Sampler[int]):
    """Endless per-sample indices for one rank, starting at ``start_iteration``.

    ``global_batch(i)`` is the list of dataset indices of iteration i (all ranks).
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, start_iteration: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_items < 1:
            raise ValueError("StreamSampler: no training items")
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} ranks")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.start, self.rank, self.world = start_iteration, rank, world_size
        self._cache: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:   # batches only ever look at epochs e and e+1
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=_generator(self.seed, _ORDER, epoch))
        return self._cache[epoch]

    def global_batch(self, iteration: int) -> list[int]:
        out: list[int] = []
        pos = iteration * self.batch
        while len(out) < self.batch:
            epoch, offset = divmod(pos, self.n)
            take = min(self.batch - len(out), self.n - offset)
            out += self.permutation(epoch)[offset:offset + take].tolist()
            pos += take
        return out

    def rank_batch(self, iteration: int) -> list[int]:
        local = self.batch // self.world
        return self.global_batch(iteration)[self.rank * local:(self.rank + 1) * local]

    def __iter__(self) -> Iterator[int]:
        i = self.start
        while True:
            yield from self.rank_batch(i)
            i += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


class KeyedStreamSampler(StreamSampler):
    """The same stream, yielding ``(index, iteration, slot)`` keys (slot = position in the global
    batch) so a dataset can draw per-image randomness as a function of them."""

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        i, local = self.start, self.batch // self.world
        while True:
            for j, index in enumerate(self.rank_batch(i)):
                yield index, i, self.rank * local + j
            i += 1


class ResizedCrops(Dataset):
    """Training images with a random-resized crop drawn from (seed, iteration, slot), normalised."""

    def __init__(self, items: Sequence[tuple[str, int, int]], image_size: tuple[int, int], seed: int) -> None:
        self.items, self.size, self.seed = list(items), tuple(int(v) for v in image_size), int(seed)
        self.finish = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int, int]):
        index, iteration, slot = key
        ref, pid, camid = self.items[index]
        img = open_image(ref)
        with torch.random.fork_rng(devices=[]):  # get_params draws from the global RNG: seed a private copy
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=_generator(self.seed, _CROP, iteration, slot))))
            top, left, h, w = T.RandomResizedCrop.get_params(img, CROP_SCALE, CROP_RATIO)
        img = TF.resized_crop(img, top, left, h, w, list(self.size), antialias=True)
        return self.finish(img), pid, camid


def flip_mask(seed: int, iteration: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Which images of this rank's slice of iteration ``iteration`` are mirrored (p = 0.5)."""
    mask = torch.rand(batch_size, generator=_generator(seed, _FLIP, iteration)) < 0.5
    local = batch_size // world_size
    return mask[rank * local:(rank + 1) * local]


def apply_flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (along W) the images selected by ``mask``; returns a new tensor."""
    mask = mask.to(images.device).view(-1, *([1] * (images.dim() - 1)))
    return torch.where(mask, images.flip(-1), images)


def build_train_loader(items: Sequence[tuple[str, int, int]], *, image_size: tuple[int, int],
                       batch_size: int, workers: int, seed: int, start_iteration: int,
                       rank: int = 0, world_size: int = 1, random_resized_crop: bool = False):
    """The DataLoader of this rank's slices, from ``start_iteration`` on (endless)."""
    if random_resized_crop:
        keyed = KeyedStreamSampler(len(items), batch_size, seed=seed, start_iteration=start_iteration,
                                   rank=rank, world_size=world_size)
        return DataLoader(ResizedCrops(items, image_size, seed), batch_size=batch_size // world_size,
                          sampler=keyed, num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available())
    sampler = StreamSampler(len(items), batch_size, seed=seed, start_iteration=start_iteration,
                            rank=rank, world_size=world_size)
    # train=False: the deterministic transform; the flip is applied per batch (see above)
    return build_loader(items, image_size=image_size, train=False, batch_size=batch_size // world_size,
                        workers=workers, seed=seed, drop_last=False, sampler=sampler)
