"""Image perturbations for robustness evaluation: ``jpeg:q=75``, ``blur:sigma=1``, ``resize:0.5``.

A perturbation is applied to the decoded image before the backbone's preprocessing, is
deterministic, and has a canonical name used to key its embeddings in the cache.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

from PIL import Image, ImageFilter

KINDS = {"jpeg": "q", "blur": "sigma", "resize": "scale"}


@dataclass(frozen=True)
class Perturbation:
    """One named degradation; ``value`` is the JPEG quality, blur sigma or resize scale."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}-{KINDS[self.kind]}{value}"

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.kind == "jpeg":
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(self.value))
            return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        if self.kind == "blur":
            return image.filter(ImageFilter.GaussianBlur(radius=self.value))
        w, h = image.size
        size = (max(1, round(w * self.value)), max(1, round(h * self.value)))
        return image.resize(size, Image.Resampling.BICUBIC)


def parse_perturbation(text: str) -> Perturbation:
    """``jpeg:q=75`` / ``jpeg:75``, ``blur:sigma=1`` / ``blur:1``, ``resize:0.5`` / ``resize:scale=0.5``."""
    match = re.fullmatch(r"\s*(\w+)\s*:\s*(?:(\w+)\s*=\s*)?([0-9.]+)\s*", text)
    if not match or match.group(1) not in KINDS:
        raise ValueError(f"perturbation {text!r}: use jpeg:q=75, blur:sigma=1 or resize:0.5")
    kind, param, value = match.group(1), match.group(2), float(match.group(3))
    if param not in (None, KINDS[kind]):
        raise ValueError(f"perturbation {text!r}: {kind} takes {KINDS[kind]}=...")
    if kind == "jpeg" and not 1 <= value <= 100:
        raise ValueError("jpeg quality must be within 1..100")
    if kind in ("blur", "resize") and value <= 0:
        raise ValueError(f"{kind} needs a positive value")
    return Perturbation(kind, value)
