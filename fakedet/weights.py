"""Weights files and their identity: tensors read safely (``.safetensors``, or torch files with
``weights_only``: never pickled code) and the content hash of a module's weights."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

from .backbone_config import BackboneError


def weights_hash(module: nn.Module) -> str:
    """Content hash of a module's state dict (names, shapes, dtypes and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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
