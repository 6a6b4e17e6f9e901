"""What fine-tuning trains on: the heads' splits of a dataset (``training_items``) and the training
augmentation (``Augment``: blur + JPEG of Wang et al., CVPR 2020, random resized crop, flip; ``BatchMix``:
mixup / CutMix of whole batches)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from .datasets import ImageSource, discover
from .perturb import Perturbation
from .splits import assign_splits
from .store import per_id


@dataclass(frozen=True)
class Augment:
    """Training augmentation of a decoded image: a downscale (to U(0.4, 1) of its size, as
    ``resize`` perturbs) with probability ``downscale``, blur (sigma U(0, 3)) and JPEG
    re-compression (quality U{30..100}), each with probability ``blur_jpeg``, then a random resized
    crop (area U(crop_scale, 1), aspect 3/4..4/3) and a horizontal flip. Randomness from torch, so
    DataLoader seeding makes it reproducible."""

    blur_jpeg: float = 0.5
    crop_scale: float = 0.6
    flip: bool = True
    downscale: float = 0.0

    def __call__(self, image: Image.Image, image_id: str | None = None) -> Image.Image:
        """A fresh random draw on every call (``image_id`` is not used: training draws anew each epoch)."""
        if self.downscale and torch.rand(()) < self.downscale:  # no draw when off: older runs' draws unchanged
            image = Perturbation("resize", float(torch.empty(()).uniform_(0.4, 1.0)))(image)
        if torch.rand(()) < self.blur_jpeg:
            image = Perturbation("blur", 3 * float(torch.rand(())))(image)
        if torch.rand(()) < self.blur_jpeg:
            image = Perturbation("jpeg", int(torch.randint(30, 101, ())))(image)
        if self.crop_scale < 1:
            image = _random_crop(image, self.crop_scale)
        if self.flip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


class BatchMix:
    """Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) of a float batch with its
    reverse, one draw per batch, targets P(fake) mixed in the same proportion: timm's ``Mixup``, which
    draws from numpy's global generator (``seed`` it per epoch). An odd batch (a bad image dropped
    from it, or a dataset smaller than one batch) passes unmixed, as timm pairs images end to end."""

    def __init__(self, mixup: float, cutmix: float, prob: float = 1.0):
        from timm.data import Mixup

        self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, mode="batch", label_smoothing=0.0,
                           num_classes=1, multi_label=True)

    @staticmethod
    def seed(seed: int) -> None:
        np.random.seed(seed % 2**32)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, C, H, W) float, mixed in place; ``y`` (B,) targets in [0, 1]."""
        if len(x) % 2:
            return x, y
        x, mixed = self.mixer(x, y[:, None])
        return x, mixed[:, 0]


def _random_crop(image: Image.Image, min_area: float) -> Image.Image:
    w, h = image.size
    area = float(torch.empty(()).uniform_(min_area, 1.0))
    ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
    cw, ch = min(w, max(1, round(w * math.sqrt(area * ratio)))), min(h, max(1, round(h * math.sqrt(area / ratio))))
    left, top = int(torch.randint(0, w - cw + 1, ())), int(torch.randint(0, h - ch + 1, ()))
    return image.crop((left, top, left + cw, top + ch))


def training_items(source: str | Path | ImageSource, *, limit: int | None = None, val_size: float = 0.2,
                   test_size: float = 0.0, random_state: int = 0, progress: bool = True) -> pd.DataFrame:
    """Train and val rows (one per content id) of ``source`` with the heads' split of the whole
    dataset, optionally a seeded subset of ``limit`` stratified by split and label."""
    frame = discover(source, progress=progress)
    items = per_id(frame[frame["error"] == ""])
    items["split"], _ = assign_splits(items, val_size=val_size, test_size=test_size, random_state=random_state)
    items = items[items["split"].isin(["train", "val"])]
    if limit is not None and limit < len(items):
        strata = items["split"] + items["label"].astype(str)
        items, _ = train_test_split(items, train_size=limit, stratify=strata, random_state=random_state)
    for split in ("train", "val"):
        if items.loc[items["split"] == split, "label"].nunique() < 2:
            raise ValueError(f"the {split} split needs both real and fake images")
    return items.sort_values("path").reset_index(drop=True)[["id", "path", "split", "label"]]
