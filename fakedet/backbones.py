"""Registry of image backbones by name: ``create_backbone(spec)`` returns a model with its preprocessing.

Specs (see ``list_backbones``):

* ``effnet-lite0`` (also ``effnet-lite1``/``effnet-lite2`` when their PyPI weight packages are
  installed): timm ``tf_efficientnet_liteN`` with ImageNet weights shipped in a PyPI package, so
  it works offline. 1280-d features for lite0.
* ``timm:<model name>``: any timm model; weights from the hub, or ``checkpoint=FILE``.
* ``clip:<arch>:<pretrained tag | local file | random>``: the image tower of an open_clip model.
* ``finetuned:<name>`` or a ``.pt`` path: a checkpoint written by ``fakedet finetune``.

A backbone is never separated from its preprocessing: workers apply ``Backbone.preprocess``
(``fakedet.image_input``: decode-side resize / crop / pad to a uint8 tensor), the model
(``fakedet.feature_models``) normalises on its own device. The families' factories live in
``fakedet.backbone_families``.
The fingerprint hashes weights, preprocessing, feature layers and numeric precision, so
embeddings from different settings never mix in the cache.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .backbone_config import BackboneConfig, BackboneError, parse_resize, parse_scales, short_spec
from .backbone_families import FAMILIES, family_and_name, lite_package
from .devices import resolve_device, resolve_precision
from .feature_models import FeatureModel
from .image_input import Preprocess
from .weights import weights_hash


@dataclass
class Backbone:
    """A feature extractor ready to run: model, preprocessing and identity (fingerprint)."""

    spec: str
    model: FeatureModel
    preprocess: Preprocess
    dim: int
    weights_hash: str
    precision: str
    device: torch.device
    family: str
    checkpoint: str | None = None
    runtime: str | None = None  # engine of ``embed`` (fakedet.runtimes); None = torch, not chosen yet
    runtime_reason: str = ""
    runner: Callable[[torch.Tensor], np.ndarray] | None = field(default=None, repr=False)

    @property
    def config(self) -> BackboneConfig:
        """The settings that re-create this backbone (resolved: precision, resize, interpolation)."""
        pre = self.preprocess
        resize = "backbone" if pre.policy == "backbone" else f"{pre.policy}:{pre.size}"
        return BackboneConfig(spec=self.spec, checkpoint=self.checkpoint, layers=self.layers, resize=resize,
                              interpolation=pre.interpolation, scales=self.scales, precision=self.precision,
                              tta=self.tta)

    @property
    def layers(self) -> str:
        return self.model.layers

    @property
    def scales(self) -> tuple[float, ...]:
        return self.model.scales

    @property
    def tta(self) -> str:
        return "flip" if self.model.flip else "none"

    @property
    def identity(self) -> dict:
        """Everything that changes the numbers an image maps to (the fingerprint's input).

        ``scales`` and ``tta`` appear only when not the defaults (``(1.0,)``, ``none``), so
        fingerprints made before the options existed stay valid."""
        identity = {
            "family": self.family,
            "weights": self.weights_hash,
            "preprocess": asdict(self.preprocess),
            "layers": self.layers,
            "precision": self.precision,
        }
        if self.scales != (1.0,):
            identity["scales"] = list(self.scales)
        if self.tta != "none":
            identity["tta"] = self.tta
        return identity

    @property
    def fingerprint(self) -> str:
        return _hash_text(json.dumps(self.identity, sort_keys=True))

    @property
    def key(self) -> str:
        """Name of this backbone's embedding set in a store, e.g. ``effnet-lite0-3fa9c1d2e0b4``."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", short_spec(self.spec)).strip("_")
        if self.layers != "final":
            name += f".{self.layers}"
        if self.preprocess.policy != "backbone":
            name += f".{self.preprocess.policy}{self.preprocess.size}"
        if self.scales != (1.0,):
            name += ".x" + "-".join(f"{s:g}" for s in self.scales)
        if self.tta != "none":
            name += f".{self.tta}"
        return f"{name}-{self.fingerprint[:12]}"

    def autocast(self):
        """Autocast context for the resolved precision on this device."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def to_input(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) -> float [0, 1] on the device, channels-last."""
        batch = batch.to(self.device, non_blocking=True)
        return batch.float().div_(255).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """Features of a uint8 image batch as float32 numpy (B, dim)."""
        if self.runner is not None:
            return self.runner(batch)
        with self.autocast():
            return self.model(self.to_input(batch)).float().cpu().numpy()

    def embed_images(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Features of PIL images (RGB); convenience for notebooks and small inputs."""
        parts = [
            self.embed(torch.stack([self.preprocess(im) for im in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


@dataclass
class FusedBackbone:
    """The backbones of a fused model's sets as one: their embeddings side by side, in the model's column
    order. ``preprocess`` and ``device`` are the first set's (the size heat maps are drawn at)."""

    backbones: list[Backbone]

    @property
    def preprocess(self) -> Preprocess:
        return self.backbones[0].preprocess

    @property
    def device(self) -> torch.device:
        return self.backbones[0].device

    @property
    def dim(self) -> int:
        return sum(b.dim for b in self.backbones)

    def embed_images(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Fused features of PIL images (RGB): each backbone's, concatenated."""
        return np.concatenate([b.embed_images(images, batch_size) for b in self.backbones], axis=1)


def _hash_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# --------------------------------------------------------------------------- registry


def list_backbones() -> list[str]:
    """Spec patterns the registry understands, with the installed offline ones first."""
    lite = [f"effnet-lite{i}" for i in range(3) if lite_package(i) is not None]
    return lite + ["timm:<model name>", "clip:<arch>:<tag|file|random>", "finetuned:<name>"]


def resolve_spec(config: BackboneConfig, cache: str | Path | None = None) -> tuple[str, str, str]:
    """(spec, family, name) of ``config.spec``, with ``finetuned:<name>`` resolved to its checkpoint path
    under ``cache``; BackboneError for an unknown family. Loads nothing, so callers can check a spec before
    reading any data."""
    spec = config.spec
    if spec.endswith(".pt") and ":" not in spec.split("/")[0]:
        spec = f"finetuned:{spec}"
    family, name = family_and_name(spec)
    if family not in FAMILIES:
        raise BackboneError(f"unknown backbone {spec!r}; known: {', '.join(list_backbones())}")
    if family == "finetuned":
        from .catalog import finetuned_checkpoint

        name = str(finetuned_checkpoint(name, cache))
    return spec, family, name


def create_backbone(
    spec: str | BackboneConfig,
    *,
    checkpoint: str | Path | None = None,
    layers: str = "final",
    resize: str | int | None = "backbone",
    interpolation: str | None = None,
    scales: str | tuple[float, ...] | None = None,
    precision: str = "auto",
    tta: str = "none",
    device: str = "auto",
    cache: str | Path | None = None,
) -> Backbone:
    """Build the backbone named by ``spec`` (see module docstring), in eval mode on ``device``.

    ``spec`` is a spec string with the settings as keywords (``layers``: final | multi | blocks;
    ``resize``: see ``parse_resize``; ``scales``: see ``parse_scales`` and ``FeatureModel``), or a
    whole ``BackboneConfig`` (the keywords are then ignored). ``cache``: the cache root that
    ``finetuned:<name>`` runs are found under."""
    if isinstance(spec, BackboneConfig):
        config = spec
    else:
        config = BackboneConfig(spec=spec, checkpoint=checkpoint, layers=layers,
                                resize="backbone" if resize is None else str(resize),
                                interpolation=interpolation, scales=parse_scales(scales), precision=precision,
                                tta=tta)
    if config.resize == "auto":
        raise ValueError("resize 'auto' is chosen from a dataset's image sizes: use extract, or "
                         "BackboneConfig.for_images, or pass a size")
    spec, family, name = resolve_spec(config, cache)
    model, default = FAMILIES[family](name, checkpoint=config.checkpoint, layers=config.layers)
    model.scales, model.flip = config.scales, config.tta == "flip"
    policy, size = parse_resize(config.resize)
    if policy == "backbone":  # the backbone's own geometry (a fine-tuned checkpoint keeps its training one)
        policy, size = default.policy, default.size
    pre = Preprocess(
        size=size or default.size,
        policy=policy,
        crop_pct=default.crop_pct if policy == "backbone" else 1.0,
        interpolation=config.interpolation or default.interpolation,
        mean=default.mean,
        std=default.std,
    )
    torch_device = resolve_device(device)
    model = model.eval().to(torch_device).to(memory_format=torch.channels_last)
    backbone = Backbone(
        spec=spec,
        model=model,
        preprocess=pre,
        dim=0,
        weights_hash=weights_hash(model),
        precision=resolve_precision(config.precision, torch_device),
        device=torch_device,
        family=family,
        checkpoint=config.checkpoint,
    )
    probe = torch.zeros(1, 3, pre.size, pre.size, dtype=torch.uint8)
    backbone.dim = int(backbone.embed(probe).shape[1])
    return backbone
