"""torch_head (sklearn heads as torch modules) and ONNX export with parity checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fitted import fitted, fused

from fakedet import onnx_runtime
from fakedet.cli import cli
from fakedet.export import export_onnx, onnx_parity, preprocessed_batch, probe_images
from fakedet.heads import make_head
from fakedet.torch_head import NotExpressible, detector_module, torch_head
from fakedet.workflow import fit


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 12)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.5 * rng.normal(size=240) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("head, preprocess", [
    ("logreg", None), ("linsvm", None), ("mlp", None), ("logreg", "l2,standard,pca:5"),
    ("linsvm", "pca:4"), ("mlp", "l2,standard"), ("logreg", "none"),
])
def test_torch_head_matches_sklearn(embeddings, head, preprocess):
    X, y = embeddings
    params = {"max_iter": 50} if head == "mlp" else None
    pipeline = make_head(head, params, preprocess).fit(X, y)
    module = torch_head(pipeline)
    with torch.no_grad():
        p = module(torch.from_numpy(X)).numpy()
        module.score = True
        score = module(torch.from_numpy(X)).numpy()
    expected = pipeline.predict_proba(X)[:, 1]
    assert np.abs(p - expected).max() < 1e-5
    assert np.allclose(1 / (1 + np.exp(-score)), expected, atol=1e-5)  # the score is P(fake)'s logit


@pytest.mark.parametrize("head, words", [("knn", "nearest-neighbour"), ("svm", "RBF SVM"), ("centroid", "centroid")])
def test_heads_without_torch_form_are_refused_with_the_reason(embeddings, head, words):
    X, y = embeddings
    with pytest.raises(NotExpressible, match=words):
        torch_head(make_head(head).fit(X, y))


@pytest.fixture(scope="module")
def multiscale(tmp_path_factory):
    """linsvm on every-block, two-scale effnet-lite0 features (the richest graph to export)."""
    return fitted(tmp_path_factory.mktemp("export"), "linsvm", layers="blocks", scales="1,0.5")


def test_export_parity_on_100_images(multiscale, tmp_path):
    detector, backbone = multiscale.detector, multiscale.backbone
    path = export_onnx(detector, tmp_path / "model.onnx", backbone)
    images = probe_images(100)
    parity = onnx_parity(detector, path, images, backbone)
    assert parity["n"] == 100 and parity["max_abs_diff"] <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert float(meta["threshold"]) == detector.threshold and meta["fingerprint"] == detector.fingerprint
    # the torch module the graph came from scores like predict (fp32 backbone + sklearn head)
    x = torch.from_numpy(preprocessed_batch(backbone.preprocess, images[:16]))
    with torch.inference_mode():
        p_module = detector_module(detector, backbone)(x).numpy()
    p_sklearn = detector.p_fake(backbone.embed_images(images[:16]))
    assert np.abs(p_module - p_sklearn).max() <= 1e-4
    assert len(set(np.round(p_sklearn, 3))) > 1  # not a constant output


def test_cli_export_writes_a_checked_file_and_refuses_knn(tmp_path_factory, multiscale, tmp_path):
    model = multiscale.detector.save(tmp_path / "model")
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["export", str(model), "--out", str(out), "--check", "8",
                                      "--check-data", str(multiscale.data)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000 and "parity on 8 images" in result.output

    knn = fitted(tmp_path_factory.mktemp("knn"), "knn")
    result = CliRunner().invoke(cli, ["export", str(knn.detector.save(tmp_path / "knn")), "--out",
                                      str(tmp_path / "knn.onnx")])
    assert result.exit_code == 2 and "nearest-neighbour" in result.output
    assert not (tmp_path / "knn.onnx").exists()


def test_cli_export_without_the_onnx_extra_exits_2_with_the_install_command(multiscale, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: "onnxscript")
    model = multiscale.detector.save(tmp_path / "model")
    result = CliRunner().invoke(cli, ["export", str(model), "--out", str(tmp_path / "model.onnx")])
    assert result.exit_code == 2 and 'pip install "fakedet[onnx]"' in result.output and "onnxscript" in result.output
    assert not (tmp_path / "model.onnx").exists()


def test_a_stacked_fused_model_is_one_graph_with_an_input_per_geometry(tmp_path):
    import onnx
    import onnxruntime as ort

    model = fused(tmp_path, "stack", sizes=("64", "48", "64"))  # the third set repeats the first's geometry
    detector, backbone = model.detector, model.backbone
    path = export_onnx(detector, tmp_path / "fused.onnx", backbone)
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == ["images_0", "images_1"]
    inputs = json.loads({p.key: p.value for p in graph.metadata_props}["inputs"])
    assert [(i["name"], i["size"]) for i in inputs] == [("images_0", 64), ("images_1", 48)]
    images = probe_images(12)
    feeds = {i["name"]: preprocessed_batch(part.preprocess, images)
             for i, part in zip(inputs, backbone.backbones)}
    p_onnx = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["p_fake"], feeds)[0]
    p_model = detector.p_fake(backbone.embed_images(images))  # the mean of the three sets' heads
    assert np.abs(p_onnx - p_model).max() <= 1e-4 and len(set(np.round(p_model, 3))) > 1
    assert onnx_parity(detector, path, images, backbone)["max_abs_diff"] <= 1e-4

    saved = detector.save(tmp_path / "m")
    result = CliRunner().invoke(cli, ["export", str(saved), "--out", str(tmp_path / "cli.onnx"), "--check", "4",
                                      "--cache", str(model.cache)])
    assert result.exit_code == 0, result.output
    assert "images_0: float32 (B, 3, 64, 64)" in result.output and "images_1: float32 (B, 3, 48, 48)" in result.output
    assert "parity on 4 generated images" in result.output


def test_a_concatenated_fused_model_is_one_graph_of_every_backbone_and_its_one_head(tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort

    from fakedet import scoring

    model = fused(tmp_path, "concat", sizes=("64", "48"), head="mlp")  # a per-set standard step, then one head
    detector, backbone = model.detector, model.backbone
    path = export_onnx(detector, tmp_path / "concat.onnx", backbone)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["images_0", "images_1"]
    images = probe_images(12)
    feeds = {f"images_{i}": preprocessed_batch(part.preprocess, images) for i, part in enumerate(backbone.backbones)}
    p_onnx = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["p_fake"], feeds)[0]
    p_model = detector.p_fake(backbone.embed_images(images))  # one head over both sets' columns
    assert np.abs(p_onnx - p_model).max() <= 1e-4 and len(set(np.round(p_model, 3))) > 1

    knn = fit(model.data, detector.key.split("+"), "knn", fusion="concat", cache=model.cache)
    monkeypatch.setattr(scoring, "member_backbone", lambda *a, **k: pytest.fail("built a backbone"))
    result = CliRunner().invoke(cli, ["export", str(knn.save(tmp_path / "knn")), "--out", str(tmp_path / "knn.onnx"),
                                      "--cache", str(model.cache)])
    assert result.exit_code == 2 and "nearest-neighbour" in result.output and not (tmp_path / "knn.onnx").exists()


def test_an_ensemble_of_two_heads_on_one_set_exports(tmp_path):
    from fakedet.ensemble import ensemble
    from fakedet.scoring import backbone_for

    a = fitted(tmp_path, "logreg")
    other = fit(a.data, a.detector.key, "logreg", params={"C": 0.01}, cache=a.cache)
    model = ensemble([a.detector, other])
    backbone = backbone_for(model, device="cpu", cache=a.cache)
    path = export_onnx(model, tmp_path / "two-heads.onnx", backbone)
    images = probe_images(8)
    assert onnx_parity(model, path, images, backbone)["max_abs_diff"] <= 1e-4
    p_model = model.p_fake(backbone.embed_images(images))  # the mean of the two heads on the one set
    features = a.backbone.embed_images(images)
    np.testing.assert_allclose(p_model, (a.detector.p_fake(features) + other.p_fake(features)) / 2, atol=1e-5)
