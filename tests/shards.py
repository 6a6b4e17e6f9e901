"""Helpers writing WebDataset shards and manifests for the source and Ray tests."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_shard(path: str | Path, members: dict[str, bytes]) -> Path:
    """Write ``{member name: bytes}`` to an uncompressed tar; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
