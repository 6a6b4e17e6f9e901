"""Scoring images with a fitted ``Detector``: its backbone re-created, its embeddings found in the cache
or made through the one embedding path (folders, zips, shards, manifests via ``extract`` into the
cache; loose files in memory), then ``evaluate`` (metrics on a labelled split) and ``predict``
(P(fake), label and the out-of-domain columns per file).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .catalog import cache_root, find_store, matching_set, source_store
from .datasets import SourceError, discover
from .detector import Detector, ModelMismatch
from .metrics import binary_metrics
from .sources import is_dataset
from .store import Embeddings, Store, StoreError

# --------------------------------------------------------------------------- a model's backbone and embeddings


def backbone_for(detector: Detector, checkpoint: str | Path | None = None, device: str = "auto",
                 cache: str | Path | None = None):
    """The backbone ``detector`` was fit on, re-created from its config and checked against the fingerprint.

    ``checkpoint`` replaces the recorded weights file (e.g. after moving it)."""
    from .backbones import create_backbone

    config = detector.config if checkpoint is None else detector.config.replace(checkpoint=str(checkpoint))
    backbone = create_backbone(config, device=device, cache=cache)
    if backbone.fingerprint != detector.fingerprint:
        raise ModelMismatch(
            f"re-created backbone {detector.backbone} has fingerprint {backbone.fingerprint[:12]}, the model was "
            f"fit on {detector.fingerprint[:12]}: its weights differ (pass the original weights with --checkpoint)"
        )
    return backbone


def lazy_backbone(detector: Detector, checkpoint=None, device: str = "auto", cache=None) -> Callable:
    """The model's backbone, created on first call only (cached embeddings need none)."""
    return functools.cache(functools.partial(backbone_for, detector, checkpoint, device, cache))


def model_set(store: Store, detector: Detector) -> str | None:
    """Key of an unperturbed set of ``store`` this model can read (its own key first), or None."""
    return matching_set(store, detector.fingerprint, prefer=detector.key)


def embed_source(
    detector: Detector,
    source: str | Path,
    cache: str | Path | None = None,
    *,
    backbone: Callable | None = None,
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[Embeddings, pd.DataFrame, Store]:
    """Embeddings of a dataset (folder, zip, shards, manifest, URL) for ``detector``: from the cache,
    extracting what is missing (with engine ``runtime``, see ``fakedet.runtimes``).

    Returns (embeddings, the files as discovered now, the store).
    """
    from .extract import extract

    frame = discover(source, progress=progress)
    store = source_store(source, cache)
    key = model_set(store, detector)
    done = set(store.embedded_ids(key)) | set(store.failures()["id"]) if key else set()
    if not set(frame.loc[frame["error"] == "", "id"]) <= done:
        backbone = backbone or lazy_backbone(detector, cache=cache)
        key = extract(source, backbone(), cache=cache, frame=frame, runtime=runtime, batch_size=batch_size,
                      workers=workers, progress=progress).key
    emb = store.load(key)
    detector.check(emb)
    return emb, frame, store


# --------------------------------------------------------------------------- evaluate


def training_stores(detector: Detector) -> set[Path]:
    """Resolved paths of the stores a model was fit on (one per dataset)."""
    sources = detector.training.get("sources") or [{"store": detector.training.get("store", "")}]
    return {Path(s["store"]).resolve() for s in sources if s["store"]}


def add_domain_columns(table: pd.DataFrame, detector: Detector, X: np.ndarray) -> None:
    """Add ``domain_score`` and ``out_of_domain`` (in place) when the model has an out-of-domain summary."""
    score = detector.domain_score(X)
    if score is not None:
        table["domain_score"] = score
        table["out_of_domain"] = score > detector.domain.threshold
    elif detector.domain is not None:  # no rows
        table["domain_score"], table["out_of_domain"] = np.zeros(0), np.zeros(0, bool)


def prediction_metrics(detector: Detector, predictions: pd.DataFrame) -> dict:
    """Metrics at the model's threshold over the labelled rows of ``predictions`` (p_fake, label), with
    the share flagged out of domain when the model flags."""
    scored = predictions[predictions["label"] >= 0]
    metrics = binary_metrics(scored["label"], scored["p_fake"], detector.threshold)
    if "out_of_domain" in scored:
        metrics["out_of_domain"] = float(scored["out_of_domain"].mean())
    return metrics


@dataclass
class Evaluation:
    """Metrics of a detector on one dataset split, with the per-image predictions."""

    metrics: dict
    predictions: pd.DataFrame
    dataset: str
    split: str
    excluded: int = 0
    key: str = ""

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}"


