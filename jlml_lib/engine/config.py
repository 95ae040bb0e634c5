"""Every setting of a training run, in one dataclass saved with the run (design §6).

Profiles (``make_config(profile, ...)``):

* ``paper`` — Table 4's "Train" row exactly: SGD, momentum 0.9, base LR 0.01, step policy ×0.1
  every 20K iterations, 50K iterations, batch 32, images 224×224 (§3 "Implementation").
* ``pretrain`` — Table 4's "Pre-train" row: the same but 300K iterations, steps every 100K;
  ImageNet as a 1,000-class problem on both branches.
* ``smoke`` — CPU-friendly: small images, a short schedule with the LR steps at the same
  fractions of the run as ``paper`` (20K/50K = 0.4 and 0.8), batch 32. For CI, notebooks and
  teaching on the synthetic data; never a reproduction.

Choices where the paper is silent (each is a field, so a run can change it and the choice is
saved in ``config.json``):

* ``weight_decay = 5e-4`` on every parameter — the usual Caffe ``solver.prototxt`` value
  (``decay_mult: 1``) of the Caffe ResNet/AlexNet recipes the paper builds on; it is in
  addition to the λ-weighted SFL regularisers of Eq. (5).
* augmentation: random horizontal flip, p = 0.5 (``flip``), as ``jlml_lib.data``'s
  ``build_transform(train=True)``; nothing else.
* test-time feature: the 1,024-d joint feature (§2.3), L2 distance, *no* normalisation
  (``eval_normalize=False``), no flip averaging (``eval_flip=False``).
* classifiers get the base LR (``classifier_lr_mult = 1``; Caffe fine-tuning recipes often use
  10 for fresh layers, the paper does not say so).

Overrides are ``key=value`` strings (``parse_overrides``); ``data.KEY=VALUE`` goes to
``data_options`` (passed to ``load_dataset``, e.g. ``data.images=detected`` for CUHK03).
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from jlml_lib.errors import ConfigError
from jlml_lib.features import eval_batch
from jlml_lib.losses import LAMBDA
from jlml_lib.model import ARCH_KEYS, FEATURE_KINDS, FEATURE_LAYERS, HEADS, JLML, jlml_resnet39

__all__ = ["TrainConfig", "PROFILES", "make_config", "parse_overrides", "apply_overrides",
           "config_from_dict", "RESUME_MAY_CHANGE"]

PROFILES = ("smoke", "paper", "pretrain")
#: what a run was made for: "none" (a table's run) or a study beyond the tables, whose records carry
#: it as their own variant and so never fill a table cell ("selection": 08's short SFL grid runs;
#: "preflight": `jlml workbook --preflight`'s few-iteration rehearsals on a slice of the test set)
STUDIES = ("none", "selection", "preflight")
CHOICES: dict[str, tuple[str, ...]] = {
    "head": HEADS,
    "stride_on": ("1x1", "3x3"),
    "feature_layer": FEATURE_LAYERS,
    "amp": ("auto", "off", "bf16", "fp16"),
    "channels_last": ("auto", "on", "off"),
    "sync_bn": ("auto", "on", "off"),
    "device": ("auto", "cpu", "cuda"),
    "ap": ("official", "standard"),
    "study": STUDIES,
}
EVAL_FEATURES = FEATURE_KINDS


@dataclass
class TrainConfig:
    """One training run. Defaults are the ``paper`` profile (Table 4, "Train")."""

    # -- what to train on
    dataset: str = "market1501"
    data_root: str | None = None          # None: the synthetic copy (labelled so everywhere)
    data_options: dict = field(default_factory=dict)   # load_dataset(name, root, **data_options)
    split: int = 0                        # VIPeR/GRID 0..9, CUHK03 classic 0..19
    synthetic_scale: float | None = None  # None: the dataset's default synthetic scale
    synthetic_seed: int = 0
    profile: str = "paper"
    init: str | None = None               # checkpoint whose backbone starts this run (--init)
    allow_mixed_sources: bool = False     # a run on real AND synthetic datasets at once (else an error)

    # -- Table 4
    iterations: int = 50_000
    lr: float = 0.01
    lr_gamma: float = 0.1
    lr_step: int = 20_000
    momentum: float = 0.9
    batch_size: int = 32                  # the global batch (split evenly over DDP ranks)
    image_height: int = 224
    image_width: int = 224

    # -- choices the paper leaves open (see module docstring)
    weight_decay: float = 5e-4
    classifier_lr_mult: float = 1.0
    flip: bool = True
    random_resized_crop: bool = False     # ImageNet's usual crop recipe (engine.sampler); the paper: resize only

    # -- model / loss (the ablation switches of Tables 10-12)
    head: str = "multi"                   # "multi": MultiLoss (Eq. 5); "uni": UniLoss (Table 10)
    sfl: bool = True                      # selective feature learning, Eqs. (1)-(2) (Table 12)
    shared_conv1: bool = True             # Table 11
    lambda_global: float = LAMBDA        # Eq. (5), §2.2
    lambda_local: float = LAMBDA
    m: int = 4
    share_local: bool = False
    stride_on: str = "1x1"
    feature_layer: str = "bn"             # "bn" Linear→BN→ReLU (Table 1 style) | "plain" Linear→ReLU; absent = "bn"

    # -- speed / hardware
    device: str = "auto"
    amp: str = "auto"                     # auto: bf16 (fp16 + GradScaler without bf16) on CUDA, off on CPU
    channels_last: str = "auto"           # auto: on (CUDA and CPU; see trainer.use_channels_last)
    sync_bn: str = "auto"                 # SyncBatchNorm under DDP: auto = on for CUDA DDP (BN statistics over
                                          # the whole batch of 32, as on the paper's single GPU); CUDA only
    freeze_bn: bool = False               # BN layers in eval mode (running statistics; affine params still train)
    workers: int = 4
    threads: int = 0                      # CPU compute threads per process; 0 = auto (cores / local DDP processes)
    seed: int = 0
    deterministic: bool = True            # torch.use_deterministic_algorithms on CPU

    # -- bookkeeping
    log_every: int = 50
    ckpt_every: int = 2_000
    progress: bool = True

    # -- evaluation at the end (§2.3: joint feature, L2)
    evaluate: bool = True
    eval_features: str = "joint"          # comma list; the first is DIR/metrics.json, others DIR/eval-<kind>/
    eval_normalize: bool = False
    eval_flip: bool = False
    eval_rerank: bool = False             # also k-reciprocal re-ranked results (Zhong et al. 2017), own records
    eval_batch_size: int = 0              # 0 = auto: features.EVAL_BATCH per device type
    eval_limit: int = 0                   # >0: only the first N queries and a gallery slice that keeps them
                                          # evaluable (engine.evaluate.limit_test_set); 0 = the whole test set
    ap: str = "official"
    study: str = "none"                   # STUDIES: a study's run is its own record variant (no table cell)

    # ---------------------------------------------------------------- derived
    @property
    def image_size(self) -> tuple[int, int]:
        return (self.image_height, self.image_width)

    def feature_kinds(self) -> list[str]:
        return [k.strip() for k in self.eval_features.split(",") if k.strip()]

    def eval_batch(self, device: torch.device | str) -> int:
        """Images per evaluation batch: ``eval_batch_size``, or (0) the device's
        :data:`jlml_lib.features.EVAL_BATCH` (:func:`jlml_lib.features.eval_batch`)."""
        return eval_batch(self.eval_batch_size, device)

    def variant(self, feature: str | None = None) -> dict[str, Any]:
        """The record's ablation tag (``jlml_lib.results.records``)."""
        # λ only matters with SFL on: a no-SFL run is the no-SFL ablation whatever λ says
        custom = self.sfl and (self.lambda_global, self.lambda_local) != (LAMBDA, LAMBDA)
        return {"feature": feature or self.feature_kinds()[0], "loss": self.head,
                "shared_conv1": self.shared_conv1, "sfl": self.sfl, "feature_layer": self.feature_layer,
                "lambda": "custom" if custom else "paper", "study": self.study}

    def build_model(self, num_classes: int) -> JLML:
        """The JLML-ResNet39 these settings describe (``model.ARCH_KEYS``), fresh ID classifiers."""
        return jlml_resnet39(num_classes, **{k: getattr(self, k) for k in ARCH_KEYS})

    def lr_at(self, iteration: int) -> float:
        """Caffe ``step`` policy: base_lr · gamma^floor(iter / stepsize) (Table 4, LRP)."""
        return self.lr * self.lr_gamma ** (iteration // self.lr_step)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        # NaN / inf anywhere would pass every comparison below and surface hours later as a
        # "non-finite loss" (lr=nan), or as invalid JSON in config.json / --print-config
        bad = {k: v for k, v in {**self.to_dict(), **{f"data.{k}": v for k, v in self.data_options.items()}}.items()
               if isinstance(v, float) and not math.isfinite(v)}
        if bad:
            raise ConfigError(", ".join(f"{k}={v!r}" for k, v in bad.items()) + ": every number must be "
                              "finite; give a real value (e.g. lr=0.01).")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r}: expected one of {list(allowed)}.")
        positive = ("iterations", "lr_step", "batch_size", "image_height", "image_width",
                    "log_every", "ckpt_every", "m")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)!r}: must be a positive integer.")
        if self.eval_batch_size < 0:
            raise ConfigError(f"eval_batch_size={self.eval_batch_size}: must be >= 0 "
                              "(0 = auto: jlml_lib.features.EVAL_BATCH).")
        if self.eval_limit < 0:
            raise ConfigError(f"eval_limit={self.eval_limit}: must be >= 0 (0 = every query).")
        if self.eval_limit and self.study == "none":
            raise ConfigError(f"eval_limit={self.eval_limit} evaluates a slice of the test set, which must never "
                              "fill a table cell: add study=preflight (or another study), or eval_limit=0.")
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads}: must be >= 0 (0 = one share of the cores per process).")
        if self.workers < 0 or self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError("workers and weight_decay must be >= 0 and lr > 0 "
                              f"(got workers={self.workers}, weight_decay={self.weight_decay}, lr={self.lr}).")
        negative = [k for k in ("lr_gamma", "momentum", "classifier_lr_mult", "lambda_global", "lambda_local")
                    if getattr(self, k) < 0]
        if negative or self.lr_gamma == 0:
            raise ConfigError(", ".join(f"{k}={getattr(self, k)!r}" for k in negative or ["lr_gamma"])
                              + ": must be >= 0 (lr_gamma > 0).")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile={self.profile!r}: expected one of {list(PROFILES)}.")
        bad = [k for k in self.feature_kinds() if k not in EVAL_FEATURES] or (
            [] if self.feature_kinds() else ["(empty)"])
        if bad:
            raise ConfigError(f"eval_features={self.eval_features!r}: {bad} not allowed; use a comma "
                              f"list of {list(EVAL_FEATURES)}.")
        return self


