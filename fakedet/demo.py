"""A small synthetic labelled dataset that fakedet generates itself, for the end-to-end demo.

These are NOT photographs: "real" images are smooth random colour fields with sensor-like
noise saved as JPEG; "fake" images are the same kind of content rendered at a quarter of the
resolution and upsampled (the periodic interpolation traces that generators leave), plus a faint
checkerboard. It exists so that the whole pipeline runs offline on any machine; use real data
(CIFAKE, faces) for numbers that mean something.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def synthetic_image(fake: bool, size: int = 64, seed: int = 0) -> Image.Image:
    """One synthetic image: smooth random field (+ noise) for real, upsampled field for fake."""
    rng = np.random.default_rng(seed)
    low = size // 4 if fake else size
    coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
    field = Image.fromarray(coarse).resize((low, low), Image.Resampling.BICUBIC)
    field = field.filter(ImageFilter.GaussianBlur(radius=low / 16))
    pixels = np.asarray(field, dtype=np.float32)
    pixels += rng.normal(0, 6.0, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if fake:
        image = image.resize((size, size), Image.Resampling.NEAREST)
        grid = (np.indices((size, size)).sum(axis=0) % 2)[..., None] * 6.0
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + grid, 0, 255).astype(np.uint8))
    return image


def make_demo_dataset(root: str | Path, n_per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/{train,test}/{real,fake}/*.jpg`` (75% / 25%); returns ``root``. Idempotent."""
    root = Path(root)
    for label, fake in (("real", False), ("fake", True)):
        for i in range(n_per_class):
            split = "train" if i < n_per_class * 3 // 4 else "test"
            path = root / split / label / f"{label}_{i:04d}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                synthetic_image(fake, size, seed=seed * 1_000_003 + i * 2 + fake).save(path, quality=90)
    return root


def run_demo(root: str | Path, cache=None, progress: bool = True, echo=print) -> Path:
    """The README's end-to-end job on the synthetic demo set: extract, fit, evaluate, report.

    Returns the report written."""
    from .catalog import model_dir, model_name
    from .extract import extract
    from .metrics import format_metrics
    from .workflow import fit, report
    from .scoring import evaluate

    root = make_demo_dataset(root)
    echo(f"demo images (synthetic, not photographs): {root}")
    result = extract(root, "effnet-lite0", cache=cache, progress=progress)
    echo(result.summary())
    detector = fit(root, result.key, "logreg", cache=cache)
    directory = detector.save(model_dir(model_name(detector), cache))
    echo(f"model (logreg, threshold chosen on val): {directory}")
    evaluation = evaluate(detector)
    echo(f"[{evaluation.name}]\n{format_metrics(evaluation.metrics)}")
    page = report(root, result.key, directory, cache=cache, command="fakedet demo")
    echo(f"report: {page}")
    return page
