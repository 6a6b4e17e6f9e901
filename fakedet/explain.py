"""Heat maps of what drove P(fake): Grad-CAM through the backbone, or occlusion as a surrogate.

Methods (``Explainer(method=...)``, ``auto`` picks the first that applies):

* ``grad-cam``: the ``grad-cam`` package (pytorch_grad_cam) on the backbone's last feature map
  (CNN: EfficientNet ``bn2``, ConvNeXt/RegNet last stage, ResNet ``layer4``) with respect to the
  head's fake score (the logit of P(fake)), exact for heads with a torch form (logreg, linsvm,
  mlp, see ``torch_head``). For transformers (CLIP / timm ViT) the same on the tokens entering
  the last block (its first layer norm), reshaped to the patch grid. With several ``scales``
  (or ``tta='flip'``) the map follows the first pass: full resolution, not mirrored.
* ``occlusion``: for heads without gradients (knn, svm, centroid) -- a surrogate, labelled so:
  each square of a sliding grid is replaced by the mean colour and the drop in P(fake) is
  recorded; the map is the positive part (regions whose removal lowers P(fake)).

A stacked fused model (``fit --fusion stack``, ``fakedet ensemble``: P(fake) the mean of one head
per embedding set) is explained by the mean of its members' maps, each drawn by its own backbone
and head and resized to the first member's input (``MeanExplainer``, from ``explainer_for``). A
concatenated one (one head over several backbones' features) is refused.

Maps are (S, S) float32 in [0, 1] over the model's input image (after its resize and crop).
``explain_files`` writes ``<name>.png`` (overlay) and ``<name>.npy`` (the map) per image.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .decoding import ImageDecodeError, decode_image
from .torch_head import NotExpressible, detector_module
from .scoring import backbone_for, set_models

METHODS = ("auto", "grad-cam", "occlusion")
OCCLUSION_GRID = 7  # squares of size S/7, moved by half a square


@dataclass
class Explanation:
    """One image's heat map with the verdict it explains."""

    p_fake: float
    label: str
    method: str
    heatmap: np.ndarray  # (S, S) float32 in [0, 1]
    image: np.ndarray  # (S, S, 3) uint8, what the model saw

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The heat map (jet colours) blended over the model's input image."""
        from pytorch_grad_cam.utils.image import show_cam_on_image

        return Image.fromarray(show_cam_on_image(self.image.astype(np.float32) / 255, self.heatmap,
                                                 use_rgb=True, image_weight=1 - alpha))


def cam_target(features: torch.nn.Module):
    """(target layer, reshape_transform or None, kind) for Grad-CAM in a FeatureModel's trunk."""
    trunk = features.trunk
    if hasattr(trunk, "transformer") and hasattr(trunk, "grid_size"):  # open_clip VisionTransformer
        return trunk.transformer.resblocks[-1].ln_1, _tokens_to_grid(tuple(trunk.grid_size)), "transformer"
    if hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):  # timm ViT
        grid = tuple(trunk.patch_embed.grid_size)
        return trunk.blocks[-1].norm1, _tokens_to_grid(grid), "transformer"
    for name in ("bn2", "norm_pre", "final_conv", "layer4"):
        layer = getattr(trunk, name, None)
        if isinstance(layer, torch.nn.Module) and not isinstance(layer, torch.nn.Identity):
            return layer, None, "cnn"
    if hasattr(trunk, "stages"):
        return trunk.stages[-1], None, "cnn"
    raise NotExpressible(f"no Grad-CAM layer known for {type(trunk).__name__}; use method 'occlusion'")


