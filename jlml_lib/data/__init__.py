"""Datasets in their original formats, manifests and verification, synthetic stand-ins.

Public API (design §4, contract):

* :func:`load_dataset` ``(name, root, **options) -> ReidDataset`` for ``market1501``,
  ``cuhk03``, ``viper``, ``grid``, ``imagenet`` and ``cuhk03+market1501``;
* :func:`resolve_root` — the user's copy, or a cached synthetic one;
* :func:`open_image`, :func:`build_transform`, :class:`ImageDataset`, :func:`build_loader`;
* :func:`jlml_lib.data.synthetic.generate`; :func:`jlml_lib.data.verify.verify`.
"""
from jlml_lib.data.base import (ReidDataset, dataset_names, find_dataset_dir, load_dataset,
                                resolve_root)
from jlml_lib.data.images import ImageDataset, build_loader, build_transform, open_image

__all__ = ["ReidDataset", "load_dataset", "resolve_root", "dataset_names", "find_dataset_dir",
           "open_image", "build_transform", "ImageDataset", "build_loader"]
