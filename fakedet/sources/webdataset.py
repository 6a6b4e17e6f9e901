"""WebDataset tar shards (as img2dataset writes them): a folder, a glob or one ``.tar``, local or URL.

A sample is the group of members sharing a key (the member name up to the first dot of its
file name): ``000017.jpg`` + ``000017.cls`` + ``000017.json``. Each image member is one path,
``<shard>/<member>``. Its label comes from the sample's ``cls`` member (``0``/``1`` or
``real``/``fake``), else the ``label`` field of its ``json`` member, else the folder names of
the shard and member (as for a folder); the split from the ``json`` ``split`` field, else the
folder names. Shards are read in place, one member at a time, never unpacked; an empty shard
(no members, or 0 bytes) holds no samples; a file that is not a tar stops with a clear error.
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile

from ..datasets import ImageSource, _visible, label_and_split
from .fs import join, resolve, stem
from .labels import BadEntry, parse_label, parse_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_SHARD_PATH = re.compile(r"^(.*?\.tar)/(.+)$", re.IGNORECASE)


def holds_shards(location: str) -> bool:
    """True for a folder whose first image-or-tar file (in walk order) is a ``.tar``."""
    try:
        fs, path, _ = resolve(location)
        if not fs.isdir(path):
            return False
        for _, _, files in fs.walk(path):
            for name in sorted(files):
                lower = name.lower()
                if lower.endswith(".tar"):
                    return True
                if lower.endswith(IMAGE_SUFFIXES) or lower.endswith(".zip"):
                    return False
    except (OSError, ValueError):
        return False
    return False


class ShardSource(ImageSource):
    """``ImageSource`` over WebDataset shards; member offsets are indexed once per shard and pickled along."""

    kind = "shards"

    def __init__(self, location: str) -> None:
        self.fs, path, self.root = resolve(location)
        if any(c in path for c in "*?["):
            self.base = posixpath.dirname(re.split(r"[*?\[]", path, maxsplit=1)[0].rstrip("/"))
            found = self.fs.glob(path)
            self.name = posixpath.basename(self.base)
        elif self.fs.isdir(path):
            self.base, found, self.name = path, self.fs.find(path), posixpath.basename(path)
        elif self.fs.isfile(path):
            self.base, found, self.name = posixpath.dirname(path), [path], stem(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {location}")
        prefix = self.base.rstrip("/") + "/" if self.base else ""
        self.shards = sorted(
            name[len(prefix):] for name in found
            if name.lower().endswith(".tar") and name.startswith(prefix) and _visible(name[len(prefix):])
        )
        if not self.shards:
            raise FileNotFoundError(f"no .tar shards in {location}; pass a folder or glob of WebDataset .tar files")
        self._index: dict[str, dict[str, tuple[int, int]]] = {}
        self._meta: dict[str, tuple[int, str, str]] = {}

    def __repr__(self) -> str:
        return f"ShardSource({self.root!r}, {len(self.shards)} shards)"

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def close(self) -> None:
        """Nothing stays open: every read opens its shard."""

    def members(self, shard: str) -> dict[str, tuple[int, int]]:
        """{member name: (data offset, size)} of a shard's regular files; ValueError if it is not a tar."""
        if shard not in self._index:
            full = join(self.base, shard)
            index: dict[str, tuple[int, int]] = {}
            if self.fs.size(full):
                try:
                    with self.fs.open(full, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                        for info in tar:
                            if info.isfile():
                                index[info.name] = (info.offset_data, info.size)
                except tarfile.TarError as err:
                    raise ValueError(f"{full} is not a tar archive ({err}); remove it from the shards, "
                                     "or pass a glob that matches only WebDataset .tar files") from None
            self._index[shard] = index
        return self._index[shard]

    def paths(self) -> list[str]:
        return sorted(
            f"{shard}/{name}" for shard in self.shards for name in self.members(shard)
            if name.lower().endswith(IMAGE_SUFFIXES) and _visible(name)
        )

    def _member(self, shard: str, name: str) -> bytes:
        try:
            offset, size = self.members(shard)[name]
        except KeyError:
            raise FileNotFoundError(f"{name!r} not in shard {shard}") from None
        with self.fs.open(join(self.base, shard), "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def _split_path(self, path: str) -> tuple[str, str]:
        match = _SHARD_PATH.match(path)
        if match is None or match.group(1) not in self.shards:
            raise FileNotFoundError(f"{path!r} is not <shard>.tar/<member> of {self.root}")
        return match.group(1), match.group(2)

    def _sample_meta(self, path: str) -> tuple[int, str, str]:
        """(label, split, problem) of the sample an image belongs to; cached."""
        if path not in self._meta:
            shard, name = self._split_path(path)
            folder_label, folder_split = label_and_split(path)
            folder, base = posixpath.split(name)
            key = posixpath.join(folder, base.split(".", 1)[0])
            members = self.members(shard)
            label = split = None
            problem = ""
            try:
                if f"{key}.cls" in members:
                    label = parse_label(self._member(shard, f"{key}.cls").decode("utf-8", "replace"))
                if f"{key}.json" in members:
                    record = json.loads(self._member(shard, f"{key}.json"))
                    if label is None and isinstance(record, dict):
                        label = parse_label(record.get("label"))
                    split = parse_split(record.get("split")) if isinstance(record, dict) else None
            except (BadEntry, json.JSONDecodeError) as err:
                problem = f"sample {key}: {err}"
            self._meta[path] = (folder_label if label is None else label,
                                folder_split if split is None else split, problem)
        return self._meta[path]

    def label_and_split(self, path: str) -> tuple[int, str]:
        label, split, _ = self._sample_meta(path)
        return label, split

    def read(self, path: str) -> bytes:
        shard, name = self._split_path(path)
        problem = self._sample_meta(path)[2]
        if problem:
            raise BadEntry(problem)
        return self._member(shard, name)
