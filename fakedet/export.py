"""Export a detector (backbone with its layers and scales + head) as one ONNX graph, and check it.

The graph's input ``images`` is a float32 batch (B, 3, S, S) in [0, 1]: images already resized
and cropped by the model's preprocessing (``Backbone.preprocess``, S = its size) and divided by
255; mean/std normalisation is inside the graph. Its output ``p_fake`` (B,) is P(fake), to
compare with the threshold stored in the graph's metadata (``threshold``). Heads without a torch
form (``torch_head.NotExpressible``) are refused with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .onnx_runtime import OPSET, require_onnx, write_onnx
from .torch_head import detector_module, torch_head
from .scoring import backbone_for, single_set

FORMATS = ("onnx",)


def export_onnx(detector, out: str | Path, backbone=None, *, opset: int = OPSET) -> Path:
    """Write ``detector`` as an ONNX file at ``out``; returns the path.

    ``backbone``: the model's re-created backbone (default: ``backbone_for(detector, device='cpu')``).
    Raises ``NotExpressible`` for heads without a torch form, before building the backbone, and
    ``BackboneError`` with the install command without the onnx extra.
    """
    require_onnx("fakedet export")
    single_set(detector, "export")
    torch_head(detector.pipeline)  # refuse early
    backbone = backbone or backbone_for(detector, device="cpu")
    module = detector_module(detector, backbone).cpu().float().to(memory_format=torch.contiguous_format)
    size = backbone.preprocess.size
    example = torch.rand(2, 3, size, size)
    meta = {"threshold": detector.threshold, "backbone": detector.backbone, "fingerprint": detector.fingerprint,
            "head": detector.head, "input_size": size, "preprocess": json.dumps(detector.identity["preprocess"]),
            "input": "float32 (B, 3, S, S) in [0, 1] after the model's resize/crop; output p_fake (B,)"}
    return write_onnx(module, example, out, output="p_fake", metadata=meta, opset=opset)


def preprocessed_batch(backbone, images: list[Image.Image]) -> np.ndarray:
    """The ONNX input for PIL images: the backbone's geometry, float32 in [0, 1]."""
    return np.stack([backbone.preprocess(image).numpy() for image in images]).astype(np.float32) / 255


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
    module = detector_module(detector, backbone).cpu().float()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = []
    for start in range(0, len(images), batch_size):
        x = preprocessed_batch(backbone, images[start : start + batch_size])
        with torch.inference_mode():
            p_torch = module(torch.from_numpy(x)).numpy()
        p_onnx = session.run(["p_fake"], {"images": x})[0]
        diffs.append(np.abs(p_onnx.astype(np.float64) - p_torch))
    diff = np.concatenate(diffs)
    return {"n": int(len(diff)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
