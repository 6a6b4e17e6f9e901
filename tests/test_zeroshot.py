"""Zero-shot CLIP baseline: score arithmetic, prompt handling, end to end with a tiny CLIP."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import layout_files, write_tree

from fakedet.backbone_config import BackboneError
from fakedet.backbone_families import load_clip_model
from fakedet.cli import cli
from fakedet.store import Store
from fakedet.zeroshot import DEFAULT_PROMPTS, load_prompts, text_classifier, zero_shot_scores, zeroshot


def test_scores_are_a_softmax_of_scaled_cosines():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])  # real, fake
    images = np.array([[0.0, 3.0], [2.0, 0.0], [1.0, 1.0]])
    p = zero_shot_scores(images, text, scale=10.0)
    # cosines (real, fake): (0, 1), (1, 0), (.707, .707) -> sigmoid(10 * (fake - real))
    np.testing.assert_allclose(p, [1 / (1 + np.exp(-10)), 1 / (1 + np.exp(10)), 0.5], rtol=1e-9)


def test_prompts(tmp_path):
    assert load_prompts() == DEFAULT_PROMPTS
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"fake": ["a diffusion render"]}))
    assert load_prompts(path) == {"real": DEFAULT_PROMPTS["real"], "fake": ["a diffusion render"]}
    assert load_prompts(path, real=["a snapshot"])["real"] == ["a snapshot"]
    path.write_text(json.dumps({"fake": []}))
    with pytest.raises(ValueError, match="non-empty"):
        load_prompts(path)
    path.write_text(json.dumps({"other": ["x"]}))
    with pytest.raises(ValueError, match="'real' and 'fake'"):
        load_prompts(path)


def test_refuses_non_clip_and_random():
    with pytest.raises(BackboneError, match="needs a CLIP backbone"):
        text_classifier("effnet-lite0", DEFAULT_PROMPTS)
    with pytest.raises(BackboneError, match="trained CLIP weights"):
        text_classifier("clip:ViT-B-32:random", DEFAULT_PROMPTS)


@pytest.fixture()
def tiny_clip_file(tiny_clip, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(load_clip_model(f"{tiny_clip}:random").state_dict(), path)
    return f"clip:{tiny_clip}:{path}"


def test_zeroshot_end_to_end_uses_the_cache(tmp_path, tiny_clip_file):
    data = write_tree(tmp_path / "d", layout_files({"val/real": 3, "val/fake": 3, "test/real": 4, "test/fake": 4}))
    result = zeroshot(data, tiny_clip_file, cache=tmp_path / "c", split="test", device="cpu", workers=0)
    assert result.metrics["n"] == 8 and len(result.predictions) == 8
    assert set(result.predictions["split"]) == {"test"}
    assert ((result.predictions["p_fake"] > 0) & (result.predictions["p_fake"] < 1)).all()
    assert 0 <= result.metrics["threshold"] <= 1
    # the same scores a second time, from cached image embeddings (no new rows)
    again = zeroshot(data, tiny_clip_file, cache=tmp_path / "c", split="test", device="cpu", workers=0)
    np.testing.assert_allclose(again.predictions["p_fake"], result.predictions["p_fake"])
    assert Store(tmp_path / "c" / "d.h5").embedding_sets().loc[0, "count"] == 14
    out = CliRunner().invoke(cli, ["zeroshot", str(data), "-b", tiny_clip_file, "--cache", str(tmp_path / "c"),
                                   "--fake-prompt", "a fake", "--out", str(tmp_path / "m.json"), "-q",
                                   "--device", "cpu", "--workers", "0"])
    assert out.exit_code == 0, out.output
    assert "zero-shot" in out.output and "accuracy" in out.output
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["prompts"]["fake"] == ["a fake"] and saved["metrics"]["n"] == 14
