"""Decode image bytes safely: header checks before pixels, a pixel limit, 8-bit RGB out.

Every caller that turns file bytes into pixels (extraction, fine-tuning, the report, the server)
goes through :func:`decode_image`, so a corrupt, truncated or oversized file fails the same way
everywhere: with :class:`ImageDecodeError` and a short reason.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; the message is a short reason."""


def _open_header(data: bytes) -> ImageFile.ImageFile:
    """Open an image from bytes, reading only its header; ImageDecodeError if impossible."""
    if not data:
        raise ImageDecodeError("empty file")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as exc:
        return _open_over_pillow_limit(data, exc)
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise ImageDecodeError(f"bad header: {exc}") from exc


def _open_over_pillow_limit(data: bytes, exc: Exception) -> ImageFile.ImageFile:
    """Open an image that Image.open refused as too large, so its size can be reported.

    Mirrors Image.open's plugin loop without its pixel check; callers apply their own limit.
    """
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = not accept or accept(prefix)
        if not accepted or isinstance(accepted, str):
            continue
        try:
            return factory(io.BytesIO(data), "")
        except Exception:  # not this format, or the plugin checks the size itself
            continue
    raise ImageDecodeError(f"decompression bomb ({exc})") from exc


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageDecodeError(f"decompression bomb ({width} x {height} pixels)")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Fully decode an opened image, apply EXIF orientation and convert it to 8-bit RGB.

    Transparent images are flattened onto white; 16-bit grayscale is scaled to 8 bits.
    """
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode.startswith("I"):  # I;16*, I: assume 16-bit samples when > 255
            values = np.asarray(image).astype(np.int64)
            if values.max(initial=0) > 255:
                values = values.clip(0, 65535) >> 8
            image = Image.fromarray(values.clip(0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # truncated or corrupt data, unsupported mode, broken EXIF
        raise ImageDecodeError(f"cannot decode: {exc}") from exc


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fully decode image bytes to an RGB PIL image.

    Raises ImageDecodeError for empty files, non-images, truncated or corrupt data and images
    with more than ``max_pixels`` pixels (checked from the header, before decoding).
    Truncated files are never padded: Pillow's LOAD_TRUNCATED_IMAGES is left untouched.
    """
    with _open_header(data) as image:
        _check_pixels(image.size, max_pixels)
        return _to_rgb(image)


def describe(data: bytes, decode: bool) -> tuple[str, int, int, str]:
    """(format, width, height, error) of image bytes; decode=True also decodes the pixels."""
    fmt, width, height = "", -1, -1
    try:
        with _open_header(data) as image:
            fmt, (width, height) = image.format or "", image.size
            _check_pixels(image.size, MAX_PIXELS)
            if decode:
                _to_rgb(image)
    except ImageDecodeError as exc:
        return fmt, width, height, str(exc)
    return fmt, width, height, ""
