"""Tests for fakedet.decoding: image bytes to RGB, every failure an ImageDecodeError with a reason."""
import numpy as np
import pytest
from PIL import Image

from conftest import bomb_png, encode_image, make_image, truncated_jpeg
from fakedet.decoding import MAX_PIXELS, ImageDecodeError, decode_image


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 5, "bad header"),
    (b"<html>not an image</html>", "not an image"),
    (truncated_jpeg(), "truncated"),
    (bomb_png(9000, 8000), "decompression bomb (9000 x 8000 pixels)"),
    (bomb_png(100_000, 100_000), "decompression bomb (100000 x 100000 pixels)"),
])
def test_decode_image_errors(data, reason):
    with pytest.raises(ImageDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(data)


def test_decode_image_max_pixels_checked_before_decoding():
    data = encode_image(make_image("noise", (40, 30)), "PNG")
    assert decode_image(data, max_pixels=1200).size == (40, 30)
    with pytest.raises(ImageDecodeError, match=r"decompression bomb \(40 x 30 pixels\)"):
        decode_image(data, max_pixels=1199)
    assert MAX_PIXELS >= 1_000_000
    assert issubclass(ImageDecodeError, ValueError)


def test_decode_image_leaves_pillow_settings_alone():
    from PIL import ImageFile
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for data in (truncated_jpeg(), bomb_png(100_000, 100_000), encode_image(make_image(), "PNG")):
        try:
            decode_image(data, max_pixels=10)
        except ImageDecodeError:
            pass
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


def rgb(image):
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "CMYK", "P"])
def test_decode_image_converts_to_rgb(mode):
    image = make_image("smooth", (16, 12), seed=3).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode_image(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (16, 12)
    tolerance = 12 if fmt == "JPEG" else 0
    assert np.abs(rgb(decoded) - rgb(image)).max() <= tolerance


def test_decode_image_flattens_alpha_onto_white():
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 200           # red, fully transparent in the left half
    pixels[:, 2:, 3] = 255
    decoded = decode_image(encode_image(Image.fromarray(pixels, "RGBA"), "PNG"))
    assert decoded.mode == "RGB"
    assert rgb(decoded)[0, 0].tolist() == [255, 255, 255]
    assert rgb(decoded)[0, 3].tolist() == [200, 0, 0]
    palette = Image.fromarray(pixels, "RGBA").quantize(4)
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert rgb(decode_image(encode_image(palette, "PNG")))[0, 0].tolist() == [255, 255, 255]
    gray_alpha = Image.fromarray(pixels[..., [0, 3]], "LA")
    assert rgb(decode_image(encode_image(gray_alpha, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_decode_image_scales_16_bit_grayscale():
    values = np.array([[0, 256 * 100, 65535, 32768]], np.uint16)
    decoded = decode_image(encode_image(Image.fromarray(values), "PNG"))
    assert rgb(decoded)[0, :, 0].tolist() == [0, 100, 255, 128]


def test_decode_image_applies_exif_orientation():
    image = make_image("smooth", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode_image(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)
