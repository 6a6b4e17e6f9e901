"""A small fitted detector on generated images for the explain / export / serve tests.

``fitted(root, head, **backbone)``: writes a CIFAKE-like zip of generated images under ``root``,
extracts it with effnet-lite0 (64 px, fp32, CPU unless ``backbone`` says otherwise) into
``root/cache``, fits ``head`` and returns ``Fitted(detector, backbone, data, cache)``.
``fused(root, fusion, sizes)``: the same images embedded at each of ``sizes`` (px), one model reading
all those sets (``fusion`` stack or concat), with their ``FusedBackbone``.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from conftest import layout_files, write_zip

from fakedet.backbones import Backbone, FusedBackbone, create_backbone
from fakedet.detector import Detector
from fakedet.workflow import fit
from fakedet.extract import extract

LAYOUT = {"train/REAL": 12, "train/FAKE": 12}


class Fitted(NamedTuple):
    detector: Detector
    backbone: Backbone
    data: Path
    cache: Path


def fitted(root: Path, head: str = "logreg", spec: str = "effnet-lite0", **backbone) -> Fitted:
    data = root / "data.zip"
    if not data.exists():
        write_zip(data, layout_files(LAYOUT, size=48))
    settings = {"resize": "64", "precision": "fp32", "device": "cpu", **backbone}
    model = create_backbone(spec, **settings)
    key = extract(data, model, cache=root / "cache", workers=0, progress=False).key
    return Fitted(fit(data, key, head, cache=root / "cache"), model, data, root / "cache")


def fused(root: Path, fusion: str = "stack", sizes: tuple[str, ...] = ("128", "96"), head: str = "logreg") -> Fitted:
    parts = [fitted(root, head, resize=size) for size in sizes]
    keys = [p.detector.key for p in parts]
    detector = fit(parts[0].data, keys, head, fusion=fusion, cache=root / "cache")
    return Fitted(detector, FusedBackbone([p.backbone for p in parts]), parts[0].data, root / "cache")
