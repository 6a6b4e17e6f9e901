"""``BackboneConfig``: the settings that make a backbone's embeddings, as one frozen object.

It travels whole from the CLI to ``create_backbone``, into the store's set attributes and the
model file, and back (``Detector.config`` re-creates the backbone a model was fit on). Torch-free.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

LAYERS = ("final", "multi", "blocks")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TTAS = ("none", "flip")  # test-time augmentation of an embedding: none, or the mean with the mirrored image's
INTERPOLATION_NAMES = ("bicubic", "bilinear", "nearest", "lanczos", "box")
# named feature settings for ``fakedet extract --preset``; "best" is the README's recommendation for the
# bundled EfficientNet (every block at two scales, resize chosen from the data), "fast" the plain embedding
PRESETS = {
    "best": {"layers": "blocks", "scales": (1.0, 0.5), "resize": "auto"},
    "fast": {"layers": "final", "scales": (1.0,), "resize": "backbone"},
}
MIN_SIZE, MAX_SIZE = 8, 2048  # bounds of --resize sizes: 0 is meaningless, 100000 would need ~30 GB a batch
AUTO_SIZES = (128, 384)  # "auto" resize: the images' median short side rounded to 32 px, within these


class BackboneError(RuntimeError):
    """A backbone spec cannot be turned into a model (unknown name, weights unavailable...)."""


def auto_resize(widths, heights) -> tuple[str, str]:
    """The resize for images of these sizes and why: their median short side rounded to a multiple of
    32 px, at least 128 (small images are upsampled: it helps on 32 px CIFAKE) and at most 384
    (native size on larger images: downsampling 256 px ProGAN images to 128 px loses the traces)."""
    short = [min(int(w), int(h)) for w, h in zip(widths, heights) if int(w) > 0 and int(h) > 0]
    if not short:
        return "backbone", "no readable image sizes: the backbone's own"
    median = sorted(short)[len(short) // 2]
    size = min(AUTO_SIZES[1], max(AUTO_SIZES[0], 32 * round(median / 32)))
    return f"resize:{size}", f"from the images' median short side, {median} px"


def parse_scales(scales: str | tuple[float, ...] | list[float] | None) -> tuple[float, ...]:
    """``'1,0.5'`` (or a sequence) -> ``(1.0, 0.5)``; None / empty -> ``(1.0,)``. Factors in (0, 4]."""
    if scales is None or scales == "":
        return (1.0,)
    try:
        values = tuple(float(v) for v in (scales.split(",") if isinstance(scales, str) else scales))
    except ValueError:
        raise ValueError(f"scales {scales!r}: use factors separated by commas, e.g. '1,0.5'") from None
    if not values or any(not 0 < v <= 4 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"scales {scales!r}: distinct factors in (0, 4], e.g. '1,0.5'")
    return values


def parse_resize(resize: str | int | None) -> tuple[str, int | None]:
    """``'backbone'`` | ``'128'`` / ``'resize:128'`` | ``'pad'`` / ``'pad:64'`` -> (policy, size or None)."""
    text = "backbone" if resize is None else str(resize).strip().lower()
    if text == "backbone":
        return "backbone", None
    match = re.fullmatch(r"(?:(resize|pad):?)?(\d+)?", text)
    if not match or (match.group(1) is None and match.group(2) is None):
        raise ValueError(f"resize policy {resize!r}: use 'backbone', a size like '128', 'pad' or 'pad:64'")
    policy = match.group(1) or "resize"
    size = int(match.group(2)) if match.group(2) else None
    if policy == "resize" and size is None:
        raise ValueError("resize needs a size, e.g. 'resize:128'")
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"resize size {size}: use a size from {MIN_SIZE} to {MAX_SIZE} pixels, e.g. '128'")
    return policy, size


def short_spec(spec: str) -> str:
    """Spec with local file paths reduced to their file stem (for names, not identity)."""
    return ":".join(Path(p).stem if ("/" in p or "\\" in p) else p for p in spec.split(":"))


@dataclass(frozen=True)
class BackboneConfig:
    """A backbone spec plus how images are fed to it and at which precision.

    ``resize``: see ``parse_resize``, or ``auto`` (chosen from the dataset's image sizes by ``extract``,
    see ``for_images``); ``scales``: see ``parse_scales`` (stored as a tuple);
    ``interpolation`` None = the backbone's own; ``precision`` auto resolves per device;
    ``tta='flip'``: every embedding is the mean of the image's and its mirror image's (twice the cost).
    """

    spec: str = "effnet-lite0"
    checkpoint: str | None = None
    layers: str = "final"
    resize: str = "backbone"
    interpolation: str | None = None
    scales: tuple[float, ...] = (1.0,)
    precision: str = "auto"
    tta: str = "none"

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise ValueError(f"layers must be one of {', '.join(LAYERS)}, not {self.layers!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if self.tta not in TTAS:
            raise ValueError(f"tta must be one of {', '.join(TTAS)}, not {self.tta!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATION_NAMES:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATION_NAMES)}")
        object.__setattr__(self, "spec", self.spec.strip())
        if str(self.resize).strip().lower() == "auto":
            object.__setattr__(self, "resize", "auto")
        else:
            policy, size = parse_resize(self.resize)
            object.__setattr__(self, "resize", "backbone" if policy == "backbone" else f"{policy}:{size}" if size
                               else policy)
        object.__setattr__(self, "scales", parse_scales(self.scales))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(self.checkpoint))

    def replace(self, **changes) -> "BackboneConfig":
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str = "best", spec: str = "effnet-lite0", **changes) -> "BackboneConfig":
        """Settings of preset ``name`` (see ``PRESETS``), with ``changes`` (None values ignored) on top."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
        return cls(spec=spec, **{**PRESETS[name], **{k: v for k, v in changes.items() if v is not None}})

    def for_images(self, widths, heights) -> tuple["BackboneConfig", str]:
        """This config with an ``auto`` resize chosen from image sizes (see ``auto_resize``), and a note
        saying what was chosen ("" when the resize was given)."""
        if self.resize != "auto":
            return self, ""
        resize, why = auto_resize(widths, heights)
        return self.replace(resize=resize), f"resize {resize} ({why})"

    def to_dict(self) -> dict:
        """JSON-ready fields (scales as a list)."""
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> "BackboneConfig":
        """Inverse of ``to_dict`` (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_identity(cls, spec: str, identity: dict) -> "BackboneConfig":
        """The settings recorded in a backbone identity (stores and models written before configs were)."""
        pre = identity["preprocess"]
        resize = "backbone" if pre["policy"] == "backbone" else f"{pre['policy']}:{pre['size']}"
        return cls(spec=spec, layers=identity["layers"], resize=resize, interpolation=pre["interpolation"],
                   scales=tuple(identity.get("scales", (1.0,))), precision=identity["precision"],
                   tta=identity.get("tta", "none"))

    @classmethod
    def from_set_attrs(cls, attrs: dict) -> "BackboneConfig":
        """The settings of an embedding set, from its attributes (its config, or its identity when older)."""
        return cls.from_dict(attrs["config"]) if "config" in attrs else cls.from_identity(attrs["spec"], attrs["identity"])

    def options(self) -> str:
        """The ``fakedet extract`` options that give these settings."""
        parts = [f"--backbone {self.spec}"]
        if self.checkpoint:
            parts.append(f"--checkpoint {self.checkpoint}")
        parts += [f"--layers {self.layers}", f"--resize {self.resize}"]
        if self.interpolation:
            parts.append(f"--interpolation {self.interpolation}")
        if self.scales != (1.0,):
            parts.append("--scales " + ",".join(f"{v:g}" for v in self.scales))
        if self.tta != "none":
            parts.append(f"--tta {self.tta}")
        return " ".join(parts + [f"--precision {self.precision}"])
