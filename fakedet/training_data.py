"""What a fit trains on: one or several datasets' embeddings of one backbone with their splits,
plus augmented copies of the training images, embedded once through the cache.

* Several datasets: each gets its own split (its folders, or a seeded stratified carve); an
  image found in several datasets (same content id) takes the split it has in the first, so
  identical content never straddles train and val across datasets either. All must be
  embedded with the same backbone settings (fingerprint), or the fit is refused with the
  ``fakedet extract`` command that makes the missing set.
* Several embedding sets of each dataset (a fused fit, ``fakedet.fusion``): every dataset reads the
  sets with the fingerprints of the first dataset's, aligned by content id within each dataset.
* Augmentation: each ``Augmentation`` copy of the **training** images is extracted into its own
  set ``<key>+aug-...-c<k>`` of the dataset's store (resumable, failures recorded, reused by any
  later fit with the same spec; a fused fit's copies in each of its sets, then fused). Copies only
  ever join the training rows: val and test stay clean.
* ``source_weights``: per-row weights giving every source the same total weight.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .backbone_config import BackboneConfig
from .catalog import find_store, matching_set, pick_set
from .fusion import load_sets, members, resolve_sets
from .detector import ModelMismatch
from .perturb import Augmentation
from .sources import is_dataset
from .splits import assign_splits
from .store import Embeddings, Store, per_id


@dataclass
class TrainingData:
    """Rows of every dataset (``emb.frame['source']`` names each row's dataset), their split, and the
    augmented training rows (``extra``: X, y, source), if any."""

    emb: Embeddings
    split: np.ndarray
    how: dict[str, str]
    stores: list[Store]
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    augment: dict = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        return [s.path.stem for s in self.stores]

    def train_sources(self) -> np.ndarray:
        """Source of each training row, in fit order: the train rows, then the augmented rows."""
        rows = (self.split == "train") & (self.emb.y >= 0)
        own = self.emb.frame["source"].to_numpy()[rows]
        return own if self.extra is None else np.concatenate([own, self.extra[2]])


def gather(data: list[str | Path | None], backbone: str | list[str] | None = None, cache: str | Path | None = None,
           *, val_size: float = 0.2, test_size: float = 0.0, random_state: int = 0,
           allow_partial: bool = False) -> TrainingData:
    """Embeddings and splits of ``data`` (each as for ``find_store``) from one backbone's sets, or several
    fused (``backbone`` a list, or names joined with ``+``); refuses a set still missing images of its table
    unless ``allow_partial``."""
    stores = [find_store(d, cache) for d in data]
    names = [s.path.stem for s in stores]
    if len(set(names)) < len(names):
        raise ValueError(f"a dataset is named twice: {', '.join(names)}")
    sets = [backbone] if isinstance(backbone, str) else list(backbone or [])
    first_keys = resolve_sets(stores[0], sets) if sets else [pick_set(stores[0])]
    first = load_sets(stores[0], first_keys, allow_partial)
    parts, splits, how = [first], [], {}
    for store in stores[1:]:
        keys = []
        for member in members(first):
            key = matching_set(store, member["fingerprint"])
            if key is None:
                raise ModelMismatch(
                    f"{store.path} holds no embeddings with the settings of {member['key']} (fingerprint "
                    f"{member['fingerprint'][:12]}); datasets fit together must share them. Extract with:\n  "
                    f"fakedet extract {store.attrs().get('source', 'DATA')} --cache {store.path} "
                    f"{BackboneConfig.from_set_attrs(member).options()}")
            keys.append(key)
        parts.append(load_sets(store, keys, allow_partial))
    for store, emb in zip(stores, parts):
        emb.frame = emb.frame.assign(source=store.path.stem)
        split, how[store.path.stem] = assign_splits(emb.frame, val_size=val_size, test_size=test_size,
                                                    random_state=random_state)
        splits.append(split)
    frame = pd.concat([e.frame for e in parts], ignore_index=True)
    split = np.concatenate(splits)
    first_split = pd.Series(split, index=frame["id"]).loc[lambda s: s != ""]
    first_split = first_split[~first_split.index.duplicated()]
    labelled = split != ""
    split[labelled] = frame["id"][labelled].map(first_split).to_numpy()
    attrs = dict(first.attrs)
    if "sets" in attrs:  # rows left out for lack of a set, over every dataset
        attrs["dropped"] = dict(sum((Counter(e.attrs["dropped"]) for e in parts), Counter()))
    emb = Embeddings(np.concatenate([e.X for e in parts]), frame, first.key, attrs)
    return TrainingData(emb, split, how, stores)


def add_augmented(data: TrainingData, copies: list[Augmentation], *, device: str = "auto",
                  runtime: str | None = None, batch_size: int = 64, workers: int | None = None, progress: bool = False,
                  cache: str | Path | None = None) -> TrainingData:
    """Embed (or read from the cache) every augmented copy of the training images, with engine ``runtime``
    (see ``fakedet.runtimes``); sets ``data.extra``. A fused fit's copies are embedded by each set's
    backbone (one backbone at a time; an image's copy gets the same perturbation in every set) and fused
    like its clean rows."""
    from .backbones import create_backbone
    from .extract import extract

    train = data.emb.frame[(data.split == "train") & (data.emb.y >= 0)]
    frames = {}  # store -> (source, training ids, their image rows)
    for store in data.stores:
        source = store.attrs()["source"]
        if not is_dataset(source):
            raise FileNotFoundError(f"the images of {store.path} ({source}) are not there any more; "
                                    "augmented copies need the original files")
        ids = train.loc[train["source"] == store.path.stem, "id"]
        images = per_id(store.images())
        frames[store] = (source, ids, images[images["id"].isin(ids)].drop(columns=["n_copies", "label_conflict"]))
    made: dict[tuple, list[str]] = {}  # (store, copy) -> the copy's key in each set
    for member in members(data.emb):
        backbone = create_backbone(BackboneConfig.from_dict(member["config"]), device=device, cache=cache)
        if backbone.fingerprint != member["fingerprint"]:
            raise ModelMismatch(f"re-created backbone of {member['key']} has fingerprint {backbone.fingerprint[:12]}, "
                                f"the embeddings {member['fingerprint'][:12]}: pass the original weights")
        for store, (source, _, frame) in frames.items():
            for i, augmentation in enumerate(copies):
                result = extract(source, backbone, cache=store.path, frame=frame, perturb=augmentation,
                                 runtime=runtime, batch_size=batch_size, workers=workers, progress=progress)
                made.setdefault((store, i), []).append(result.key)
        del backbone
    X, y, sources, keys = [], [], [], []
    for (store, _), set_keys in made.items():
        emb = load_sets(store, set_keys, ids=frames[store][1])
        X.append(emb.X)
        y.append(emb.frame["label"].to_numpy())
        sources.append(np.full(len(emb.frame), store.path.stem, dtype=object))
        keys.append(emb.key)
    data.extra = (np.concatenate(X), np.concatenate(y), np.concatenate(sources))
    data.augment = {"specs": [a.name for a in copies[0].augments], "pick": copies[0].pick, "copies": len(copies),
                    "seed": copies[0].seed, "sets": keys, "rows": int(len(data.extra[1]))}
    return data


def source_weights(sources: np.ndarray) -> np.ndarray:
    """Weights (mean 1) that give each source the same total weight."""
    names, inverse, counts = np.unique(sources, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights * len(weights) / weights.sum()
