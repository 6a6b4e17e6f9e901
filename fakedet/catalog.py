"""Where things live: the cache root, a dataset's store, embedding sets, models and fine-tune runs.

Everything is found under one cache root (``--cache``, default ``cache/``; an ``.h5`` file
given as the cache means its folder)::

    <root>/<dataset>.h5                 a dataset's store (``store_path``)
    <root>/models/<name>/               a saved model (``model_dir``; ``model_name`` names it)
    <root>/finetuned/<name>/best.pt     a fine-tune run's backbone (``finetune_dir``)

Torch-free: the heads, the model file and the CLI use it without loading a backbone.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .backbone_config import short_spec
from .datasets import LABEL_NAMES, open_source
from .sources import is_dataset
from .store import DEFAULT_CACHE, Store, StoreError, store_path

SET_COLUMNS = ["key", "dim", "count", "dtype", "layers", "resize", "size", "scales", "precision", "updated"]
MODEL_META = "model.json"  # the file that marks a model folder (fakedet.detector.META_FILE)


def cache_root(cache: str | Path | None = None) -> Path:
    """The cache folder: ``cache`` (default ``cache/``), or the folder of a ``.h5`` file."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    return root.parent if root.suffix in (".h5", ".hdf5") else root


def cache_files(cache: str | Path | None = None) -> list[Path]:
    """The store files in ``cache`` (a folder, or one ``.h5`` file)."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    return [root] if root.suffix in (".h5", ".hdf5") else sorted(root.glob("*.h5"))


def find_store(data: str | Path | None = None, cache: str | Path | None = None) -> Store:
    """The store for ``data``: a dataset (folder, zip, shards, manifest, URL: ``sources.is_dataset``), a ``.h5`` file, a dataset name, or (None) the only one."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    if data is None and root.suffix in (".h5", ".hdf5"):
        return Store(root)
    caches = cache_files(root)
    listing = "\n  ".join(str(c) for c in caches) or "(none; run `fakedet extract DATA` first)"
    if data is None:
        if len(caches) == 1:
            return Store(caches[0])
        found = "several caches" if caches else "no cache"
        raise StoreError(f"{found} in {root}; pass --data with one of:\n  {listing}")
    path = Path(data)
    if path.suffix in (".h5", ".hdf5"):
        return Store(path)
    if is_dataset(data):
        return Store(store_path(open_source(data).name, cache))
    store = Store(store_path(str(data), cache))
    if not store.exists:
        raise StoreError(f"{data} is neither a dataset, a cache file nor a cached dataset; "
                         f"caches in {root}:\n  {listing}")
    return store


def source_store(source: str | Path, cache: str | Path | None = None) -> Store:
    """The store a dataset (folder, zip, shards, manifest, URL) is extracted into (it may not exist yet)."""
    return Store(store_path(open_source(source).name, cache))


def pick_set(store: Store, backbone: str | None = None) -> str:
    """Embedding-set key for ``backbone`` (spec, key or key prefix), or the store's only set."""
    if backbone is not None:
        return store.resolve_key(backbone)
    sets = store.embedding_sets()
    if len(sets) == 1:
        return sets["key"].iloc[0]
    listing = "\n  ".join(sets["key"]) or "(none; run `fakedet extract` first)"
    raise StoreError(f"{store.path} holds {len(sets)} embedding sets; choose one with --backbone:\n  {listing}")


def clean_sets(store: Store) -> list[str]:
    """Keys of the unperturbed embedding sets of ``store`` (none when it does not exist)."""
    sets = store.embedding_sets() if store.exists else pd.DataFrame()
    return list(sets.loc[sets["perturb"] == "", "key"]) if not sets.empty else []


def matching_set(store: Store, fingerprint: str, prefer: str | None = None) -> str | None:
    """The one rule for "embeddings made by this backbone": an unperturbed set of ``store`` with
    ``fingerprint`` (``prefer``, e.g. the model's own key, first), or None."""
    if not store.exists:
        return None
    sets = store.embedding_sets()
    if sets.empty:
        return None
    keys = list(sets.loc[(sets["fingerprint"] == fingerprint) & (sets["perturb"] == ""), "key"])
    if prefer in keys:
        return prefer
    return keys[0] if keys else None


def model_name(detector) -> str:
    """Default name of a fitted ``Detector``: ``<dataset>-<embedding set key>-<head>``, datasets joined by ``+``
    when it was fit on several, ``-aug`` appended when on augmented copies too, ``-stack`` for stacked fused sets."""
    training = detector.training
    dataset = "+".join(s["dataset"] for s in training.get("sources", [])) or training["dataset"]
    stacked = training.get("fusion", {}).get("mode") == "stack"
    return (f"{dataset}-{detector.key}-{detector.head}" + ("-aug" if "augment" in training else "")
            + ("-stack" if stacked else ""))


def model_dir(name: str, cache: str | Path | None = None) -> Path:
    """Default folder of model ``name``: ``<cache>/models/<name>``."""
    return cache_root(cache) / "models" / name


def find_model(model: str | Path, cache: str | Path | None = None) -> Path:
    """A model folder given as a path or as a name under ``<cache>/models/``."""
    for candidate in (Path(model), model_dir(str(model), cache)):
        if (candidate / MODEL_META).is_file():
            return candidate
    known = sorted(p.parent.name for p in (cache_root(cache) / "models").glob(f"*/{MODEL_META}"))
    raise StoreError(f"no model {model}; saved models: {', '.join(known) or 'none (run `fakedet fit`)'}")


def run_name(backbone_spec: str, dataset: str) -> str:
    """Default fine-tune run name ``<base>-<dataset>`` with only letters, digits, ``_`` and ``-``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{short_spec(backbone_spec)}-{dataset}").strip("_")


def finetune_dir(name: str, cache: str | Path | None = None) -> Path:
    """Folder of fine-tune run ``name``: ``<cache>/finetuned/<name>``."""
    return cache_root(cache) / "finetuned" / name


def finetuned_checkpoint(name: str, cache: str | Path | None = None) -> Path:
    """The backbone checkpoint of ``finetuned:<name>``: a ``.pt`` path as is, else ``<cache>/finetuned/<name>/best.pt``."""
    path = Path(name)
    return path if path.suffix else finetune_dir(name, cache) / "best.pt"


def describe(cache: str | Path | None = None, check: bool = False) -> list[dict]:
    """What each store in ``cache`` holds: path, source, image counts by split and label, embedding sets
    and failures (``fakedet info``); with ``check``, also ``problems``: what reading it whole found wrong
    (``storecheck.check_store``)."""
    from .storecheck import check_store

    found = []
    for path in cache_files(cache):
        store = Store(path)
        images, sets = store.images(), store.embedding_sets()
        counts = pd.DataFrame()
        if not images.empty:
            counts = images.groupby(["split", "label"]).size().rename("files").reset_index()
            counts["label"] = counts["label"].map(LABEL_NAMES)
        found.append({
            "path": path, "source": store.attrs()["source"], "files": len(images),
            "distinct": images["id"].nunique() if not images.empty else 0, "counts": counts,
            "sets": sets[SET_COLUMNS] if not sets.empty else sets, "failures": store.failures(),
            **({"problems": check_store(store)} if check else {}),
        })
    return found
