"""How a decoded image becomes a backbone's input: ``Preprocess``, the resize / crop / pad geometry
(picklable, applied in the decoding workers) to a uint8 tensor; normalisation happens on the model's device."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .backbone_config import INTERPOLATION_NAMES

INTERPOLATIONS = {name: Image.Resampling[name.upper()] for name in INTERPOLATION_NAMES}


@dataclass(frozen=True)
class Preprocess:
    """Geometry applied to a decoded RGB image before the model; picklable for DataLoader workers.

    ``policy``: ``backbone`` (the backbone's own eval transform: resize the short side to
    ``size / crop_pct``, centre crop ``size``), ``resize`` (squash to ``size`` x ``size``, no crop)
    or ``pad`` (native pixels centred on a ``size`` x ``size`` canvas of the mean colour, cropped
    when larger). ``mean``/``std`` are applied on the model's device, not here.
    """

    size: int
    policy: str = "backbone"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 tensor (3, size, size)."""
        size, resample = self.size, INTERPOLATIONS[self.interpolation]
        if self.policy == "resize":
            image = image.resize((size, size), resample)
        elif self.policy == "backbone":
            short = max(1, int(np.floor(size / self.crop_pct)))
            w, h = image.size
            scale = short / min(w, h)
            image = image.resize((max(short, round(w * scale)), max(short, round(h * scale))), resample)
            image = _center_crop(image, size)
        elif self.policy == "pad":
            fill = tuple(int(round(m * 255)) for m in self.mean)
            canvas = Image.new("RGB", (size, size), fill)
            image = _center_crop(image, min(size, image.width), min(size, image.height))
            canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
            image = canvas
        else:
            raise ValueError(f"unknown resize policy {self.policy!r}")
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _center_crop(image: Image.Image, width: int, height: int | None = None) -> Image.Image:
    height = width if height is None else height
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))
