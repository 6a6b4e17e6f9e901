"""Perturbations for robustness evaluation: parsing, names, effects."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image

from fakedet.perturb import Perturbation, parse_perturbation


@pytest.mark.parametrize("text, kind, value, name", [
    ("jpeg:q=75", "jpeg", 75, "jpeg-q75"), ("jpeg:75", "jpeg", 75, "jpeg-q75"),
    ("blur:sigma=1", "blur", 1, "blur-sigma1"), ("blur:0.5", "blur", 0.5, "blur-sigma0.5"),
    ("resize:0.5", "resize", 0.5, "resize-scale0.5"), ("resize:scale=2", "resize", 2, "resize-scale2"),
])
def test_parse(text, kind, value, name):
    p = parse_perturbation(text)
    assert (p.kind, p.value, p.name) == (kind, value, name)


@pytest.mark.parametrize("text", ["jpeg", "jpeg:q=0", "jpeg:q=101", "blur:0", "gamma:2", "blur:q=1", "resize:-1"])
def test_parse_rejects(text):
    with pytest.raises(ValueError):
        parse_perturbation(text)


def test_effects_are_real_and_deterministic():
    image = make_image("noise", 64, seed=0)
    pixels = np.asarray(image, np.float32)
    for p in (Perturbation("jpeg", 30), Perturbation("blur", 2)):
        out = p(image)
        assert out.size == image.size and out.mode == "RGB"
        assert np.abs(np.asarray(out, np.float32) - pixels).mean() > 5  # noise does not survive either
        np.testing.assert_array_equal(np.asarray(out), np.asarray(p(image)))
    blurred = np.asarray(Perturbation("blur", 2)(image), np.float32)
    assert blurred.std() < pixels.std() / 2
    assert Perturbation("resize", 0.5)(image).size == (32, 32)
