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

from .backbone_config import BackboneError
from .catalog import cache_root, find_store, matching_set, source_store
from .datasets import SourceError, discover
from .detector import Detector, EmbeddingSet, ModelMismatch
from .fusion import load_sets
from .metrics import binary_metrics
from .sources import is_dataset
from .store import Embeddings, Store, StoreError

# --------------------------------------------------------------------------- a model's backbone and embeddings


def set_models(detector: Detector, job: str) -> list[Detector]:
    """The single-set models ``job`` works through, one per backbone: the model itself, or a stacked fused
    model's members (its P(fake) is the mean of theirs). A ``--fusion concat`` model is refused: its one
    head reads several backbones' features at once."""
    if not detector.fused:
        return [detector]
    voters = detector.voters()
    if not voters:
        raise ValueError(f"{job} of a model fit with --fusion concat are not supported (its one head reads several "
                         "backbones' features at once); fit with --fusion stack or make the model with fakedet "
                         "ensemble, which averages one model per set")
    return voters


def member_backbone(member: EmbeddingSet, checkpoint: str | Path | None = None, device: str = "auto",
                    cache: str | Path | None = None):
    """The backbone of one embedding set a model reads, re-created from its config and checked against the
    fingerprint. ``checkpoint`` replaces the recorded weights file (e.g. after moving it)."""
    from .backbones import create_backbone

    config = member.config if checkpoint is None else member.config.replace(checkpoint=str(checkpoint))
    backbone = create_backbone(config, device=device, cache=cache)
    if backbone.fingerprint != member.fingerprint:
        raise ModelMismatch(
            f"re-created backbone {member.backbone} has fingerprint {backbone.fingerprint[:12]}, the model was "
            f"fit on {member.fingerprint[:12]}: its weights differ (pass the original weights with --checkpoint)"
        )
    return backbone


def backbone_for(detector: Detector, checkpoint: str | Path | None = None, device: str = "auto",
                 cache: str | Path | None = None):
    """The backbone ``detector`` was fit on (see ``member_backbone``); for a fused model a ``FusedBackbone``
    of every set's (``checkpoint`` then refused: it replaces one weights file)."""
    if not detector.fused:
        return member_backbone(detector.members[0], checkpoint, device, cache)
    from .backbones import FusedBackbone

    return FusedBackbone([make() for make in lazy_backbones(detector, checkpoint, device, cache)])


def lazy_backbones(detector: Detector, checkpoint=None, device: str = "auto", cache=None) -> list[Callable]:
    """The backbone of each set the model reads, each created on first call only (cached embeddings need none)."""
    if checkpoint is not None and detector.fused:
        raise ValueError("--checkpoint replaces one weights file; a fused model reads several sets: "
                         "put the weights back where its sets' configs say")
    return [functools.cache(functools.partial(member_backbone, m, checkpoint, device, cache))
            for m in detector.members]


def model_set(store: Store, detector: Detector) -> str | None:
    """Key of the unperturbed set of ``store`` this model can read (its own key first); for a fused model
    the sets' keys joined with ``+``; None when a set is missing (see ``missing_sets``)."""
    keys = [matching_set(store, m.fingerprint, prefer=m.key) for m in detector.members]
    return None if None in keys else "+".join(keys)


def missing_sets(store: Store, detector: Detector) -> list[EmbeddingSet]:
    """The sets the model reads that ``store`` does not hold."""
    return [m for m in detector.members if matching_set(store, m.fingerprint) is None]


def _made(backbone: Callable, member: EmbeddingSet, detector: Detector, source, store: Store):
    """``backbone()``, or ModelMismatch with the extract command when it cannot be made here."""
    try:
        return backbone()
    except BackboneError as err:
        raise ModelMismatch(f"{store.path} lacks embeddings of {member.backbone} and its backbone cannot be made "
                            f"here ({err}); extract them where its weights are:\n  "
                            + detector.extract_command(str(source), [member])) from None


