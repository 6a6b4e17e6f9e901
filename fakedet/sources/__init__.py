"""Datasets beyond local folders and zips: WebDataset tar shards, manifest tables, fsspec URLs.

``open_extra`` picks the source for a location that the local ``ImageSource`` does not read;
``datasets.open_source`` asks it first. Every source has the ``ImageSource`` interface
(``paths``, ``read``, ``label_and_split``, ``name``, ``root``), so discovery, both extraction
engines, ``predict`` and ``evaluate --data`` work on all of them unchanged.

Locations with a protocol (``s3://``, ``gs://``, ``https://``, ``memory://``, ``file://``) are
read through fsspec; object stores need their fsspec driver installed (s3fs, gcsfs).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..datasets import ImageSource

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
SHARD_SUFFIX = ".tar"
_GLOB = set("*?[")


def is_url(location: str | os.PathLike) -> bool:
    """True for ``protocol://...`` locations (read through fsspec)."""
    return "://" in str(location)


def is_glob(location: str | os.PathLike) -> bool:
    """True for a pattern like ``shards/*.tar`` (a local path that exists is never a pattern)."""
    text = str(location)
    return bool(_GLOB & set(text)) and (is_url(text) or not Path(text).exists())


def is_dataset(location: str | os.PathLike) -> bool:
    """True when ``location`` names a collection of images: folder, zip, shards, manifest or URL."""
    text = str(location)
    if is_url(text) or is_glob(text):
        return True
    path = Path(text)
    return path.is_dir() or (path.is_file() and path.suffix.lower() in (".zip", SHARD_SUFFIX, *MANIFEST_SUFFIXES))


def open_extra(location: str | os.PathLike) -> ImageSource | None:
    """The source for shards, a manifest or a URL; None for a local folder, zip or image file."""
    from .manifest import ManifestSource
    from .remote import RemoteSource
    from .webdataset import ShardSource, holds_shards

    text = str(location)
    lower = text.lower().rstrip("/")
    if lower.endswith(MANIFEST_SUFFIXES):
        return ManifestSource(text)
    if lower.endswith(SHARD_SUFFIX) or is_glob(text) or holds_shards(text):
        return ShardSource(text)
    return RemoteSource(text) if is_url(text) else None
