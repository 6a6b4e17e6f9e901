"""The torch modules behind a backbone: normalise a [0, 1] batch, then pooled features (the final
embedding, or mean and standard deviation of every stage / block), at one or several scales,
optionally averaged with those of the mirrored image."""
from __future__ import annotations

import torch
from torch import nn

from .backbone_config import LAYERS


class FeatureModel(nn.Module):
    """Normalise a float image batch in [0, 1], then return pooled features.

    ``layers='final'``: the backbone's own embedding. ``layers='multi'``: per-stage (CNN) or
    per-block (ViT) channel mean and standard deviation of the activation maps, concatenated
    with the final embedding. ``layers='blocks'``: the same for the stem and every block of an
    EfficientNet (17 maps for lite0 instead of 5 stages); equal to ``multi`` for other models
    (ViT / CLIP ``multi`` is already per block).
    ``scales``: also run on the input resized by these factors (bilinear, antialiased) and
    concatenate the features, e.g. ``(1.0, 0.5)``. ``flip``: the mean of the features of the batch
    and of its horizontal mirror (test-time augmentation). Subclasses implement ``final`` and
    ``intermediates``.
    """

    def __init__(self, trunk: nn.Module, mean, std, layers: str):
        super().__init__()
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {', '.join(LAYERS)}, not {layers!r}")
        self.trunk = trunk
        self.layers = layers
        self.scales: tuple[float, ...] = (1.0,)
        self.flip = False
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.flip:
            return (self.multiscale(x) + self.multiscale(x.flip(3))) / 2
        return self.multiscale(x)

    def multiscale(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised batch at every scale, side by side."""
        if self.scales == (1.0,):
            return self.features(x)
        return torch.cat([self.features(x if s == 1 else nn.functional.interpolate(
            x, scale_factor=s, mode="bilinear", antialias=True)) for s in self.scales], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a normalised batch at one scale."""
        if self.layers == "final":
            return self.final(x)
        final, maps = self.intermediates(x)
        stats = [torch.cat([m.mean(dim=(2, 3)), _spatial_std(m)], dim=1) for m in maps]
        return torch.cat([*stats, final], dim=1)

    def final(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError


def _spatial_std(maps: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over the map (sample std; 0 for a 1x1 map, not NaN)."""
    if maps.shape[2] * maps.shape[3] == 1:
        return torch.zeros_like(maps[:, :, 0, 0])
    return maps.std(dim=(2, 3))


class TimmFeatures(FeatureModel):
    """timm model with ``num_classes=0``: ``trunk(x)`` is the pooled pre-logits embedding."""

    def final(self, x):
        return self.trunk(x)

    def intermediates(self, x):
        if self.layers == "blocks" and _is_efficientnet(self.trunk):
            return self._every_block(x)
        last, maps = self.trunk.forward_intermediates(x)
        return self.trunk.forward_head(last, pre_logits=True), maps

    def _every_block(self, x):
        """EfficientNet: the stem, then each block of each stage (16 for lite0), then the head."""
        trunk = self.trunk
        x = trunk.bn1(trunk.conv_stem(x))
        maps = [x]
        for stage in trunk.blocks:
            for block in stage:
                x = block(x)
                maps.append(x)
        return trunk.forward_head(trunk.bn2(trunk.conv_head(x)), pre_logits=True), maps


def _is_efficientnet(module: nn.Module) -> bool:
    from timm.models.efficientnet import EfficientNet

    return isinstance(module, EfficientNet)


class ClipFeatures(FeatureModel):
    """open_clip image tower: the projected image embedding."""

    def final(self, x):
        return self.trunk(x)

    def intermediates(self, x):
        out = self.trunk.forward_intermediates(x)
        return out["image_features"], out["image_intermediates"]