def _tokens_to_grid(grid: tuple[int, int]):
    """(B, prefix + h*w, D) tokens -> (B, D, h, w) maps (prefix tokens dropped)."""
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, -grid[0] * grid[1]:, :]
        return patches.reshape(tokens.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
    return reshape


class Explainer:
    """Heat maps for a detector and its backbone; reusable (one per server, guarded by a lock)."""

    def __init__(self, detector, backbone=None, method: str = "auto", occlusion_grid: int = OCCLUSION_GRID):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if detector.fused:
            raise ValueError("Explainer takes a model of one embedding set; explainer_for(detector) also "
                             "explains stacked fused models")
        try:
            import pytorch_grad_cam  # noqa: F401 - also draws the overlays
        except ImportError:
            raise ValueError("heat maps need the grad-cam package: pip install 'fakedet[explain]'") from None
        self.detector = detector
        self.backbone = backbone or backbone_for(detector)
        self.occlusion_grid = occlusion_grid
        self._lock = threading.Lock()
        self.module, self.reason = None, ""
        try:
            self.module = detector_module(detector, self.backbone, score=True)
            self.target, self.reshape, kind = cam_target(self.backbone.model)
        except NotExpressible as err:
            if method == "grad-cam":
                raise
            self.module, self.reason = None, str(err)
        if self.module is None or method == "occlusion":
            self.method = "occlusion (surrogate: drop in P(fake) when a square is hidden)"
        else:
            self.method = f"grad-cam ({kind}, fake score of the {detector.head} head)"

    def __call__(self, images: list[Image.Image]) -> list[Explanation]:
        """Explanations of RGB PIL images, in order."""
        batch = torch.stack([self.backbone.preprocess(image) for image in images])
        p_fake = self.detector.p_fake(self.backbone.embed(batch))
        x = batch.float().div(255).to(self.backbone.device)
        with self._lock:
            maps = self._occlusion(x) if self.method.startswith("occlusion") else self._grad_cam(x)
        return [Explanation(float(p), "fake" if p >= self.detector.threshold else "real", self.method,
                            m.astype(np.float32), image.permute(1, 2, 0).numpy())
                for p, m, image in zip(p_fake, maps, batch)]

    def _grad_cam(self, x: torch.Tensor) -> np.ndarray:
        from pytorch_grad_cam import GradCAM

        with GradCAM(self.module, [self.target], reshape_transform=self.reshape) as cam:
            return cam(x, targets=[lambda score: score] * len(x))

    @torch.inference_mode()
    def _occlusion(self, x: torch.Tensor) -> np.ndarray:
        size = x.shape[-1]
        patch = max(1, round(size / self.occlusion_grid))
        stride = max(1, patch // 2)
        starts = sorted(set(range(0, size - patch + 1, stride)) | {size - patch})
        fill = torch.tensor(self.backbone.preprocess.mean, device=x.device).view(3, 1, 1)
        maps = []
        for image in x:
            variants, boxes = [image], []
            for top in starts:
                for left in starts:
                    hidden = image.clone()
                    hidden[:, top : top + patch, left : left + patch] = fill
                    variants.append(hidden)
                    boxes.append((top, left))
            p = np.concatenate([self._p_fake(torch.stack(variants[i : i + 64])) for i in range(0, len(variants), 64)])
            drop, count = np.zeros((size, size)), np.zeros((size, size))
            for (top, left), p_hidden in zip(boxes, p[1:]):
                drop[top : top + patch, left : left + patch] += p[0] - p_hidden
                count[top : top + patch, left : left + patch] += 1
            heat = np.clip(drop / np.maximum(count, 1), 0, None)
            maps.append(heat / heat.max() if heat.max() > 0 else heat)
        return np.stack(maps)

    def _p_fake(self, x: torch.Tensor) -> np.ndarray:
        with self.backbone.autocast():
            features = self.backbone.model(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
        return self.detector.p_fake(features)


class MeanExplainer:
    """A stacked fused model's heat maps: the mean of its members' (``Explainer`` each, on its own
    backbone), resized to the first member's input size; P(fake) is the model's, the mean of theirs."""

    def __init__(self, detector, parts: list[Explainer]):
        self.detector, self.parts = detector, parts
        self.method = "mean over its sets of " + "; ".join(dict.fromkeys(part.method for part in parts))

    def __call__(self, images: list[Image.Image]) -> list[Explanation]:
        explained = [part(images) for part in self.parts]
        size = explained[0][0].heatmap.shape[0] if images else 0
        out = []
        for first, *others in zip(*explained):
            maps = [first.heatmap] + [_resized(e.heatmap, size) for e in others]
            p = float(np.mean([first.p_fake] + [e.p_fake for e in others]))
            out.append(Explanation(p, "fake" if p >= self.detector.threshold else "real", self.method,
                                   np.mean(maps, axis=0).astype(np.float32), first.image))
        return out


def _resized(heatmap: np.ndarray, size: int) -> np.ndarray:
    if heatmap.shape[0] == size:
        return heatmap
    return np.asarray(Image.fromarray(heatmap).resize((size, size), Image.BILINEAR)).clip(0, 1)


def explainer_for(detector, backbone=None, method: str = "auto", occlusion_grid: int = OCCLUSION_GRID):
    """An ``Explainer`` for a model of one set, a ``MeanExplainer`` for a stacked fused one (``backbone``:
    its ``FusedBackbone``, default ``backbone_for(detector)``)."""
    if not detector.fused:
        return Explainer(detector, backbone, method, occlusion_grid)
    models = set_models(detector, "heat maps")
    backbone = backbone or backbone_for(detector)
    return MeanExplainer(detector, [Explainer(model, part, method, occlusion_grid)
                                    for model, part in zip(models, backbone.backbones)])


def explain(detector, images: list[Image.Image], backbone=None, method: str = "auto") -> list[Explanation]:
    """Explanations of RGB PIL images (see ``explainer_for``)."""
    return explainer_for(detector, backbone, method)(images)


def save_explanation(explanation: Explanation, out: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<out>/<name>.png`` (overlay) and ``<out>/<name>.npy`` (map); returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, npy = out / f"{name}.png", out / f"{name}.npy"
    explanation.overlay().save(png)
    np.save(npy, explanation.heatmap)
    return png, npy


def explain_files(detector, paths: list[str | Path], out: str | Path, backbone=None, method: str = "auto",
                  batch_size: int = 16) -> pd.DataFrame:
    """Heat maps of image files into ``out``: one row per file (path, p_fake, label, method, png, npy, error)."""
    explainer = explainer_for(detector, backbone, method)
    rows, names = [], set()
    for start in range(0, len(paths), batch_size):
        images, items = [], []
        for path in map(Path, paths[start : start + batch_size]):
            row = {"path": str(path), "error": ""}
            rows.append(row)
            try:
                images.append(decode_image(path.read_bytes()))
                items.append(row)
            except (ImageDecodeError, OSError) as err:
                row["error"] = str(err)
        for row, explanation in zip(items, explainer(images) if images else []):
            name = _unique(re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(row["path"]).stem), names)
            png, npy = save_explanation(explanation, out, name)
            row.update(p_fake=explanation.p_fake, label=explanation.label, method=explanation.method,
                       png=str(png), npy=str(npy))
    columns = ["path", "p_fake", "label", "method", "png", "npy", "error"]
    return pd.DataFrame(rows).reindex(columns=columns)


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}-{i}"
    taken.add(candidate)
    return candidate
