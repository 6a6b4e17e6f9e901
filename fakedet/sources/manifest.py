"""A manifest table: Parquet or CSV with one row per image, local or at a URL.

Columns: ``path`` or ``url`` (required: relative to the manifest's folder, absolute, or any
fsspec URL), ``label`` (optional: real/fake or 0/1; else taken from the folder names of the
path) and ``split`` (optional: train/val/test; else from the folder names). Rows whose file is
missing or whose label or split is not one of these are recorded as failures, not fatal.
"""
from __future__ import annotations

import fsspec
import pandas as pd

from ..datasets import ImageSource, label_and_split
from .fs import join, resolve, stem
from .labels import BadEntry, parse_label, parse_split

LOCATION_COLUMNS = ("path", "url")


class ManifestSource(ImageSource):
    """``ImageSource`` whose paths are the manifest's ``path``/``url`` values (first row wins for repeats)."""

    kind = "manifest"

    def __init__(self, location: str) -> None:
        self.fs, self.path, self.root = resolve(location)
        if not self.fs.isfile(self.path):
            raise FileNotFoundError(f"no such manifest: {location}")
        self.name = stem(self.path)
        self.base = self.path.rsplit("/", 1)[0] if "/" in self.path else ""
        table = self._load(location)
        column = next(c for c in LOCATION_COLUMNS if c in table.columns)
        table = table[table[column].notna()].drop_duplicates(column)
        self.entries: dict[str, tuple[object, object]] = {
            str(row[0]): (row[1], row[2])
            for row in zip(table[column], table.get("label", [None] * len(table)),
                           table.get("split", [None] * len(table)))
        }

    def _load(self, location: str) -> pd.DataFrame:
        with self.fs.open(self.path, "rb") as handle:
            try:
                if self.path.lower().endswith(".csv"):
                    table = pd.read_csv(handle, dtype=str, keep_default_na=False, na_values=[""])
                else:
                    table = pd.read_parquet(handle)
            except Exception as err:  # pandas / pyarrow raise many types for malformed files
                raise ValueError(f"cannot read manifest {location}: {err}") from None
        table.columns = [str(c).strip().lower() for c in table.columns]
        if not any(c in table.columns for c in LOCATION_COLUMNS):
            raise ValueError(
                f"manifest {location} has no 'path' or 'url' column (columns: {', '.join(table.columns) or 'none'}); "
                "add one with each image's location (relative to the manifest, absolute, or a URL)"
            )
        return table

    def __repr__(self) -> str:
        return f"ManifestSource({self.root!r}, {len(self.entries)} entries)"

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def close(self) -> None:
        """Nothing stays open: every read opens its file."""

    def paths(self) -> list[str]:
        return sorted(self.entries)

    def _parsed(self, path: str) -> tuple[int, str]:
        label, split = self.entries[path]
        folder_label, folder_split = label_and_split(path)
        parsed_label, parsed_split = parse_label(label), parse_split(split)
        return (folder_label if parsed_label is None else parsed_label,
                folder_split if parsed_split is None else parsed_split)

    def label_and_split(self, path: str) -> tuple[int, str]:
        try:
            return self._parsed(path)
        except BadEntry:
            return -1, ""

    def read(self, path: str) -> bytes:
        if path not in self.entries:
            raise FileNotFoundError(f"{path!r} is not in manifest {self.root}")
        self._parsed(path)  # raises BadEntry for a bad label or split
        if "://" in path:
            with fsspec.open(path, "rb") as handle:
                return handle.read()
        full = path if path.startswith("/") else join(self.base, path)
        return self.fs.cat_file(full)
