"""Export a detector (backbone(s) with their layers and scales + head) as one ONNX graph, and check it.

The graph's input ``images`` is a float32 batch (B, 3, S, S) in [0, 1]: images already resized
and cropped by the model's preprocessing (``Backbone.preprocess``, S = its size) and divided by
255; mean/std normalisation is inside the graph. Its output ``p_fake`` (B,) is P(fake), to
compare with the threshold stored in the graph's metadata (``threshold``). A stacked fused model
(``fit --fusion stack``, ``fakedet ensemble``) is one graph of every set's backbone and head whose
``p_fake`` is the mean of theirs, a concatenated one (``--fusion concat``) one graph of every set's
backbone and preprocessing side by side and its one head; either has one input per distinct geometry
(``images_0``, ``images_1``, ...: the metadata's ``inputs`` gives each one's size and resampling).
Heads without a torch form (``torch_head.NotExpressible``) are refused with the reason.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .image_input import Preprocess
from .onnx_runtime import OPSET, require_onnx, write_onnx
from .scoring import backbone_for, set_models
from .torch_head import ConcatModule, MeanModule, concat_head, detector_module, torch_head

FORMATS = ("onnx",)


def export_onnx(detector, out: str | Path, backbone=None, *, opset: int = OPSET) -> Path:
    """Write ``detector`` as an ONNX file at ``out``; returns the path.

    ``backbone``: the model's re-created backbone (default: ``backbone_for(detector, device='cpu')``).
    Raises ``NotExpressible`` for heads without a torch form, before building the backbone, and
    ``BackboneError`` with the install command without the onnx extra.
    """
    require_onnx("fakedet export")
    check_exportable(detector)
    backbone = backbone or backbone_for(detector, device="cpu")
    module, inputs = deployment(detector, backbone)
    examples = {name: torch.rand(2, 3, p.size, p.size) for name, p in inputs.items()}
    meta = {"threshold": detector.threshold, "backbone": detector.backbone, "fingerprint": detector.fingerprint,
            "head": detector.head, "inputs": json.dumps([{"name": name, **_geometry(p)} for name, p in inputs.items()]),
            "input": describe_inputs(inputs) + "; output p_fake (B,)"}
    if len(inputs) == 1:
        meta.update(input_size=backbone.preprocess.size, preprocess=json.dumps(detector.identity.get("preprocess")))
    return write_onnx(module, examples, out, output="p_fake", metadata=meta, opset=opset)


def check_exportable(detector) -> None:
    """Refuse, before any backbone is built, a model whose head has no torch form (see module docstring)."""
    if _concatenated(detector):
        concat_head(detector.pipeline)
        return
    for model in set_models(detector, "exports"):
        torch_head(model.pipeline)


def onnx_inputs(detector, backbone) -> tuple[dict[str, Preprocess], list[int]]:
    """The graph's inputs (name -> the geometry that makes them) and, per set, the index of the one it reads."""
    parts = _parts(detector, backbone)
    keys = [_key(b.preprocess) for b in parts]
    geometries = list(dict.fromkeys(keys))
    names = ["images"] if len(geometries) == 1 else [f"images_{i}" for i in range(len(geometries))]
    inputs = {name: parts[keys.index(g)].preprocess for name, g in zip(names, geometries)}
    return inputs, [geometries.index(k) for k in keys]


def deployment(detector, backbone) -> tuple[nn.Module, dict[str, Preprocess]]:
    """The fp32 torch module of the exported graph and its inputs (see ``onnx_inputs``)."""
    inputs, slots = onnx_inputs(detector, backbone)
    parts = _parts(detector, backbone)
    if _concatenated(detector):
        module = ConcatModule([b.model for b in parts], *concat_head(detector.pipeline), slots)
    else:
        modules = [detector_module(m, b) for m, b in zip(set_models(detector, "exports"), parts)]
        module = MeanModule(modules, slots) if detector.fused else modules[0]
    return module.cpu().float().to(memory_format=torch.contiguous_format).eval(), inputs


def onnx_feeds(inputs: dict[str, Preprocess], images: list[Image.Image], batch_size: int = 32):
    """The graph's feeds for ``images``, a dict (input name -> float32 batch) per batch of ``batch_size``."""
    for start in range(0, len(images), batch_size):
        yield {name: preprocessed_batch(p, images[start : start + batch_size]) for name, p in inputs.items()}


def describe_inputs(inputs: dict[str, Preprocess]) -> str:
    """What each input takes, for people: 'images: float32 (B, 3, 128, 128) in [0, 1] ...'."""
    return "; ".join(f"{name}: float32 (B, 3, {p.size}, {p.size}) in [0, 1] after a {p.policy} to {p.size} px "
                     f"({p.interpolation})" for name, p in inputs.items())


def preprocessed_batch(preprocess: Preprocess, images: list[Image.Image]) -> np.ndarray:
    """An ONNX input for PIL images: ``preprocess``'s geometry, float32 in [0, 1]."""
    return np.stack([preprocess(image).numpy() for image in images]).astype(np.float32) / 255


def _concatenated(detector) -> bool:
    """A ``--fusion concat`` model: one head over every set's columns (a stacked one has voters)."""
    return detector.fused and not detector.voters()


def _parts(detector, backbone) -> list:
    """The backbone of each set, in the model's order (a fused model's ``FusedBackbone`` holds several)."""
    return backbone.backbones if detector.fused else [backbone]


def _key(preprocess: Preprocess) -> tuple:
    """The geometry of an input (mean/std are applied inside each backbone's graph)."""
    return preprocess.size, preprocess.policy, preprocess.crop_pct, preprocess.interpolation


def _geometry(preprocess: Preprocess) -> dict:
    return {k: v for k, v in asdict(preprocess).items() if k not in ("mean", "std")}


def probe_images(n: int, source: str | Path | None = None, size: int = 96, seed: int = 0) -> list[Image.Image]:
    """``n`` images to check parity on: the first ``n`` decodable files of a folder / zip ``source``,
    or generated ones (smooth colour waves plus noise, varied per image)."""
    if source is not None:
        from .datasets import open_source
        from .decoding import ImageDecodeError, decode_image

        images = []
        with open_source(source) as files:
            for path in files.paths():
                try:
                    images.append(decode_image(files.read(path)))
                except ImageDecodeError:
                    continue
                if len(images) == n:
                    break
        return images
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        waves = [np.sin(2 * np.pi * (rng.uniform(0.3, 6, 2) @ [x.ravel(), y.ravel()]) + rng.uniform(0, 6))
                 for _ in range(3)]
        pixels = 128 + rng.uniform(40, 110) * np.stack(waves, -1).reshape(size, size, 3)
        pixels += rng.normal(0, rng.uniform(1, 20), pixels.shape)
        images.append(Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB"))
    return images


def onnx_parity(detector, path: str | Path, images: list[Image.Image], backbone=None,
                batch_size: int = 32) -> dict:
    """Max and mean |P_onnx - P_torch| over ``images`` (torch: the fp32 module the graph came from)."""
    import onnxruntime as ort

    backbone = backbone or backbone_for(detector, device="cpu")
    module, inputs = deployment(detector, backbone)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for feeds in onnx_feeds(inputs, images, batch_size):
        with torch.inference_mode():
            p_torch = module(*map(torch.from_numpy, feeds.values())).numpy()
        p_onnx = session.run(["p_fake"], feeds)[0]
        diffs.append(np.abs(p_onnx.astype(np.float64) - p_torch))
    diff = np.concatenate(diffs)
    return {"n": int(len(diff)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
