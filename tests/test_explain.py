"""Heat maps: Grad-CAM (CNN and transformer) for torch-expressible heads, occlusion for the others."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image, truncated_jpeg
from fitted import fitted
from PIL import Image

from fakedet.cli import cli
from fakedet.explain import Explainer, explain
from fakedet.torch_head import NotExpressible


def half_checker(seed: int, size: int = 128) -> Image.Image:
    """A photo-like image whose left half carries the 'fake' checker pattern."""
    pixels = np.asarray(make_image("smooth", size, seed)).copy()
    pixels[:, : size // 2] = np.asarray(make_image("checker", size, seed))[:, : size // 2]
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    return {head: fitted(root, head, resize="128") for head in ("logreg", "knn")}


@pytest.mark.parametrize("head, method, n", [("logreg", "grad-cam (cnn", 3), ("knn", "occlusion (surrogate", 1)])
def test_heat_map_points_at_the_fake_half(models, head, method, n):
    model = models[head]
    explainer = Explainer(model.detector, model.backbone)
    assert explainer.method.startswith(method)
    images = [half_checker(seed) for seed in range(n)]
    explanations = explainer(images)
    for explanation in explanations:
        heat = explanation.heatmap
        assert heat.shape == (128, 128) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1 + 1e-6
        assert heat[:, :64].mean() > 3 * heat[:, 64:].mean() + 0.01
        assert explanation.image.shape == (128, 128, 3)
        assert explanation.overlay().size == (128, 128)
    # the reported P(fake) is predict's
    expected = model.detector.p_fake(model.backbone.embed_images(images))
    assert np.allclose([e.p_fake for e in explanations], expected)


def test_grad_cam_refused_for_a_head_without_gradients(models):
    with pytest.raises(NotExpressible, match="nearest-neighbour"):
        Explainer(models["knn"].detector, models["knn"].backbone, method="grad-cam")


def test_transformer_grad_cam_on_tiny_clip(tmp_path, tiny_clip):
    model = fitted(tmp_path, "logreg", spec=f"clip:{tiny_clip}:random", resize="backbone")
    explanations = explain(model.detector, [make_image("checker", 48, 1), make_image("smooth", 48, 2)], model.backbone)
    assert all(e.method.startswith("grad-cam (transformer") for e in explanations)
    size = model.backbone.preprocess.size
    for e in explanations:
        assert e.heatmap.shape == (size, size) and np.isfinite(e.heatmap).all()
    assert any(e.heatmap.max() > 0 for e in explanations)


def test_cli_explain_writes_overlay_and_map(models, tmp_path):
    model_dir = models["logreg"].detector.save(tmp_path / "model")
    good = tmp_path / "left fake.png"
    half_checker(0).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(truncated_jpeg())
    out = tmp_path / "maps"
    result = CliRunner().invoke(cli, ["explain", str(model_dir), str(good), str(bad), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 heat maps" in result.output and "broken.jpg" in result.output
    assert Image.open(out / "left_fake.png").size == (128, 128)
    assert np.load(out / "left_fake.npy").shape == (128, 128)
    assert sorted(p.name for p in out.iterdir()) == ["left_fake.npy", "left_fake.png"]


def test_grad_cam_with_two_scales_follows_the_full_resolution_pass(tmp_path):
    model = fitted(tmp_path, "logreg", resize="128", scales="1,0.5")
    for explanation in explain(model.detector, [half_checker(0), half_checker(1)], model.backbone):
        assert explanation.heatmap.shape == (128, 128)
        assert explanation.heatmap[:, :64].mean() > 3 * explanation.heatmap[:, 64:].mean() + 0.01