def _profile_defaults(profile: str) -> dict[str, Any]:
    if profile == "paper":
        return {}
    if profile == "pretrain":
        # Table 4, "Pre-train": 300K iterations, step (0.1, 100K); ImageNet classification
        return dict(profile="pretrain", dataset="imagenet", iterations=300_000, lr_step=100_000,
                    ckpt_every=5_000, evaluate=False)
    if profile == "smoke":
        # 120 iterations with the paper's step fractions (0.4, 0.8); 64×32 images train a
        # synthetic Market-1501 in minutes on two cores; no workers (CPU, deterministic).
        return dict(profile="smoke", iterations=120, lr_step=48, image_height=64, image_width=32,
                    workers=0, log_every=10, ckpt_every=100, eval_batch_size=64)
    raise ConfigError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}.")


# ---------------------------------------------------------------- key=value overrides
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _convert(key: str, text: str) -> Any:
    hint = _HINTS[key]
    args = set(typing.get_args(hint))
    optional = type(None) in args
    if optional and text.lower() in ("none", "null", ""):
        return None
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    try:
        if base is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            try:
                return int(text.replace("_", ""))
            except ValueError:
                number = float(text)  # "5e4" is 50000; "0.5" is refused below
                if not number.is_integer():
                    raise
                return int(number)
        if base is float:
            return float(text)
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError(text)
            return value
        return text
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected a value of type {getattr(base, '__name__', base)}"
                          + (" (true/false)" if base is bool else "") + ".") from None


