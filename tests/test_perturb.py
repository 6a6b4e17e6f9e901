"""Perturbations for robustness evaluation: parsing, names, effects."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image

from fakedet.perturb import Perturbation, augmentations, parse_augment, parse_perturbation


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


@pytest.mark.parametrize("text, name", [
    ("jpeg:q=30-95", "jpeg-q30-95"), ("blur:sigma=0-2", "blur-sigma0-2"), ("resize:0.5-1", "resize-scale0.5-1"),
    ("jpeg:75", "jpeg-q75"), ("blur:0 - 1.5", "blur-sigma0-1.5"),
])
def test_parse_augment(text, name):
    assert parse_augment(text).name == name


@pytest.mark.parametrize("text", ["jpeg:q=0-50", "jpeg:q=90-30", "blur:0", "blur:0-0", "resize:0-1", "resize:1-5",
                                  "gamma:1-2", "jpeg:q=30-", "blur:-1-2"])
def test_parse_augment_rejects(text):
    with pytest.raises(ValueError):
        parse_augment(text)


def test_ranges_are_refused_where_a_fixed_value_is_needed():
    with pytest.raises(ValueError, match="jpeg:q=75"):
        parse_perturbation("jpeg:q=30-95")


def test_augmentation_draws_per_image_reproducibly():
    copies = augmentations(["jpeg:q=30-95", "blur:sigma=0-2", "resize:0.5-1"], copies=2, seed=0)
    assert [c.name for c in copies] == ["aug-jpeg-q30-95+blur-sigma0-2+resize-scale0.5-1-c0",
                                        "aug-jpeg-q30-95+blur-sigma0-2+resize-scale0.5-1-c1"]
    first, second = copies
    draws = [first.draws(f"id{i}") for i in range(200)]
    assert draws[0] == first.draws("id0")                       # same image, same copy: same values
    assert first.draws("id0") != second.draws("id0")            # another copy draws anew
    q = np.array([d[0].value for d in draws])
    sigma = np.array([d[1].value for d in draws])
    scale = np.array([d[2].value for d in draws])
    assert q.min() >= 30 and q.max() <= 95 and np.all(q == np.round(q)) and q.std() > 10
    assert sigma.min() >= 0 and sigma.max() <= 2 and scale.min() >= 0.5 and scale.max() <= 1
    assert augmentations(["jpeg:q=30-95"], seed=1)[0].draws("id0") != augmentations(["jpeg:q=30-95"])[0].draws("id0")
    image = make_image("noise", 64, seed=0)
    out = first(image, "id3")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(first(image, "id3")))
    assert out.size == (round(64 * scale[3]),) * 2
    with pytest.raises(ValueError, match="image id"):
        first(image)


def test_one_kind_per_copy_gives_each_image_every_kind_in_turn():
    specs = ["jpeg:q=30-95", "blur:sigma=0-2", "resize:0.5-1"]
    copies = augmentations(specs, copies=6, seed=0, pick="one")
    assert copies[0].name == "aug-one-jpeg-q30-95+blur-sigma0-2+resize-scale0.5-1-c0"
    assert augmentations(specs)[0].name != copies[0].name  # its own cached sets
    kinds = [[c.draws(f"id{i}") for c in copies] for i in range(60)]
    for per_image in kinds:
        assert all(len(d) == 1 for d in per_image)
        names = [d[0].kind for d in per_image]
        assert sorted(names) == sorted(["jpeg", "blur", "resize"] * 2) and names[:3] == names[3:]  # in turn
    assert len({per_image[0][0].kind for per_image in kinds}) == 3  # the starting kind differs per image
    assert kinds[5] == [c.draws("id5") for c in copies]  # reproducible
    scales = [d[0].value for per_image in kinds for d in per_image if d[0].kind == "resize"]
    assert min(scales) >= 0.5 and max(scales) <= 1 and np.std(scales) > 0.05
    image = make_image("noise", 64, seed=0)
    resized = next(c for c in copies if c.draws("id1")[0].kind == "resize")
    assert resized(image, "id1").size == (round(64 * resized.draws("id1")[0].value),) * 2


@pytest.mark.parametrize("specs, copies, message", [
    ([], 1, "at least one spec"), (["jpeg:q=30-95"], 0, "copies"), (["blur:0-1", "blur:1-2"], 1, "once"),
])
def test_augmentations_rejects(specs, copies, message):
    with pytest.raises(ValueError, match=message):
        augmentations(specs, copies)
    with pytest.raises(ValueError, match="pick must be 'all'"):
        augmentations(["jpeg:q=30-95"], pick="some")
