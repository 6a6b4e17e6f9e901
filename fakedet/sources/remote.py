"""A folder, zip archive or image file at an fsspec URL (``s3://``, ``gs://``, ``https://``, ``memory://``...)."""
from __future__ import annotations

import os
import posixpath
import zipfile

from ..datasets import ImageSource, _visible
from .fs import join, resolve, stem


class RemoteSource(ImageSource):
    """``ImageSource`` over fsspec: same paths, labels and ids as the same data stored locally."""

    def __init__(self, url: str) -> None:
        self.fs, self.path, self.root = resolve(url)
        if self.fs.isdir(self.path):
            self.kind = "folder"
        elif self.fs.isfile(self.path):
            self.kind = "zip" if self.path.lower().endswith(".zip") else "file"
        else:
            raise FileNotFoundError(f"no such file or folder: {url}")
        self.name = stem(self.path) if self.kind != "folder" else posixpath.basename(self.path)
        self._zip = self._pid = None

    def __repr__(self) -> str:
        return f"RemoteSource({self.root!r}, kind={self.kind!r})"

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.fs.open(self.path, "rb")), os.getpid()
        return self._zip

    def paths(self) -> list[str]:
        if self.kind != "folder":
            return super().paths() if self.kind == "zip" else [posixpath.basename(self.path)]
        prefix = self.path.rstrip("/") + "/"
        found = (name[len(prefix):] for name in self.fs.find(self.path) if name.startswith(prefix))
        return sorted(name for name in found if _visible(name))

    def read(self, path: str) -> bytes:
        if self.kind == "zip":
            return super().read(path)
        if self.kind == "file":
            if path != posixpath.basename(self.path):
                raise FileNotFoundError(f"{path!r} is not {self.root}")
            return self.fs.cat_file(self.path)
        parts = path.split("/")
        if not path or path.startswith("/") or ".." in parts:
            raise FileNotFoundError(f"{path!r} is not a path inside {self.root}")
        return self.fs.cat_file(join(self.path, path))

