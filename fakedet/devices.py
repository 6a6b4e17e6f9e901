"""Where a backbone runs and at which numeric precision: ``resolve_device``, ``resolve_precision``."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .backbone_config import PRECISIONS, BackboneError


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
