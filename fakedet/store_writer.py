"""Writing into the embedding cache: the store's stamp, its tables, and embedding sets appended row block
by row block, each block committed by the ``count`` attribute and flushed (see ``fakedet.store``)."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .provenance import now, versions
from .store_tables import ID_DTYPE, StoreError, finish_swap, read_table, write_table

FORMAT = "fakedet-store/1"


def check_or_init(f: h5py.File, path: Path, source: str | None) -> None:
    """Stamp a new file as a fakedet store, or refuse one of another format or another dataset."""
    if "format" not in f.attrs:
        if len(f):
            raise StoreError(f"{path} is an HDF5 file that fakedet did not write; choose another --cache")
        f.attrs.update({"format": FORMAT, "source": source or "", "created": now(), "updated": now()})
    elif f.attrs["format"] != FORMAT:
        raise StoreError(f"{path} has format {f.attrs['format']!r}, this fakedet writes {FORMAT}; re-extract into a new cache")
    elif source and f.attrs["source"] and f.attrs["source"] != source:
        raise StoreError(
            f"{path} holds embeddings of {f.attrs['source']}, not {source}; "
            "pass --cache to write this dataset elsewhere, or delete the old cache"
        )


class StoreWriter:
    """Writes into an open store; obtained from ``Store.writer()``."""

    def __init__(self, f: h5py.File):
        self.f = f

    def _touch(self) -> None:
        self.f.attrs["updated"] = now()

    def write_images(self, frame: pd.DataFrame, replace: bool = True) -> None:
        """Replace the image table (a full discovery is the truth), or merge a subset into it by path."""
        if not replace and "images" in self.f:
            old = read_table(self.f["images"])
            frame = pd.concat([old[~old["path"].isin(frame["path"])], frame]).sort_values("path", kind="stable")
        write_table(self.f, "images", frame.reset_index(drop=True))
        self._touch()
        self.f.flush()

    def add_failures(self, frame: pd.DataFrame) -> None:
        """Record images that failed (id, path, reason); one row per id, latest reason wins."""
        new = frame[["id", "path", "reason"]]
        old = read_table(self.f["failures"]) if "failures" in self.f else new.iloc[:0]
        merged = pd.concat([old, new]).drop_duplicates("id", keep="last")
        write_table(self.f, "failures", merged.reset_index(drop=True))
        self.f.flush()

    def open_set(self, key: str, attrs: dict, dim: int, dtype: str = "float32") -> "SetWriter":
        """Create embedding set ``key`` or reopen it for appending (same fingerprint and dtype)."""
        sets = self.f.require_group("embeddings")
        if key in sets:
            group = sets[key]
            if group.attrs["fingerprint"] != attrs["fingerprint"] or int(group.attrs["dim"]) != dim:
                raise StoreError(
                    f"embedding set {key} in {self.f.filename} was made by another model "
                    f"(fingerprint {group.attrs['fingerprint'][:12]}); delete the set or use another --cache"
                )
            if str(group["X"].dtype) != np.dtype(dtype).name:
                raise StoreError(
                    f"embedding set {key} is stored as {group['X'].dtype}; pass --dtype {group['X'].dtype} "
                    "to resume it, or delete the set to store it anew"
                )
        else:
            group = sets.create_group(key)
            rows = max(16, min(4096, (1 << 20) // (dim * np.dtype(dtype).itemsize)))
            group.create_dataset("ids", shape=(0,), maxshape=(None,), dtype=ID_DTYPE, chunks=(4096,))
            group.create_dataset("X", shape=(0, dim), maxshape=(None, dim), dtype=dtype, chunks=(rows, dim))
            group.attrs.update({"count": 0, "created": now(), "dim": dim})
        group.attrs.update({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in attrs.items()})
        group.attrs["versions"] = json.dumps(versions(), sort_keys=True)
        return SetWriter(self.f, group)

    def put_projection(self, key: str, name: str, ids: np.ndarray, coords: np.ndarray, params: dict) -> None:
        group = self.f.require_group(f"projections/{key}")
        if f"{name}.new" in group:
            del group[f"{name}.new"]
        sub = group.create_group(f"{name}.new")
        sub.create_dataset("ids", data=np.asarray(ids, dtype=ID_DTYPE))
        sub.create_dataset("coords", data=np.asarray(coords, dtype=np.float32))
        sub.attrs["params"] = json.dumps(params, sort_keys=True)  # last: marks it complete
        self.f.flush()
        finish_swap(group, name, marker="params")


class SetWriter:
    """Appends rows to one embedding set; each ``append`` is committed and flushed."""

    def __init__(self, f: h5py.File, group: h5py.Group):
        self.f, self.group = f, group
        count = int(group.attrs["count"])
        for name in ("ids", "X"):  # drop rows a killed run wrote but never committed
            if group[name].shape[0] != count:
                group[name].resize(count, axis=0)

    @property
    def count(self) -> int:
        return int(self.group.attrs["count"])

    def ids(self) -> np.ndarray:
        """Committed content ids."""
        return self.group["ids"][: self.count].astype(str)

    def append(self, ids: np.ndarray, X: np.ndarray) -> None:
        n, m = self.count, len(ids)
        if m == 0:
            return
        for name, data in (("X", X), ("ids", np.asarray(ids, dtype=ID_DTYPE))):
            self.group[name].resize(n + m, axis=0)
            self.group[name][n:] = data
        self.group.attrs["count"] = n + m
        self.group.attrs["updated"] = now()
        self.f.flush()
