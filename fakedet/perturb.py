"""Image perturbations: fixed ones for robustness evaluation, random ones for augmentation.

A ``Perturbation`` (``jpeg:q=75``, ``blur:sigma=1``, ``resize:0.5``) is applied to the decoded
image before the backbone's preprocessing, is deterministic, and has a canonical name used to key
its embeddings in the cache. An ``Augmentation`` is one copy of a training set under ranges
(``jpeg:q=30-95``, ``blur:sigma=0-2``, ``resize:0.5-1``): for each image, every listed kind is
applied in order (``pick='all'``), or just one (``pick='one'``: an image's copies take the kinds in
turn from a starting kind drawn per image, so K copies of k kinds give each image every kind K/k
times), with a value drawn uniformly from its range by a generator seeded from (seed, copy, image
id), so a copy is the same on every run and a resumed extraction continues it exactly.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np

from PIL import Image, ImageFilter

KINDS = {"jpeg": "q", "blur": "sigma", "resize": "scale"}
PICKS = ("all", "one")  # an augmented copy applies every listed kind, or one of them


@dataclass(frozen=True)
class Perturbation:
    """One named degradation; ``value`` is the JPEG quality, blur sigma or resize scale."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        value = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}-{KINDS[self.kind]}{value}"

    def __call__(self, image: Image.Image, image_id: str | None = None) -> Image.Image:
        """The perturbed image (``image_id`` is ignored: a fixed perturbation is the same for all)."""
        if self.kind == "jpeg":
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(self.value))
            return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        if self.kind == "blur":
            return image.filter(ImageFilter.GaussianBlur(radius=self.value))
        w, h = image.size
        size = (max(1, round(w * self.value)), max(1, round(h * self.value)))
        return image.resize(size, Image.Resampling.BICUBIC)


_SPEC = re.compile(r"\s*(\w+)\s*:\s*(?:(\w+)\s*=\s*)?([0-9.]+)(?:\s*-\s*([0-9.]+))?\s*")


def _parse(text: str, ranges: bool) -> tuple[str, float, float]:
    """(kind, low, high) of a spec; ``high == low`` for a fixed value."""
    example = "jpeg:q=30-95, blur:sigma=0-2 or resize:0.5-1" if ranges else "jpeg:q=75, blur:sigma=1 or resize:0.5"
    match = _SPEC.fullmatch(text)
    if not match or match.group(1) not in KINDS or (match.group(4) is not None and not ranges):
        raise ValueError(f"perturbation {text!r}: use {example}")
    kind, param = match.group(1), match.group(2)
    try:
        low = float(match.group(3))
        high = float(match.group(4)) if match.group(4) is not None else low
    except ValueError:
        raise ValueError(f"perturbation {text!r}: use {example}") from None
    if param not in (None, KINDS[kind]):
        raise ValueError(f"perturbation {text!r}: {kind} takes {KINDS[kind]}=...")
    if low > high:
        raise ValueError(f"perturbation {text!r}: the range must go from low to high")
    if kind == "jpeg" and not 1 <= low <= high <= 100:
        raise ValueError("jpeg quality must be within 1..100")
    if kind == "resize" and not 0 < low <= high <= 4:
        raise ValueError("resize scale must be within (0, 4]")
    if kind == "blur" and (low < 0 or (high == 0) or (not ranges and low <= 0)):
        raise ValueError("blur needs a positive sigma (a range may start at 0)")
    return kind, low, high


def parse_perturbation(text: str) -> Perturbation:
    """``jpeg:q=75`` / ``jpeg:75``, ``blur:sigma=1`` / ``blur:1``, ``resize:0.5`` / ``resize:scale=0.5``."""
    kind, value, _ = _parse(text, ranges=False)
    return Perturbation(kind, value)


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class PerturbRange:
    """One kind of degradation with a value range, e.g. ``PerturbRange('jpeg', 30, 95)``."""

    kind: str
    low: float
    high: float

    @property
    def name(self) -> str:
        values = _number(self.low) if self.low == self.high else f"{_number(self.low)}-{_number(self.high)}"
        return f"{self.kind}-{KINDS[self.kind]}{values}"

    def draw(self, rng: np.random.Generator) -> Perturbation:
        value = float(rng.uniform(self.low, self.high))
        return Perturbation(self.kind, float(round(value)) if self.kind == "jpeg" else value)


def parse_augment(text: str) -> PerturbRange:
    """``jpeg:q=30-95``, ``blur:sigma=0-2``, ``resize:0.5-1``; a single value is a fixed one."""
    return PerturbRange(*_parse(text, ranges=True))


def _generator(key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))


@dataclass(frozen=True)
class Augmentation:
    """Copy ``copy`` of an augmentation: every kind applied in order (``pick='all'``) or one kind
    (``pick='one'``), values drawn per image."""

    augments: tuple[PerturbRange, ...]
    copy: int = 0
    seed: int = 0
    pick: str = "all"

    @property
    def name(self) -> str:
        """Canonical name, the suffix of this copy's embedding set (``<key>+aug-...-c0``)."""
        seed = f"-s{self.seed}" if self.seed else ""
        one = "one-" if self.pick == "one" else ""
        return f"aug-{one}" + "+".join(a.name for a in self.augments) + f"-c{self.copy}{seed}"

    def draws(self, image_id: str) -> list[Perturbation]:
        """The perturbations this copy applies to image ``image_id``."""
        rng = _generator(f"{self.seed}:{self.copy}:{image_id}")
        if self.pick == "one":
            start = int(_generator(f"{self.seed}:{image_id}").integers(len(self.augments)))
            return [self.augments[(start + self.copy) % len(self.augments)].draw(rng)]
        return [a.draw(rng) for a in self.augments]

    def __call__(self, image: Image.Image, image_id: str | None = None) -> Image.Image:
        if image_id is None:
            raise ValueError("an augmentation draws its values per image: pass the image id")
        for perturbation in self.draws(image_id):
            image = perturbation(image)
        return image


def augmentations(specs: list[str] | tuple[str, ...], copies: int = 1, seed: int = 0,
                  pick: str = "all") -> list[Augmentation]:
    """The ``copies`` augmented copies described by ``specs`` (each as for ``parse_augment``), applying
    every kind to each copy (``pick='all'``) or one (``'one'``)."""
    if pick not in PICKS:
        raise ValueError(f"augment pick must be 'all' (every kind on each copy) or 'one' (one kind per copy), "
                         f"not {pick!r}")
    if not specs:
        raise ValueError("augmentation needs at least one spec, e.g. --augment jpeg:q=30-95")
    if copies < 1:
        raise ValueError(f"copies must be at least 1, not {copies}")
    augments = tuple(parse_augment(s) for s in specs)
    kinds = [a.kind for a in augments]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"each kind may appear once per augmentation, got {', '.join(kinds)}")
    return [Augmentation(augments, copy, seed, pick) for copy in range(copies)]
