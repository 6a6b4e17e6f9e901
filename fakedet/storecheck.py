"""``fakedet info --check``: read a whole store and say what is wrong with it."""
from __future__ import annotations

import numpy as np

from .store import Store


def check_store(store: Store) -> list[str]:
    """Problems found by reading the whole of ``store`` (tables, counts, ids, NaN/inf rows); [] when sound."""
    problems = []
    images = store.images()
    failures = store.failures()
    if images.empty:
        problems.append("no image table")
    elif images["path"].duplicated().any():
        problems.append(f"image table: {int(images['path'].duplicated().sum())} paths listed twice")
    bad_ids = [i for i in images.get("id", []) if len(i) != 32]
    if bad_ids:
        problems.append(f"image table: {len(bad_ids)} malformed ids, e.g. {bad_ids[0]!r}")
    with store._read() as f:
        leftovers = [name for name in f if name.endswith(".new")]
        problems += [f"unfinished rewrite of {name[:-4]} (opening the cache for writing finishes it)"
                     for name in leftovers]
        for key, group in f.get("embeddings", {}).items():
            count = int(group.attrs["count"])
            rows = min(group["ids"].shape[0], group["X"].shape[0])
            if rows < count:
                problems.append(f"set {key}: count says {count} rows, only {rows} stored")
                count = rows
            ids = group["ids"][:count].astype(str)
            if len(set(ids)) != len(ids):
                problems.append(f"set {key}: {len(ids) - len(set(ids))} ids embedded twice")
            step = max(1, (1 << 24) // max(1, group["X"].shape[1] * 4))
            bad = sum(int((~np.isfinite(group["X"][i:i + step])).any(axis=1).sum()) for i in range(0, count, step))
            if bad:
                problems.append(f"set {key}: {bad} rows hold NaN or inf")
    for key in store.embedding_sets().get("key", []):
        missing = store.missing(key)
        if missing:
            problems.append(f"set {key}: {missing} readable images not embedded yet ({len(failures)} failed)")
    return problems