def _scalar(text: str) -> Any:
    """Value of a ``data.KEY=VALUE`` option: int, float, bool, None or the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.1", "sfl=false", "data.images=detected"]`` -> typed field values."""
    out: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE (e.g. lr=0.001).")
        if key.startswith("data."):
            options[key[5:]] = _scalar(text)
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r} in {pair!r}; valid keys: "
                              f"{', '.join(sorted(_FIELDS))} (and data.OPTION=VALUE for load_dataset).")
        out[key] = _convert(key, text)
    if options:
        out["data_options"] = {**out.get("data_options", {}), **options}
    return out


def apply_overrides(cfg: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; valid keys: {', '.join(sorted(_FIELDS))}.")
    values = dict(values)
    if "data_options" in values:
        values["data_options"] = {**cfg.data_options, **values["data_options"]}
    return dataclasses.replace(cfg, **values)


def make_config(profile: str = "smoke", overrides: Sequence[str] | Mapping[str, Any] = (),
                **fields: Any) -> TrainConfig:
    """Profile defaults, then ``key=value`` overrides (strings or a typed mapping), then ``fields``."""
    cfg = TrainConfig(**_profile_defaults(profile))
    parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    cfg = apply_overrides(cfg, parsed)
    cfg = apply_overrides(cfg, fields)
    return cfg.validate()


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a saved config (``config.json`` / a checkpoint); unknown keys are an error."""
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"saved config has unknown key(s) {unknown}; it was written by another "
                          "version of jlml_lib. Start a new run (new --out) with this version.")
    return TrainConfig(**dict(d)).validate()


# Settings a resumed run may change: they do not alter the trained weights.
RESUME_MAY_CHANGE = frozenset({
    "iterations", "workers", "threads", "log_every", "ckpt_every", "progress", "evaluate", "eval_features",
    "eval_normalize", "eval_flip", "eval_rerank", "eval_batch_size", "eval_limit", "ap", "device", "study",
})
# data_root is not among them: other data would meet weights trained on the first (issue 19); the
# same folder spelled otherwise (relative, a symlink) is the same root (engine.run compares resolved paths)
