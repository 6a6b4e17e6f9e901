"""Helpers writing WebDataset shards and manifests for the source and Ray tests."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from conftest import layout_files, truncated_jpeg

FILES = layout_files({"real": 3, "fake": 3})  # real/0000.jpg ... fake/0002.jpg


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


def shard_members(files: dict[str, bytes], how: str) -> dict[str, bytes]:
    """A WebDataset sample per image, labelled by a cls member, a json field, or not at all."""
    members = {}
    for i, (path, data) in enumerate(files.items()):
        label = path.split("/")[0]
        members[f"{i:06d}.jpg"] = data
        if how == "cls":
            members[f"{i:06d}.cls"] = b"1" if label == "fake" else b"0"
        elif how == "json":
            members[f"{i:06d}.json"] = json.dumps({"label": label, "split": "val", "caption": "x"}).encode()
    return members


def write_shards(root, with_problems: bool = True):
    """Shards: cls labels, json labels + split, folder labels; bad files, an empty tar and a 0-byte tar."""
    items = list(FILES.items())
    write_shard(root / "000000.tar", shard_members(dict(items[:4]), "cls") | (
        {"000098.jpg": truncated_jpeg(), "000098.cls": b"1", "000099.jpg": b"not an image", "000099.cls": b"0",
         "000097.jpg": items[0][1], "000097.cls": b"cat"} if with_problems else {}))
    write_shard(root / "000001.tar", shard_members(dict(items[4:]), "json"))
    write_shard(root / "fake" / "000002.tar", {"a/b.png": items[5][1], "a/b.txt": b"caption only"})
    if with_problems:
        write_shard(root / "000003.tar", {})
        (root / "000004.tar").write_bytes(b"")
    return root
