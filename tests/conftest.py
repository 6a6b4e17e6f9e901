"""Shared test helpers: small synthetic image datasets generated on the fly (no external data).

Plain helpers (import with ``from conftest import make_image``; tests/ has no __init__.py,
so pytest puts tests/ on sys.path):

- ``make_image(kind, size, seed)``: a deterministic RGB PIL image. Kinds: "smooth"
  (low-frequency colour waves plus mild noise, photo-like), "checker" (a periodic grid,
  like upsampling artefacts) and "noise" (uniform pixel noise).
- ``encode_image(image, fmt)``: image -> file bytes ("JPEG", "PNG", ...).
- ``layout_files(layout, ext, size)``: ``{relative path: bytes}`` for a layout
  ``{folder: number of images}``. Images under a real class folder (real, 0_real, any case)
  are "smooth", under a fake one "checker", elsewhere "noise", so real and fake are easy to
  separate. Every file has different pixels, but names repeat across folders
  ("0000.jpg"), as in CIFAKE. ``ext`` may be a tuple to alternate formats.
- ``write_tree(root, files)`` / ``write_zip(path, files)``: write such a dict to a folder
  tree or to a stored zip archive (with directory entries, as zip tools write them).
- ``truncated_jpeg()``: a JPEG cut short (header parses, decoding fails).
- ``bomb_png(width, height)``: a tiny PNG whose header claims ``width x height`` pixels.

Fixtures (factories writing under ``tmp_path``; both return the written path):

- ``image_tree(layout=CIFAKE_LAYOUT, name="data", ext="jpg", size=(32, 32))``: a folder.
- ``image_zip(layout=CIFAKE_LAYOUT, name="data", ext="jpg", size=(32, 32))``: ``name.zip``,
  written directly from memory (no folder tree on disk).
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The suite runs the torch engine unless told otherwise: `--runtime auto` would export and time every
# backbone of every test (tests/test_runtimes.py covers the runtimes explicitly).
os.environ.setdefault("FAKEDET_RUNTIME", "torch")

CIFAKE_LAYOUT = {"train/REAL": 4, "train/FAKE": 4}
FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}
_REAL, _FAKE = {"real", "0_real"}, {"fake", "1_fake"}


def make_image(kind: str = "smooth", size: int | tuple[int, int] = 32, seed: int = 0) -> Image.Image:
    """A deterministic RGB image of the given kind, size (width, height) and seed."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    if kind == "smooth":
        waves = [
            np.sin(2 * np.pi * (rng.uniform(0.3, 1.5, 2) @ [x.ravel(), y.ravel()]) + rng.uniform(0, 6))
            for _ in range(3)
        ]
        pixels = 128 + 90 * np.stack(waves, -1).reshape(height, width, 3)
        pixels += rng.normal(0, 4, pixels.shape)
    elif kind == "checker":
        period = int(rng.integers(2, 5))
        grid = ((np.arange(height)[:, None] // period + np.arange(width) // period) % 2)[..., None]
        base = rng.uniform(40, 215, 3)
        pixels = base + np.where(grid, 35.0, -35.0) + rng.normal(0, 4, (height, width, 3))
    elif kind == "noise":
        pixels = rng.uniform(0, 256, (height, width, 3))
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def encode_image(image: Image.Image, fmt: str = "JPEG", **save_kw) -> bytes:
    """The bytes of ``image`` saved in format ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_kw)
    return buffer.getvalue()


def layout_files(
    layout: dict[str, int] = CIFAKE_LAYOUT,
    ext: str | tuple[str, ...] = "jpg",
    size: int | tuple[int, int] = 32,
) -> dict[str, bytes]:
    """``{relative path: encoded image}`` for ``{folder: count}`` ("" is the top folder)."""
    exts = (ext,) if isinstance(ext, str) else ext
    files = {}
    for folder_index, (folder, count) in enumerate(layout.items()):
        parts = {p.lower() for p in folder.split("/")}
        kind = "smooth" if parts & _REAL else "checker" if parts & _FAKE else "noise"
        for i in range(count):
            suffix = exts[i % len(exts)]
            image = make_image(kind, size, seed=1000 * folder_index + i)
            name = f"{folder}/{i:04d}.{suffix}".lstrip("/")
            files[name] = encode_image(image, FORMATS[suffix.lower()])
    return files


def write_tree(root: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` under ``root``; returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_zip(path: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``{member name: bytes}`` to a stored zip with directory entries; returns ``path``."""
    folders = sorted({name.rsplit("/", 1)[0] + "/" for name in files if "/" in name})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for folder in folders:
            archive.writestr(folder, b"")
        for name, data in files.items():
            archive.writestr(name, data)
    return Path(path)


def truncated_jpeg(size: int = 64, keep: float = 0.6, seed: int = 0) -> bytes:
    """A noise JPEG cut to ``keep`` of its length: the header parses, decoding fails."""
    data = encode_image(make_image("noise", size, seed), "JPEG", quality=95)
    return data[: int(len(data) * keep)]


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking 8-bit RGB PNG of a few bytes whose header claims width x height."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def image_tree(tmp_path):
    """Factory: write a layout as a folder tree under tmp_path and return the folder."""
    def build(layout: dict[str, int] = CIFAKE_LAYOUT, name: str = "data",
              ext: str | tuple[str, ...] = "jpg", size: int | tuple[int, int] = 32) -> Path:
        return write_tree(tmp_path / name, layout_files(layout, ext, size))
    return build


@pytest.fixture
def image_zip(tmp_path):
    """Factory: write a layout straight into tmp_path/<name>.zip and return the zip path."""
    def build(layout: dict[str, int] = CIFAKE_LAYOUT, name: str = "data",
              ext: str | tuple[str, ...] = "jpg", size: int | tuple[int, int] = 32) -> Path:
        return write_zip(tmp_path / f"{name}.zip", layout_files(layout, ext, size))
    return build


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """Register a tiny randomly initialised open_clip architecture; returns its name."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("clip-config")
    (folder / "fakedet-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    return "fakedet-tiny-clip"
