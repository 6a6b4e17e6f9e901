"""The fine-tune checkpoint format (``best.pt``), written by ``finetune`` and read by the
``finetuned`` backbone family: one place for both sides.

Content: ``format``, ``base_spec`` and ``base_checkpoint`` (the backbone it started from), the
feature model's ``backbone`` state dict, the linear ``head`` state dict, the ``preprocess``
geometry it was trained at (size, policy, crop_pct, interpolation), ``epoch`` and val ``metrics``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .backbone_config import BackboneError
from .weights import load_tensors

FORMAT = "fakedet-finetuned/1"
GEOMETRY = ("size", "policy", "crop_pct", "interpolation")


class CheckpointError(BackboneError):
    """A file that is not a readable fine-tune checkpoint."""


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: an interrupted save never leaves a broken file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint(*, base_spec: str, base_checkpoint: str | None, backbone: dict, head: dict, preprocess: dict,
               epoch: int, metrics: dict) -> dict:
    """The checkpoint content (tensors moved to the CPU, only the geometry of ``preprocess`` kept)."""
    return {
        "format": FORMAT,
        "base_spec": base_spec,
        "base_checkpoint": str(Path(base_checkpoint).resolve()) if base_checkpoint else None,
        "backbone": {k: v.detach().cpu() for k, v in backbone.items()},
        "head": {k: v.detach().cpu() for k, v in head.items()},
        "preprocess": {k: preprocess[k] for k in GEOMETRY},
        "epoch": epoch,
        "metrics": metrics,
    }


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's content (``weights_only``: no pickled code); CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no fine-tuned checkpoint at {path}; run `fakedet finetune` first or pass a path")
    saved = load_tensors(path)  # a file holding Python objects is refused with one clear line
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fakedet fine-tune checkpoint")
    return saved


def base_of(path: str | Path) -> tuple[str, str | None]:
    """The architecture a checkpoint's weights load into: its ``base_spec`` and ``base_checkpoint``."""
    saved = read_checkpoint(path)
    return saved["base_spec"], saved.get("base_checkpoint")
