"""Heat maps: Grad-CAM (CNN and transformer) for torch-expressible heads, occlusion for the others."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image, truncated_jpeg
from fitted import fitted, fused
from PIL import Image

from fakedet.cli import cli
from fakedet.explain import Explainer, MeanExplainer, explain, explainer_for
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


def test_a_stacked_fused_model_is_explained_by_the_mean_of_its_sets_maps(tmp_path):
    model = fused(tmp_path, "stack", sizes=("128", "96"))
    explainer = explainer_for(model.detector, model.backbone)
    assert isinstance(explainer, MeanExplainer) and explainer.method == "mean over its sets of grad-cam (cnn, " \
        "fake score of the logreg head)"
    images = [half_checker(seed) for seed in range(2)]
    explanations = explainer(images)
    expected = model.detector.p_fake(model.backbone.embed_images(images))  # the fused model's P(fake)
    assert np.allclose([e.p_fake for e in explanations], expected, atol=1e-6)
    members = [Explainer(voter, backbone)(images) for voter, backbone in
               zip(model.detector.voters(), model.backbone.backbones)]
    assert members[1][0].heatmap.shape == (96, 96)
    for i, e in enumerate(explanations):
        assert e.heatmap.shape == (128, 128) and e.image.shape == (128, 128, 3)  # the first set's input
        assert 0 <= e.heatmap.min() and e.heatmap.max() <= 1 + 1e-6
        assert np.allclose(e.heatmap.mean(), np.mean([m[i].heatmap.mean() for m in members]), atol=0.02)
        assert e.heatmap[:, :64].mean() > 3 * e.heatmap[:, 64:].mean() + 0.01  # still the fake half
    concat = fused(tmp_path, "concat", sizes=("128", "96"))
    with pytest.raises(ValueError, match="--fusion concat are not supported"):
        explainer_for(concat.detector, concat.backbone)
    saved = concat.detector.save(tmp_path / "concat-model")
    half_checker(0).save(tmp_path / "x.png")
    result = CliRunner().invoke(cli, ["explain", str(saved), str(tmp_path / "x.png"), "--out", str(tmp_path / "maps")])
    assert result.exit_code == 2 and "fakedet ensemble" in result.output and not (tmp_path / "maps").exists()


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
