"""The fine-tuning configuration: everything that shapes the trained weights (see ``fakedet.finetune``)."""
from __future__ import annotations

from dataclasses import dataclass

TRAIN_RUNTIMES = ("auto", "eager", "compile")


@dataclass
class FinetuneConfig:
    """Everything that shapes the trained weights; a run resumes only with an identical config.

    ``warmup``: fraction of the steps whose learning rates rise linearly from 0 (at least
    ``MIN_WARMUP`` steps, at most half of them; 0 = none).
    ``ema``: decay per step of an exponential moving average of the weights, which is then what is
    validated and saved (0 = none: the weights as trained).
    ``mixup`` / ``cutmix``: Beta(alpha, alpha) parameters of mixup (blend of two images) and CutMix (a
    box of one pasted into the other) between a batch and its reverse, the targets mixed in the same
    proportion (timm's ``Mixup``; 0 = off, both > 0 = either, half and half), on a share ``mix_prob``
    of the batches.
    ``train_runtime``: engine of the training step, see ``fakedet.train_speed``.
    ``random_state`` seeds the splits and subset (which must match the heads'), ``train_seed`` the
    training (initial shuffles, augmentation draws; default ``random_state``): a second run with
    another ``train_seed`` trains on the same images and errs differently.
    """

    backbone: str = "effnet-lite0"
    checkpoint: str | None = None
    image_size: int | None = 128
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-4
    head_lr: float = 1e-3
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    warmup: float = 0.1
    clip_grad: float = 1.0
    ema: float = 0.0
    freeze: int = 0
    bn_stats: str = "frozen"
    flip: bool = True
    crop_scale: float = 0.6
    blur_jpeg: float = 0.5
    downscale: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0
    limit: int | None = None
    val_size: float = 0.2
    test_size: float = 0.0
    random_state: int = 0
    train_seed: int | None = None
    precision: str = "auto"
    train_runtime: str = "auto"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.freeze < 0:
            raise ValueError("epochs and batch_size must be at least 1, freeze at least 0")
        if not (0 < self.crop_scale <= 1 and 0 <= self.blur_jpeg <= 1 and 0 <= self.downscale <= 1
                and 0 <= self.warmup < 1):
            raise ValueError("crop_scale must be in (0, 1], blur_jpeg and downscale in [0, 1], warmup in [0, 1)")
        if self.mixup < 0 or self.cutmix < 0 or not 0 <= self.mix_prob <= 1:
            raise ValueError("mixup and cutmix must be at least 0 (0 = off), mix_prob in [0, 1]")
        if not 0 <= self.ema < 1:
            raise ValueError("ema must be in [0, 1): the decay per step of the weights' moving average, 0 = none")
        if not 0 < self.layer_decay <= 1 or self.bn_stats not in ("frozen", "train"):
            raise ValueError("layer_decay must be in (0, 1], bn_stats 'frozen' or 'train'")
        if self.train_seed is None:
            self.train_seed = self.random_state
        if self.train_runtime not in TRAIN_RUNTIMES:
            raise ValueError(f"train_runtime must be one of {', '.join(TRAIN_RUNTIMES)}, not {self.train_runtime!r}")
