"""Zero-shot baseline: score images against text prompts with a CLIP backbone, no training.

P(fake) is the softmax, at CLIP's own temperature, of the image's cosine similarity to the mean
text embedding of the "fake" prompts versus the "real" prompts. Image embeddings come from the
cache (extracted when missing), so a second run only encodes the prompts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .backbone_config import BackboneError
from .backbone_families import load_clip_model
from .backbones import create_backbone
from .scoring import Evaluation
from .extract import extract
from .metrics import binary_metrics, choose_threshold
from .store import Store

DEFAULT_PROMPTS = {
    "real": ["a real photo", "a photograph taken with a camera", "a real photograph of a scene"],
    "fake": ["an AI-generated image", "a synthetic image made by a generative model", "a computer-generated image"],
}


def load_prompts(path: str | Path | None = None, real: list[str] | None = None,
                 fake: list[str] | None = None) -> dict[str, list[str]]:
    """Prompt sets: defaults, overridden by a JSON file ``{"real": [...], "fake": [...]}`` and by lists."""
    prompts = dict(DEFAULT_PROMPTS)
    if path is not None:
        loaded = json.loads(Path(path).read_text())
        if not isinstance(loaded, dict) or not set(loaded) <= {"real", "fake"}:
            raise ValueError(f"{path}: expected a JSON object with lists under 'real' and 'fake'")
        prompts.update(loaded)
    prompts.update({k: v for k, v in (("real", real), ("fake", fake)) if v})
    for name, texts in prompts.items():
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"the {name} prompt set must be a non-empty list of texts")
    return prompts


def text_classifier(spec: str, prompts: dict[str, list[str]], checkpoint=None) -> tuple[np.ndarray, float]:
    """Unit text embeddings (2, D) for [real, fake] (mean over prompts) and CLIP's logit scale."""
    import open_clip

    family, _, name = spec.partition(":")
    if family != "clip":
        raise BackboneError(f"zero-shot scoring needs a CLIP backbone (clip:<arch>:<tag|file>), not {spec!r}")
    if name.endswith(":random"):
        raise BackboneError("zero-shot scoring needs trained CLIP weights; 'random' would pair unrelated towers")
    model = load_clip_model(name, checkpoint).eval()
    tokenizer = open_clip.get_tokenizer(name.partition(":")[0])
    rows = []
    with torch.inference_mode():
        for label in ("real", "fake"):
            text = model.encode_text(tokenizer(prompts[label])).float()
            text = torch.nn.functional.normalize(text, dim=-1).mean(dim=0)
            rows.append(torch.nn.functional.normalize(text, dim=0))
        scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
    return torch.stack(rows).numpy(), scale


def zero_shot_scores(image_embeddings: np.ndarray, text: np.ndarray, scale: float) -> np.ndarray:
    """P(fake) for image embeddings (N, D) against unit text embeddings [real, fake]."""
    unit = image_embeddings / np.maximum(np.linalg.norm(image_embeddings, axis=1, keepdims=True), 1e-12)
    logits = scale * unit @ text.T
    logits -= logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    return odds[:, 1] / odds.sum(axis=1)


def zeroshot(data: str | Path, spec: str, *, prompts: dict[str, list[str]] | None = None,
             checkpoint=None, split: str = "all", cache=None, device: str = "auto", runtime: str | None = None,
             batch_size: int = 64, workers: int | None = None, progress: bool = False) -> Evaluation:
    """Zero-shot metrics of CLIP ``spec`` on the labelled images of ``data`` (folder or zip).

    The threshold is 0.5, or chosen on the dataset's ``val`` split when it has one and another
    split is scored (never on the scored images themselves).
    """
    prompts = prompts or DEFAULT_PROMPTS
    backbone = create_backbone(spec, checkpoint=checkpoint, device=device)
    result = extract(data, backbone, cache=cache, runtime=runtime, batch_size=batch_size, workers=workers,
                     progress=progress)
    emb = Store(result.store).load(result.key)
    text, scale = text_classifier(spec, prompts, checkpoint)
    frame = emb.frame[["id", "path", "split", "label"]].copy()
    frame["p_fake"] = zero_shot_scores(emb.X, text, scale)
    val = frame[(frame["split"] == "val") & (frame["label"] >= 0)]
    threshold = 0.5
    if split != "val" and val["label"].nunique() == 2:
        threshold = choose_threshold(val["label"], val["p_fake"])
    chosen = frame if split == "all" else frame[frame["split"] == split]
    chosen = chosen.reset_index(drop=True)
    chosen["pred"] = (chosen["p_fake"] >= threshold).astype(np.int8)
    scored = chosen[chosen["label"] >= 0]
    if scored.empty:
        raise ValueError(f"no labelled images in split {split!r} of {data}")
    metrics = binary_metrics(scored["label"], scored["p_fake"], threshold)
    return Evaluation(metrics, chosen, result.store.stem, split)


def save_result(path: str | Path, spec: str, prompts: dict[str, list[str]], result: Evaluation) -> Path:
    """The backbone, the prompts and the metrics of a ``zeroshot`` run as a JSON file; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"backbone": spec, "prompts": prompts, "metrics": result.metrics}, indent=2))
    return path
