"""Backbone registry: bundled weights, timm checkpoints, tiny open_clip models, fingerprints, errors."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from conftest import make_image
from PIL import Image
from safetensors.torch import save_file

from fakedet.backbone_config import BackboneConfig, BackboneError, parse_resize, parse_scales, short_spec
from fakedet.backbone_families import load_clip_model
from fakedet.backbones import create_backbone
from fakedet.image_input import Preprocess


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("effnet-lite0", resize="64", precision="fp32", device="cpu")


def test_effnet_lite0_bundled_weights(lite0):
    assert lite0.dim == 1280 and lite0.family == "effnet-lite"
    a, b = make_image("smooth", 48, seed=1), make_image("checker", 48, seed=2)
    X = lite0.embed_images([a, b, a])
    assert X.shape == (3, 1280) and np.isfinite(X).all()
    np.testing.assert_array_equal(X[0], X[2])  # same image, same embedding
    assert np.abs(X[0] - X[1]).max() > 0.1  # different images differ


def test_effnet_lite0_weights_are_pretrained_not_random(lite0):
    """Trained batch-norm statistics, not the fresh-init zeros and ones, are loaded."""
    bn = lite0.model.trunk.bn1
    assert bn.running_mean.abs().mean() > 0.01 and (bn.running_var - 1).abs().mean() > 0.01
    fresh = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert not torch.equal(fresh.conv_stem.weight, lite0.model.trunk.conv_stem.weight.cpu())


def test_multi_layer_features(lite0):
    multi = create_backbone("effnet-lite0", layers="multi", resize="64", precision="fp32", device="cpu")
    # stage channels 16+24+40+112+320, mean and std each, plus the 1280-d final embedding
    assert multi.dim == 2 * (16 + 24 + 40 + 112 + 320) + 1280
    image = make_image("smooth", 64, seed=3)
    np.testing.assert_allclose(multi.embed_images([image])[0, -1280:], lite0.embed_images([image])[0], atol=1e-4)
    assert multi.fingerprint != lite0.fingerprint and ".multi" in multi.key


def test_every_block_features_contain_the_stage_features():
    """``blocks``: stem + all 16 blocks of lite0; the 5 stage outputs of ``multi`` are among them."""
    multi = create_backbone("effnet-lite0", layers="multi", resize="64", precision="fp32", device="cpu")
    blocks = create_backbone("effnet-lite0", layers="blocks", resize="64", precision="fp32", device="cpu")
    channels = [32, 16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    assert blocks.dim == 2 * sum(channels) + 1280
    starts = np.cumsum([0] + [2 * c for c in channels])
    stage_ends = [1, 3, 5, 11, 16]  # blocks that end the 16-, 24-, 40-, 112- and 320-channel stages
    columns = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in stage_ends] + [np.arange(-1280, 0)])
    images = [make_image("smooth", 64, seed=3), make_image("checker", 40, seed=4)]
    np.testing.assert_allclose(blocks.embed_images(images)[:, columns], multi.embed_images(images), atol=1e-4)
    assert blocks.fingerprint != multi.fingerprint and ".blocks" in blocks.key


def test_scales_concatenate_the_features_of_each_scale(lite0):
    both = create_backbone("effnet-lite0", resize="64", scales="1,0.5", precision="fp32", device="cpu")
    assert both.dim == 2 * 1280 and ".x1-0.5" in both.key and both.identity["scales"] == [1.0, 0.5]
    image = make_image("smooth", 64, seed=3)
    X = both.embed_images([image])[0]
    np.testing.assert_allclose(X[:1280], lite0.embed_images([image])[0], atol=1e-4)
    with torch.inference_mode():
        x = (lite0.to_input(lite0.preprocess(image)[None]) - lite0.model.mean) / lite0.model.std
        half = lite0.model.final(torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True))
    np.testing.assert_allclose(X[1280:], half[0].numpy(), atol=1e-4)
    assert np.abs(X[1280:] - X[:1280]).max() > 0.1
    # the default adds nothing to the identity: fingerprints made before the option stay valid
    assert "scales" not in lite0.identity
    assert create_backbone("effnet-lite0", resize="64", scales="1", precision="fp32", device="cpu").key == lite0.key


def test_flip_tta_averages_the_image_and_its_mirror(lite0):
    tta = create_backbone("effnet-lite0", resize="64", scales="1,0.5", tta="flip", precision="fp32", device="cpu")
    plain = create_backbone("effnet-lite0", resize="64", scales="1,0.5", precision="fp32", device="cpu")
    assert tta.key.startswith("effnet-lite0.resize64.x1-0.5.flip-") and tta.identity["tta"] == "flip"
    assert tta.fingerprint != plain.fingerprint and "tta" not in plain.identity and tta.dim == plain.dim
    image = make_image("checker", 64, seed=4)
    mirror = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    X, X_mirror = tta.embed_images([image]), tta.embed_images([mirror])
    np.testing.assert_allclose(X, X_mirror, atol=1e-4)  # a mirrored image embeds the same
    np.testing.assert_allclose(X, plain.embed_images([image, mirror]).mean(0, keepdims=True), atol=1e-4)
    assert np.abs(plain.embed_images([image]) - X).max() > 1e-2
    config = tta.config
    assert config.tta == "flip" and "--tta flip" in config.options()
    assert BackboneConfig.from_dict(config.to_dict()) == config
    assert BackboneConfig.from_identity(tta.spec, tta.identity).tta == "flip"
    with pytest.raises(ValueError, match="tta must be one of none, flip"):
        BackboneConfig(tta="rotate")


@pytest.mark.parametrize("bad", ["0", "1,1", "a", "5", "1,-0.5"])
def test_bad_scales_are_refused(bad):
    with pytest.raises(ValueError, match="scales"):
        parse_scales(bad)


def test_fingerprint_tracks_everything_that_changes_numbers(lite0):
    same = create_backbone("effnet-lite0", resize="64", precision="fp32", device="cpu")
    assert same.fingerprint == lite0.fingerprint and same.key == lite0.key
    others = [
        create_backbone("effnet-lite0", resize="96", precision="fp32", device="cpu"),
        create_backbone("effnet-lite0", resize="64", interpolation="nearest", precision="fp32", device="cpu"),
        create_backbone("effnet-lite0", resize="64", precision="bf16", device="cpu"),
        create_backbone("effnet-lite0", resize="pad:64", precision="fp32", device="cpu"),
    ]
    assert len({lite0.fingerprint, *(o.fingerprint for o in others)}) == 5


def test_parse_resize():
    assert parse_resize("backbone") == ("backbone", None)
    assert parse_resize("128") == ("resize", 128) and parse_resize(96) == ("resize", 96)
    assert parse_resize("pad") == ("pad", None) and parse_resize("pad:64") == ("pad", 64)
    for bad in ("big", "resize", "pad:x"):
        with pytest.raises(ValueError):
            parse_resize(bad)


def test_preprocess_policies():
    image = make_image("smooth", (40, 20), seed=0)
    for policy, size in (("resize", 32), ("backbone", 32), ("pad", 64)):
        out = Preprocess(size=size, policy=policy, crop_pct=0.875)(image)
        assert out.shape == (3, size, size) and out.dtype == torch.uint8
    padded = Preprocess(size=64, policy="pad")(image)
    assert (padded[:, 0, 0] == 128).all()  # mean-colour border
    np.testing.assert_array_equal(padded[:, 22:42, 12:52].permute(1, 2, 0).numpy(), np.asarray(image))


def test_timm_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_convnext", pretrained=False)
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    backbone = create_backbone("timm:test_convnext", checkpoint=path, precision="fp32", device="cpu")
    model.reset_classifier(0)
    x = torch.rand(2, 3, backbone.preprocess.size, backbone.preprocess.size)
    with torch.inference_mode():
        expected = model.eval()((x - 0.5) / 0.5 if backbone.preprocess.mean == (0.5,) * 3 else
                                (x - torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1))
                                / torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1))
        np.testing.assert_allclose(backbone.model(x).numpy(), expected.numpy(), atol=1e-5)
    bad = tmp_path / "bad.safetensors"
    save_file({"nonsense": torch.zeros(2)}, str(bad))
    with pytest.raises(BackboneError, match="does not fit this model"):
        create_backbone("timm:test_convnext", checkpoint=bad, device="cpu")


def test_tiny_clip_random_and_local_file(tiny_clip, tmp_path):
    torch.manual_seed(0)
    backbone = create_backbone(f"clip:{tiny_clip}:random", precision="fp32", device="cpu")
    assert backbone.dim == 32 and backbone.preprocess.size == 32
    path = tmp_path / "tiny.pt"
    torch.save(load_clip_model(f"{tiny_clip}:random").state_dict(), path)
    a = create_backbone(f"clip:{tiny_clip}:{path}", precision="fp32", device="cpu")
    b = create_backbone(f"clip:{tiny_clip}:{path}", precision="fp32", device="cpu")
    images = [make_image("smooth", 32, seed=i) for i in range(3)]
    Xa, Xb = a.embed_images(images), b.embed_images(images)
    np.testing.assert_array_equal(Xa, Xb)
    assert a.fingerprint == b.fingerprint != backbone.fingerprint
    assert short_spec(a.spec) == f"clip:{tiny_clip}:tiny" and a.key.startswith(f"clip_{tiny_clip}_tiny-")
    multi = create_backbone(f"clip:{tiny_clip}:{path}", layers="multi", precision="fp32", device="cpu")
    assert multi.dim == 2 * 2 * 64 + 32  # 2 blocks x (mean, std) x width 64 + final
    np.testing.assert_allclose(multi.embed_images(images)[:, -32:], Xa, atol=1e-4)
    blocks = create_backbone(f"clip:{tiny_clip}:{path}", layers="blocks", precision="fp32", device="cpu")
    np.testing.assert_array_equal(blocks.embed_images(images), multi.embed_images(images))  # ViT: already per block


@pytest.mark.parametrize("spec, message", [
    ("nope", "unknown backbone 'nope'"),
    ("effnet-lite7", "only effnet-lite0"),
    ("timm:definitely_not_a_model", "timm has no model"),
    ("clip:NoSuchArch:random", "open_clip has no architecture"),
    ("clip:ViT-B-32", "needs a pretrained tag or a local file"),
    ("clip:ViT-B-32:/no/such/file.pt", "does not exist"),
    ("finetuned:nothing-here", "run `fakedet finetune` first"),
])
def test_bad_specs_fail_clearly(spec, message):
    with pytest.raises(BackboneError, match=message):
        create_backbone(spec, device="cpu")


@pytest.mark.parametrize("spec", ["clip:ViT-B-32:laion2b_s34b_b79k", "timm:convnext_tiny"])
def test_hub_backbone_offline_names_alternatives(spec, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    data = tmp_path / "img.png"
    make_image("smooth", 32).save(data)
    run = subprocess.run(
        [sys.executable, "-m", "fakedet.cli", "extract", str(data), "--backbone", spec, "--cache", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "error: could not" in run.stderr and "effnet-lite0" in run.stderr and "local weights file" in run.stderr
    assert "Traceback" not in run.stderr


def test_multi_layer_features_see_a_low_level_artefact():
    """Faint extra pixel noise (a generator-like trace) is read far better from intermediate stages."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def image(i: int, fake: bool) -> Image.Image:
        pixels = np.asarray(make_image("smooth", 64, seed=i), np.float32)
        if fake:
            pixels = pixels + np.random.default_rng(10_000 + i).normal(0, 5, pixels.shape)
        return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))

    n = 100
    images, y = [image(i, i % 2 == 1) for i in range(2 * n)], np.arange(2 * n) % 2
    scores = {}
    for layers in ("final", "multi"):
        X = create_backbone("effnet-lite0", layers=layers, resize="64", precision="fp32", device="cpu").embed_images(images)
        head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(X[:n], y[:n])
        scores[layers] = head.score(X[n:], y[n:])
    assert scores["multi"] >= 0.85 and scores["multi"] >= scores["final"] + 0.1, scores


def test_backbone_config_presets_and_auto_resize():
    from fakedet.backbone_config import BackboneConfig, auto_resize

    assert auto_resize([32] * 5, [32] * 5)[0] == "resize:128"  # small images are upsampled
    assert auto_resize([256, 256, 300], [256, 250, 400])[0] == "resize:256"  # native size kept
    assert auto_resize([2000, 1000], [1500, 900])[0] == "resize:384"  # capped
    assert auto_resize([0], [0])[0] == "backbone"
    best = BackboneConfig.preset("best")
    assert (best.layers, best.scales, best.resize) == ("blocks", (1.0, 0.5), "auto")
    assert BackboneConfig.preset("best", resize="64", layers="final").resize == "resize:64"
    chosen, note = best.for_images([32, 32], [32, 32])
    assert chosen.resize == "resize:128" and "32 px" in note
    assert BackboneConfig.from_dict(chosen.to_dict()) == chosen
    with pytest.raises(ValueError, match="preset"):
        BackboneConfig.preset("slow")
    with pytest.raises(ValueError, match="auto"):
        create_backbone(best, device="cpu")