def embed_source(
    detector: Detector,
    source: str | Path,
    cache: str | Path | None = None,
    *,
    backbones: list[Callable] | None = None,
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[Embeddings, pd.DataFrame, Store]:
    """Embeddings of a dataset (folder, zip, shards, manifest, URL) for ``detector``: from the cache,
    extracting what is missing of each set it reads, one backbone after the other (with engine
    ``runtime``, see ``fakedet.runtimes``; ``backbones``: one lazy backbone per set, see ``lazy_backbones``).

    Returns (embeddings, fused when the model reads several sets; the files as discovered now; the store).
    """
    from .extract import extract

    frame = discover(source, progress=progress)
    store = source_store(source, cache)
    wanted = set(frame.loc[frame["error"] == "", "id"])
    keys = []
    for member, backbone in zip(detector.members, backbones or lazy_backbones(detector, cache=cache)):
        key = matching_set(store, member.fingerprint, prefer=member.key)
        done = set(store.embedded_ids(key)) | set(store.failures()["id"]) if key else set()
        if not wanted <= done:
            key = extract(source, _made(backbone, member, detector, source, store), cache=cache, frame=frame,
                          runtime=runtime, batch_size=batch_size, workers=workers, progress=progress).key
        keys.append(key)
    emb = load_sets(store, keys)
    detector.check(emb)
    return emb, frame, store


# --------------------------------------------------------------------------- evaluate


def model_store(detector: Detector, data: str | Path | None = None, cache: str | Path | None = None) -> Store:
    """The store ``data`` names (see ``find_store``), or with no ``data`` the one the model was fit on."""
    if data is not None:
        return find_store(data, cache)
    if not detector.training.get("store"):
        raise ValueError(f"model {detector.key}/{detector.head} does not record the cache it was fit on; pass --data")
    return Store(detector.training["store"])


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
    key: str | list[str] | None = None,
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
    are left out (counted in ``excluded``). ``key`` picks an embedding set (e.g. a perturbed one; a
    list of keys is fused in order, one per set of a fused model); a dataset folder or zip without
    embeddings of the model's backbone is extracted first, with engine ``runtime`` (see
    ``fakedet.runtimes``).
    """
    if split not in (None, "train", "val", "test", "all"):
        raise ValueError(f"split must be train, val, test or all, not {split!r}")
    store = model_store(detector, data, cache)
    own = store.path.resolve() in training_stores(detector)
    wanted = None  # on its own data, only the rows of the split asked for are read
    if own and split != "all":
        wanted = detector.splits.loc[detector.splits["split"] == (split or "test"), "id"]
    if key is not None:
        emb = load_sets(store, key, ids=wanted)
        detector.check(emb)
    elif data is not None and not own and is_dataset(data) and Path(data).suffix not in (".h5", ".hdf5"):
        emb = embed_source(detector, data, cache, backbones=lazy_backbones(detector, checkpoint, device, cache),
                           runtime=runtime, batch_size=batch_size, workers=workers, progress=progress)[0]
    else:
        found = model_set(store, detector)
        if found is None:
            missing = missing_sets(store, detector)
            raise ModelMismatch(f"{store.path} holds no embeddings of this model's backbone "
                                f"{', '.join(f'{m.backbone} (set {m.key})' for m in missing)}; extract them with:\n  "
                                + detector.extract_command(store.attrs().get("source", "DATA"), missing))
        emb = load_sets(store, found, ids=wanted)
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
    X = emb.X if len(rows) == len(emb.X) else emb.X[rows]  # rows ascend: all of them is emb.X, not a copy
    predictions["p_fake"] = detector.p_fake(X)
    predictions["pred"] = (predictions["p_fake"] >= detector.threshold).astype(np.int8)
    add_domain_columns(predictions, detector, X)
    return Evaluation(prediction_metrics(detector, predictions), predictions, store.path.stem, split, int((chosen & known).sum()), emb.key)



# --------------------------------------------------------------------------- predict


def _scores(detector: Detector, ids, X: np.ndarray) -> pd.DataFrame:
    """p_fake (and domain_score / out_of_domain when the model has the summary) per id."""
    table = pd.DataFrame({"p_fake": detector.p_fake(X)}, index=pd.Index(ids, name="id"), dtype=float)
    add_domain_columns(table, detector, X)
    return table


def _loose_scores(detector: Detector, paths: list[str], backbones: list[Callable], runtime: str | None,
                  cache: str | Path | None, batch_size: int, workers: int | None,
                  progress: bool) -> tuple[pd.DataFrame, dict]:
    """Scores of single image files, embedded in memory (not cached) by each backbone the model reads, side
    by side; (scores by path, reason by path)."""
    from .embedding import LooseFiles, embed_in_memory
    from .runtimes import use_runtime

    paths, failed, blocks = list(dict.fromkeys(paths)), {}, []
    for backbone in backbones:
        model = use_runtime(backbone(), runtime, cache_root(cache), batch_size=batch_size)
        todo = [p for p in paths if p not in failed]
        ids, X, bad = embed_in_memory(LooseFiles(), pd.DataFrame({"id": todo, "path": todo}), model.preprocess,
                                      model.embed, batch_size=batch_size, workers=workers, progress=progress,
                                      desc="predict")
        failed.update(bad)
        blocks.append((pd.Index(ids), X))
    kept = [p for p in paths if p not in failed]
    X = np.concatenate([X[ids.get_indexer(kept)] for ids, X in blocks], axis=1) if kept else np.zeros((0, 0))
    return _scores(detector, kept, X), failed


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
    backbones = lazy_backbones(detector, checkpoint, device, cache)
    rows: list[dict] = []
    loose: list[str] = []
    for item in inputs:
        if is_dataset(item):
            try:
                emb, frame, store = embed_source(detector, item, cache, backbones=backbones, runtime=runtime,
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
        scores, reasons = _loose_scores(detector, loose, backbones, runtime, cache, batch_size, workers, progress)
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
