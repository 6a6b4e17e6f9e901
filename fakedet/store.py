"""The embedding cache: one HDF5 file per dataset.

Layout of ``cache/<dataset>.h5``::

    attrs: format, source, created, updated
    /images/<column>            the image table (one row per file: id, path, split, label, ...)
    /failures/<column>          images that could not be embedded: id, path, reason
    /embeddings/<key>/ids       (N,) content ids, aligned with
    /embeddings/<key>/X         (N, D) float32 or float16, chunked and resizable
    /embeddings/<key>.attrs     spec, fingerprint, identity, dim, count, versions, created, updated
    /projections/<key>/<name>/  ids + 2-D coordinates of a projection of that set

Identical images (same content id) are embedded once. Appends are committed by the ``count``
attribute, written and flushed after the rows, so a reader (or a resumed run after a crash)
never trusts rows past it. One writer at a time: ``Store.writer()`` holds an ``flock`` on
``<file>.lock`` that the OS releases if the process dies.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from .store_tables import StoreError, finish_swap, read_table, table_group
from .store_writer import FORMAT, StoreWriter, check_or_init

DEFAULT_CACHE = Path("cache")
JSON_ATTRS = ("identity", "config", "versions")  # set attributes stored as JSON text
READ_BLOCK_BYTES = 256 * 2**20  # rows read at a time when loading part of a set


class StoreLocked(StoreError):
    """Another process is writing this cache."""


def store_path(name: str, cache: str | Path | None = None) -> Path:
    """The store file for dataset ``name``: ``cache`` may be a folder (default ``cache/``) or an ``.h5`` file."""
    cache = Path(cache) if cache is not None else DEFAULT_CACHE
    if cache.suffix in (".h5", ".hdf5"):
        return cache
    return cache / f"{name}.h5"


@dataclass
class Embeddings:
    """One embedding set read back: ``X[i]`` belongs to ``frame.iloc[i]`` (one row per content id)."""

    X: np.ndarray
    frame: pd.DataFrame
    key: str
    attrs: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    @property
    def y(self) -> np.ndarray:
        return self.frame["label"].to_numpy()


class Store:
    """Read access to a cache file; ``writer()`` for the single writer."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _read(self) -> Iterator[h5py.File]:
        if not self.exists:
            raise StoreError(f"no cache at {self.path}; run `fakedet extract DATA` first (or pass --cache)")
        with _open_h5(self.path, "r") as f:
            fmt = f.attrs.get("format")
            if fmt != FORMAT:
                raise StoreError(f"{self.path} is not a {FORMAT} cache (format={fmt!r}); move it away and re-extract")
            try:
                yield f
            except (OSError, KeyError) as err:  # a damaged object inside an openable file
                raise StoreError(f"cache {self.path} is damaged ({err}); move it aside "
                                 f"(mv {self.path} {self.path}.bad) and run `fakedet extract` again") from None

    def attrs(self) -> dict:
        with self._read() as f:
            return dict(f.attrs)

    def images(self) -> pd.DataFrame:
        """The image table: one row per file, as discovered."""
        with self._read() as f:
            group = table_group(f, "images")
            return read_table(group) if group is not None else pd.DataFrame()

    def failures(self) -> pd.DataFrame:
        """Images that could not be embedded, with the reason."""
        with self._read() as f:
            group = table_group(f, "failures")
            return read_table(group) if group is not None else pd.DataFrame(columns=["id", "path", "reason"])

    def embedding_sets(self) -> pd.DataFrame:
        """One row per embedding set: key, spec, fingerprint, dim, count, dtype, layers, resize, size, scales,
        precision, perturb, created, updated."""
        rows = []
        with self._read() as f:
            for key, group in f.get("embeddings", {}).items():
                a = group.attrs
                identity = json.loads(a["identity"])
                rows.append({
                    "key": key,
                    "spec": a["spec"],
                    "fingerprint": a["fingerprint"],
                    "dim": int(a["dim"]),
                    "count": int(a["count"]),
                    "dtype": str(group["X"].dtype),
                    "layers": identity.get("layers"),
                    "resize": identity.get("preprocess", {}).get("policy"),
                    "size": identity.get("preprocess", {}).get("size"),
                    "scales": ",".join(f"{v:g}" for v in identity.get("scales", [1])),
                    "precision": identity.get("precision"),
                    "perturb": a.get("perturb", ""),
                    "created": a["created"],
                    "updated": a["updated"],
                })
        return pd.DataFrame(rows)

    def resolve_key(self, name: str) -> str:
        """An embedding-set key from a key, a unique key prefix or a backbone spec."""
        sets = self.embedding_sets()
        if sets.empty:
            raise StoreError(f"{self.path} holds no embeddings yet; run `fakedet extract` first")
        for candidates in (sets[sets.key == name], sets[sets.spec == name], sets[sets.key.str.startswith(name)]):
            if len(candidates) == 1:
                return candidates.key.iloc[0]
            if len(candidates) > 1:
                listing = "\n  ".join(candidates.key)
                raise StoreError(f"{name!r} matches several embedding sets in {self.path}; name one:\n  {listing}")
        listing = "\n  ".join(f"{k}  ({s})" for k, s in zip(sets.key, sets.spec))
        raise StoreError(f"no embedding set {name!r} in {self.path}; it holds:\n  {listing}")

    def embedded_ids(self, key: str) -> np.ndarray:
        """Content ids already embedded in set ``key`` (committed rows only)."""
        with self._read() as f:
            if f"embeddings/{key}" not in f:
                return np.zeros(0, dtype=str)
            group = f["embeddings"][key]
            return group["ids"][: int(group.attrs["count"])].astype(str)

    def frame(self, key: str) -> pd.DataFrame:
        """The rows ``load(key).frame`` holds (one per embedded content id), without reading X."""
        frame = per_id(self.images())
        return frame[frame["id"].isin(self.embedded_ids(key))].reset_index(drop=True)

    def load(self, name: str, *, dtype=np.float32, ids=None) -> Embeddings:
        """Embeddings of set ``name`` (key or spec) with one image-table row per content id; ``ids``: only
        the rows of these content ids (read in blocks, so memory holds only them), in the set's order."""
        key = self.resolve_key(name)
        with self._read() as f:
            group = f["embeddings"][key]
            count = int(group.attrs["count"])
            stored = group["ids"][:count].astype(str)
            attrs = {k: (json.loads(v) if k in JSON_ATTRS else v) for k, v in group.attrs.items()}
            frame = per_id(read_table(table_group(f, "images")))
            position = pd.Index(frame["id"]).get_indexer(stored)  # hash lookup; -1: no longer in the image table
            keep = position >= 0
            if ids is not None:
                keep &= pd.Index(stored).isin(ids)
            X = _read_rows(group["X"], keep, dtype)
        return Embeddings(X=X, frame=frame.iloc[position[keep]].reset_index(drop=True), key=key, attrs=attrs)

    def projection(self, key: str, name: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
        """Cached projection ``name`` of set ``key``: (ids, coords, params), or None."""
        with self._read() as f:
            path = f"projections/{key}/{name}"
            if path not in f or "params" not in f[path].attrs:
                return None
            group = f[path]
            return group["ids"][()].astype(str), group["coords"][()], json.loads(group.attrs["params"])

    def writing(self) -> str:
        """Who holds the write lock ("pid N"), or "" when nobody is writing."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        if not lock_path.is_file():
            return ""
        with open(lock_path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
        return ""

    def missing(self, key: str) -> int:
        """Readable images of the image table that set ``key`` does not hold yet (failed ones excluded)."""
        images = self.images()
        if images.empty:
            return 0
        expected = set(images.loc[images["error"] == "", "id"]) - set(self.failures()["id"])
        return len(expected - set(self.embedded_ids(key)))

    def require_complete(self, key: str, allow_partial: bool = False) -> None:
        """Raise StoreError if set ``key`` lacks readable images of the image table (an extraction still
        running or interrupted), unless ``allow_partial``."""
        if allow_partial:
            return
        missing = self.missing(key)
        if missing:
            holder = self.writing()
            state = f"is still being written by {holder}" if holder else "was interrupted"
            raise StoreError(
                f"embedding set {key} in {self.path} is incomplete: {missing} of the images in its table are not "
                f"embedded yet (the extraction {state}). Finish it (run the same `fakedet extract` again), "
                "or pass --allow-partial to use the rows it has"
            )

    @contextmanager
    def writer(self, source: str | None = None) -> Iterator["StoreWriter"]:
        """Exclusive write access; raises ``StoreLocked`` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreLocked(
                f"{self.path} is being written by {holder}; wait for it to finish, "
                "or write to another cache with --cache"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            with _open_h5(self.path, "a") as f:
                check_or_init(f, self.path, source)
                for table in ("images", "failures"):
                    finish_swap(f, table)
                yield StoreWriter(f)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file; a file that is not one, truncated or damaged is one StoreError naming it."""
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as err:
        reason = str(err).split("(")[-1].rstrip(")") if "(" in str(err) else str(err)
        raise StoreError(
            f"cannot open cache {path}: {reason}; it is not a readable HDF5 file (truncated or damaged). "
            f"Move it aside (mv {path} {path}.bad) and run `fakedet extract` again"
        ) from None


def _read_rows(dataset: h5py.Dataset, keep: np.ndarray, dtype) -> np.ndarray:
    """The rows of ``dataset`` where ``keep`` (its first ``len(keep)`` rows) is true, as ``dtype``: read
    whole when all are kept, else in blocks of about ``READ_BLOCK_BYTES`` so no unkept row is held."""
    if keep.all():
        return dataset[:len(keep)].astype(dtype, copy=False)
    out = np.empty((int(keep.sum()), dataset.shape[1]), dtype=dtype)
    step = max(1, READ_BLOCK_BYTES // max(1, dataset.shape[1] * dataset.dtype.itemsize))
    filled = 0
    for start in np.flatnonzero(np.add.reduceat(keep, np.arange(0, len(keep), step))) * step:
        rows = keep[start:start + step]
        block = dataset[start:start + len(rows)][rows]
        out[filled:filled + len(block)] = block
        filled += len(block)
    return out


def per_id(images: pd.DataFrame) -> pd.DataFrame:
    """Collapse the image table to one row per content id (first path wins) with ``n_copies``
    and ``label_conflict`` (same content filed under different labels)."""
    ordered = images.sort_values("path", kind="stable")
    grouped = ordered.groupby("id", sort=False)
    first = grouped.head(1).set_index("id")
    first["n_copies"] = grouped.size()
    first["label_conflict"] = grouped["label"].nunique() > 1
    return first.reset_index()
