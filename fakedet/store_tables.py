"""The store's tables (the image table, failures) as HDF5 groups of columns, and the atomic swap that
rewrites them: new columns are written under ``<name>.new`` and moved into place once complete, so a
failure or a kill at any point leaves the previous table readable; and ``StoreError``, which every layer of
the store raises. Used by ``fakedet.store`` and ``fakedet.store_writer`` only."""
from __future__ import annotations

import json

import h5py
import pandas as pd

ID_DTYPE = "S32"


class StoreError(RuntimeError):
    """The cache cannot be used as asked; the message says what to do."""


def write_table(f: h5py.File, name: str, frame: pd.DataFrame) -> None:
    """Replace table ``name`` atomically: the new columns are written and flushed under ``<name>.new``, then
    swapped in; a failure or a kill at any point leaves a readable table (see ``finish_swap``)."""
    staging = f"{name}.new"
    if staging in f:
        del f[staging]
    group = f.create_group(staging)
    try:
        for column in frame.columns:
            values = frame[column]
            if column == "id":
                group.create_dataset(column, data=values.to_numpy(dtype=ID_DTYPE))
            elif values.dtype == object or pd.api.types.is_string_dtype(values):
                group.create_dataset(column, data=values.astype(str).to_numpy(dtype=object), dtype=h5py.string_dtype())
            else:
                group.create_dataset(column, data=values.to_numpy())
        group.attrs["columns"] = json.dumps(list(frame.columns))  # written last: marks the table complete
        f.flush()
    except BaseException:
        del f[staging]
        raise
    finish_swap(f, name)


def finish_swap(parent: h5py.Group, name: str, marker: str = "columns") -> None:
    """Move ``<name>.new`` into place if complete (its ``marker`` attribute is written last), else drop it.
    Also completes a swap that a killed writer left half done."""
    staging = f"{name}.new"
    if staging not in parent:
        return
    if marker not in parent[staging].attrs:
        del parent[staging]
    else:
        if name in parent:
            del parent[name]
        parent.move(staging, name)
    parent.file.flush()


def table_group(f: h5py.File, name: str) -> h5py.Group | None:
    """Table ``name`` as committed: a complete ``<name>.new`` a killed writer did not swap in yet wins."""
    staging = f.get(f"{name}.new")
    if staging is not None and "columns" in staging.attrs:
        return staging
    return f.get(name)


def read_table(group: h5py.Group) -> pd.DataFrame:
    """The table stored in ``group``; StoreError naming the file if a column is missing."""
    missing = [c for c in json.loads(group.attrs.get("columns", "null")) or ["columns"] if c not in group]
    if missing:
        raise StoreError(f"{group.file.filename}: table {group.name} lacks {', '.join(missing)} (damaged by an older "
                         "fakedet); move the file aside and re-extract")
    columns = json.loads(group.attrs["columns"])
    data = {}
    for column in columns:
        raw = group[column]
        if column == "id":
            data[column] = raw[()].astype(str)
        elif h5py.check_string_dtype(raw.dtype) is not None:
            data[column] = raw.asstr()[()]
        else:
            data[column] = raw[()]
    return pd.DataFrame(data, columns=columns)