def evaluate(
    detector: Detector,
    data: str | Path | None = None,
    *,
    split: str | None = None,
    key: str | None = None,
    cache: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Metrics at the model's threshold on ``data`` (default: its training data).

    ``split``: train, val, test or all. Default: the test split of the training data (the split
    the model was fit with), or all labelled rows of another dataset, where train/val/test
    refer to that dataset's folders and images identical to ones the model was fit or tuned on
    are left out (counted in ``excluded``). ``key`` picks an embedding set (e.g. a perturbed one);
    a dataset folder or zip without embeddings of the model's backbone is extracted first, with
    engine ``runtime`` (see ``fakedet.runtimes``).
    """
    if split not in (None, "train", "val", "test", "all"):
        raise ValueError(f"split must be train, val, test or all, not {split!r}")
    store = Store(detector.training["store"]) if data is None else find_store(data, cache)
    own = store.path.resolve() in training_stores(detector)
    if key is not None:
        emb = store.load(key)
        detector.check(emb)
    elif data is not None and not own and is_dataset(data) and Path(data).suffix not in (".h5", ".hdf5"):
        emb = embed_source(detector, data, cache, backbone=lazy_backbone(detector, checkpoint, device, cache),
                           runtime=runtime, batch_size=batch_size, workers=workers, progress=progress)[0]
    else:
        found = model_set(store, detector)
        if found is None:
            raise ModelMismatch(f"{store.path} holds no embeddings of this model's backbone {detector.backbone}; "
                                f"extract them with:\n  {detector.extract_command()}")
        emb = store.load(found)
    frame = emb.frame[["id", "path", "split", "label"]].copy()
    if own:
        frame["split"] = frame["id"].map(detector.splits.set_index("id")["split"]).fillna("")
        split = split or "test"
    else:
        split = split or "all"
    seen = detector.splits.loc[detector.splits["split"].isin(["train", "val"]), "id"]
    known = frame["id"].isin(seen) & (not own)
    chosen = (frame["split"] == split) | (split == "all")
    rows = np.flatnonzero(chosen & ~known)
    labelled = rows[frame["label"].to_numpy()[rows] >= 0]
    if not len(labelled):
        raise ValueError(f"no labelled images in split {split!r} of {store.path.stem}"
                         + ("; the model was fit without this split, pass --split val or evaluate on another dataset"
                            if own else ""))
    predictions = frame.iloc[rows].reset_index(drop=True)
    predictions["p_fake"] = detector.p_fake(emb.X[rows])
    predictions["pred"] = (predictions["p_fake"] >= detector.threshold).astype(np.int8)
    add_domain_columns(predictions, detector, emb.X[rows])
    return Evaluation(prediction_metrics(detector, predictions), predictions, store.path.stem, split, int((chosen & known).sum()), emb.key)



# --------------------------------------------------------------------------- predict


def _scores(detector: Detector, ids, X: np.ndarray) -> pd.DataFrame:
    """p_fake (and domain_score / out_of_domain when the model has the summary) per id."""
    table = pd.DataFrame({"p_fake": detector.p_fake(X)}, index=pd.Index(ids, name="id"), dtype=float)
    add_domain_columns(table, detector, X)
    return table


def _loose_scores(detector: Detector, paths: list[str], backbone: Callable, runtime: str | None,
                  cache: str | Path | None, batch_size: int, workers: int | None,
                  progress: bool) -> tuple[pd.DataFrame, dict]:
    """Scores of single image files, embedded in memory (not cached); (scores by path, reason by path)."""
    from .embedding import LooseFiles, embed_in_memory
    from .runtimes import use_runtime

    model = use_runtime(backbone(), runtime, cache_root(cache), batch_size=batch_size)
    paths = list(dict.fromkeys(paths))
    items = pd.DataFrame({"id": paths, "path": paths})
    ids, X, failed = embed_in_memory(LooseFiles(), items, model.preprocess, model.embed, batch_size=batch_size,
                                     workers=workers, progress=progress, desc="predict")
    return _scores(detector, ids, X), dict(failed)


def predict(
    detector: Detector,
    inputs: list[str | Path],
    *,
    cache: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """P(fake) and label for images, folders and zips: columns path, p_fake, label, error, and
    domain_score, out_of_domain when the model has an out-of-domain summary.

    Folders and zips are embedded through the cache (extracting what is missing, with the model's
    backbone and settings); loose image files are embedded in memory, not cached. Files that
    cannot be read get a row with the reason in ``error`` instead of stopping the batch. ``runtime``:
    the engine of the forward pass (see ``fakedet.runtimes``).
    """
    backbone = lazy_backbone(detector, checkpoint, device, cache)
    rows: list[dict] = []
    loose: list[str] = []
    for item in inputs:
        if is_dataset(item):
            try:
                emb, frame, store = embed_source(detector, item, cache, backbone=backbone, runtime=runtime,
                                                 batch_size=batch_size, workers=workers, progress=progress)
            except ModelMismatch:
                raise
            except (OSError, SourceError, StoreError) as err:
                rows.append({"path": str(item), "error": f"cannot read: {err}"})
                continue
            scores = _scores(detector, emb.frame["id"], emb.X)
            reasons = store.failures().set_index("id")["reason"]
            for file in frame.itertuples():
                error = file.error or ("" if file.id in scores.index else reasons.get(file.id, "not embedded"))
                found = {} if error else scores.loc[file.id].to_dict()
                rows.append({"path": f"{str(item).rstrip('/')}/{file.path}", **found, "error": error})
        elif not Path(item).is_file():
            rows.append({"path": str(item), "error": "no such file or folder"})
        else:
            loose.append(str(item))
            rows.append({"path": str(item), "error": ""})
    if loose:
        scores, reasons = _loose_scores(detector, loose, backbone, runtime, cache, batch_size, workers, progress)
        for row in rows:
            if row["path"] in reasons:
                row["error"] = reasons[row["path"]]
            elif row["path"] in scores.index:
                row.update(scores.loc[row["path"]].to_dict())
    domain = ["domain_score", "out_of_domain"] if detector.domain is not None else []
    table = pd.DataFrame(rows, columns=["path", "p_fake", *domain, "error"])
    table["p_fake"] = table["p_fake"].astype(float)
    table.insert(2, "label", np.where(table["p_fake"].isna(), "",
                                      np.where(table["p_fake"] >= detector.threshold, "fake", "real")))
    return table
