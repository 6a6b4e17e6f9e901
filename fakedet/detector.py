"""Detectors: a fitted head plus the identity of the embeddings it reads. fit, evaluate, compare, predict.

A saved model is a folder (default ``cache/models/<dataset>-<key>-<head>/``)::

    model.skops    the scikit-learn pipeline, in the skops format (no pickle)
    model.json     head, params, backbone spec + fingerprint + identity, threshold, labels,
                   training data description, library versions
    metrics.json   {"val": {...}, "test": {...}, "cv": {...}, "<dataset>/<split>": {...}}
    splits.csv     id, split of every labelled content id the model was fit and tuned on

Loading never runs code from the file: ``skops.io.load`` rebuilds only the types skops trusts
by default (numpy, and scikit-learn's public estimators) plus ``TRUSTED_TYPES``, the private
scikit-learn helpers that fakedet's heads contain. Any other type makes ``Detector.load``
refuse the file (``UntrustedModel``); ``trusted=True`` is never used.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.pipeline import Pipeline
from skops.io.exceptions import UntrustedTypesFoundException

from .datasets import LABEL_NAMES, ImageDecodeError, SourceError, decode_image, discover, open_source
from .heads import HEADS, get_head, head_params, make_head
from .metrics import binary_metrics, choose_threshold
from .splits import assign_splits, cv_folds
from .store import DEFAULT_CACHE, Embeddings, Store, StoreError, store_path, versions

if TYPE_CHECKING:
    from .backbones import Backbone

FORMAT = "fakedet-model/1"
MODEL_FILE, META_FILE, METRICS_FILE, SPLITS_FILE = "model.skops", "model.json", "metrics.json", "splits.csv"
TRUSTED_TYPES = sorted(f"{t.__module__}.{t.__qualname__}" for t in (
    _CalibratedClassifier, _SigmoidCalibration, AdamOptimizer, SGDOptimizer))
COMPARE_COLUMNS = ["accuracy", "balanced_accuracy", "roc_auc", "average_precision", "recall_real", "recall_fake"]


class ModelMismatch(StoreError):
    """Embeddings made by another backbone (or settings) than the model was fit on."""


class UntrustedModel(StoreError):
    """A model file holding types that fakedet does not load."""


@dataclass
class Detector:
    """A fitted head with the identity of its embeddings; P(fake) from embeddings of that identity."""

    pipeline: Pipeline
    head: str
    params: dict
    preprocess: str
    key: str
    fingerprint: str
    backbone: str
    identity: dict
    threshold: float = 0.5
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=versions)
    splits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "split"]))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(fake) per row, shape (N,)."""
        proba = self.pipeline.predict_proba(X)
        return proba[:, list(self.pipeline.classes_).index(1)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0 (real) / 1 (fake) per row, using the threshold chosen on validation data."""
        return (self.predict_proba(X) >= self.threshold).astype(np.int8)

    @property
    def backbone_kwargs(self) -> dict:
        """``create_backbone`` settings that reproduce this model's embeddings."""
        pre = self.identity["preprocess"]
        resize = "backbone" if pre["policy"] == "backbone" else f"{pre['policy']}:{pre['size']}"
        scales = {"scales": ",".join(f"{v:g}" for v in self.identity["scales"])} if "scales" in self.identity else {}
        return {"layers": self.identity["layers"], "resize": resize, "interpolation": pre["interpolation"],
                **scales, "precision": self.identity["precision"]}

    def extract_command(self, data: str = "DATA") -> str:
        """The ``fakedet extract`` command that makes embeddings this model can read."""
        options = " ".join(f"--{k} {v}" for k, v in self.backbone_kwargs.items())
        return f"fakedet extract {data} --backbone {self.backbone} {options}"

    def check(self, embeddings: Embeddings) -> None:
        """Raise ModelMismatch unless ``embeddings`` come from this model's backbone and settings."""
        if embeddings.fingerprint != self.fingerprint:
            raise ModelMismatch(
                f"embedding set {embeddings.key} ({embeddings.attrs.get('spec')}, fingerprint "
                f"{embeddings.fingerprint[:12]}) was not made by this model's backbone {self.backbone} "
                f"(fingerprint {self.fingerprint[:12]}); extract with the model's settings:\n  "
                + self.extract_command()
            )

    def create_backbone(self, checkpoint: str | Path | None = None, device: str = "auto") -> "Backbone":
        """The backbone this model was fit on, re-created and checked against the fingerprint."""
        from .backbones import create_backbone

        backbone = create_backbone(self.backbone, checkpoint=checkpoint, device=device, **self.backbone_kwargs)
        if backbone.fingerprint != self.fingerprint:
            raise ModelMismatch(
                f"re-created backbone {self.backbone} has fingerprint {backbone.fingerprint[:12]}, the model was "
                f"fit on {self.fingerprint[:12]}: its weights differ (pass the original weights with --checkpoint)"
            )
        return backbone

    def save(self, directory: str | Path) -> Path:
        """Write the model folder (see module docstring); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sio.dump(self.pipeline, directory / MODEL_FILE)
        meta = {
            "format": FORMAT, "head": self.head, "params": self.params, "preprocess": self.preprocess,
            "key": self.key, "fingerprint": self.fingerprint, "backbone": self.backbone, "identity": self.identity,
            "threshold": self.threshold, "labels": LABEL_NAMES, "training": self.training, "versions": self.versions,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.splits.to_csv(directory / SPLITS_FILE, index=False)
        self.save_metrics(directory)
        return directory

    def save_metrics(self, directory: str | Path) -> Path:
        path = Path(directory) / METRICS_FILE
        path.write_text(json.dumps(self.metrics, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        """Read a model folder; refuses files holding types outside the trusted list, and malformed ones
        with one line naming the file."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise StoreError(f"{directory} is not a fakedet model folder (no {META_FILE})")
        meta = _read_meta(directory / META_FILE)
        try:
            pipeline = sio.load(directory / MODEL_FILE, trusted=TRUSTED_TYPES)
        except UntrustedTypesFoundException as err:
            raise UntrustedModel(f"{directory / MODEL_FILE} holds types fakedet does not load: {err}") from None
        except Exception as err:  # a pickle, a torch file, a truncated or empty file: skops raises many types
            raise UntrustedModel(f"not a fakedet model file: {directory / MODEL_FILE} is not a readable skops "
                                 f"file ({type(err).__name__}); fit the model again") from None
        if not isinstance(pipeline, Pipeline):
            raise UntrustedModel(f"{directory / MODEL_FILE} holds a {type(pipeline).__name__}, not a Pipeline")
        metrics_file = directory / METRICS_FILE
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
            splits = pd.read_csv(directory / SPLITS_FILE, dtype=str, keep_default_na=False)
        except (ValueError, OSError) as err:
            raise StoreError(f"not a fakedet model file: {metrics_file.name} or {SPLITS_FILE} in {directory} "
                             f"is unreadable ({err}); fit the model again") from None
        return cls(pipeline=pipeline, metrics=metrics, splits=splits, **meta)


_META_KEYS = ("head", "params", "preprocess", "key", "fingerprint", "backbone", "identity", "threshold",
              "training", "versions")


def _read_meta(path: Path) -> dict:
    """The Detector fields from ``model.json``, checked; StoreError naming the file if malformed."""
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise StoreError(f"not a fakedet model file: {path} is not readable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StoreError(f"{path.parent} has model format {found!r}, this fakedet reads {FORMAT}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise StoreError(f"not a fakedet model file: {path} lacks {', '.join(missing)}; fit the model again")
    threshold = meta["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise StoreError(f"not a fakedet model file: {path} has threshold {threshold!r}, not a number in [0, 1]")
    return {k: meta[k] for k in _META_KEYS}


# --------------------------------------------------------------------------- data selection


def _cache_root(cache: str | Path | None) -> Path:
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    return root.parent if root.suffix in (".h5", ".hdf5") else root


def find_store(data: str | Path | None = None, cache: str | Path | None = None) -> Store:
    """The cache for ``data``: a dataset folder/zip, a ``.h5`` file, a dataset name, or (None) the only cache."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    if data is None and root.suffix in (".h5", ".hdf5"):
        return Store(root)
    caches = sorted(root.glob("*.h5"))
    listing = "\n  ".join(str(c) for c in caches) or "(none; run `fakedet extract DATA` first)"
    if data is None:
        if len(caches) == 1:
            return Store(caches[0])
        found = "several caches" if caches else "no cache"
        raise StoreError(f"{found} in {root}; pass --data with one of:\n  {listing}")
    path = Path(data)
    if path.suffix in (".h5", ".hdf5"):
        return Store(path)
    if path.exists():
        return Store(store_path(open_source(path).name, cache))
    store = Store(store_path(str(data), cache))
    if not store.exists:
        raise StoreError(f"{data} is neither a dataset, a cache file nor a cached dataset; "
                         f"caches in {root}:\n  {listing}")
    return store


def pick_set(store: Store, backbone: str | None = None) -> str:
    """Embedding-set key for ``backbone`` (spec, key or key prefix), or the store's only set."""
    if backbone is not None:
        return store.resolve_key(backbone)
    sets = store.embedding_sets()
    if len(sets) == 1:
        return sets["key"].iloc[0]
    listing = "\n  ".join(sets["key"]) or "(none; run `fakedet extract` first)"
    raise StoreError(f"{store.path} holds {len(sets)} embedding sets; choose one with --backbone:\n  {listing}")


def model_dir(name: str, cache: str | Path | None = None) -> Path:
    """Default folder of model ``name``: ``<cache>/models/<name>``."""
    return _cache_root(cache) / "models" / name


def find_model(model: str | Path, cache: str | Path | None = None) -> Path:
    """A model folder given as a path or as a name under ``<cache>/models/``."""
    for candidate in (Path(model), model_dir(str(model), cache)):
        if (candidate / META_FILE).is_file():
            return candidate
    known = sorted(p.parent.name for p in (_cache_root(cache) / "models").glob(f"*/{META_FILE}"))
    raise StoreError(f"no model {model}; saved models: {', '.join(known) or 'none (run `fakedet fit`)'}")


# --------------------------------------------------------------------------- fit


def _counts(labels: np.ndarray, split: np.ndarray) -> dict:
    return {s: {LABEL_NAMES[c]: int(((split == s) & (labels == c)).sum()) for c in (0, 1)}
            for s in ("train", "val", "test") if (split == s).any()}


def train_detector(
    emb: Embeddings,
    split: np.ndarray,
    head: str = "logreg",
    *,
    params: dict | None = None,
    preprocess: str | None = None,
    random_state: int = 0,
) -> Detector:
    """Fit ``head`` on the labelled train rows, choose the threshold on val, score val and test."""
    y = emb.y
    rows = {s: np.flatnonzero((split == s) & (y >= 0)) for s in ("train", "val", "test")}
    if len(np.unique(y[rows["train"]])) < 2:
        raise ValueError("the training split needs both real and fake images")
    pipeline = make_head(head, params, preprocess, random_state, n_samples=len(rows["train"]))
    start = time.perf_counter()
    pipeline.fit(emb.X[rows["train"]], y[rows["train"]])
    fit_seconds = time.perf_counter() - start
    detector = Detector(
        pipeline=pipeline, head=head, params=head_params(head, params),
        preprocess=HEADS[head].preprocess if preprocess is None else preprocess,
        key=emb.key, fingerprint=emb.fingerprint, backbone=emb.attrs["spec"], identity=emb.attrs["identity"],
    )
    scored = np.concatenate([rows["val"], rows["test"]])
    start = time.perf_counter()
    p = pd.Series(detector.predict_proba(emb.X[scored]) if len(scored) else [], index=scored, dtype=float)
    detector.training["seconds"] = {"fit": fit_seconds, "predict": time.perf_counter() - start}
    p_val = p.loc[rows["val"]].to_numpy()
    if len(np.unique(y[rows["val"]])) == 2:
        detector.threshold = choose_threshold(y[rows["val"]], p_val)
    detector.training["threshold_from"] = "val" if len(np.unique(y[rows["val"]])) == 2 else "default 0.5"
    for s in ("val", "test"):
        if len(rows[s]):
            detector.metrics[s] = binary_metrics(y[rows[s]], p.loc[rows[s]].to_numpy(), detector.threshold)
    labelled = (y >= 0) & (split != "")
    detector.splits = pd.DataFrame({"id": emb.frame["id"].to_numpy()[labelled], "split": split[labelled]})
    return detector


def cross_validate(
    emb: Embeddings,
    pool: np.ndarray,
    head: str = "logreg",
    *,
    n_splits: int = 5,
    params: dict | None = None,
    preprocess: str | None = None,
    random_state: int = 0,
) -> dict:
    """k-fold metrics (threshold 0.5) over the rows where ``pool`` is true, content ids kept together."""
    folds = cv_folds(emb.frame[pool], n_splits, random_state)
    X, y, per_fold = emb.X[pool], emb.y[pool], []
    for k in range(n_splits):
        train, held_out = (folds >= 0) & (folds != k), folds == k
        pipeline = make_head(head, params, preprocess, random_state, n_samples=int(train.sum())).fit(X[train], y[train])
        proba = pipeline.predict_proba(X[held_out])[:, list(pipeline.classes_).index(1)]
        per_fold.append({k: v for k, v in binary_metrics(y[held_out], proba).items() if k != "confusion"})
    table = pd.DataFrame(per_fold).astype(float)
    return {"folds": n_splits, "threshold": 0.5, "mean": table.mean().to_dict(), "std": table.std().to_dict()}


def fit(
    data: str | Path | None = None,
    backbone: str | None = None,
    head: str = "logreg",
    *,
    params: dict | None = None,
    preprocess: str | None = None,
    cache: str | Path | None = None,
    val_size: float = 0.2,
    test_size: float = 0.0,
    cv: int = 0,
    random_state: int = 0,
    allow_partial: bool = False,
) -> Detector:
    """Fit ``head`` on cached embeddings of ``data`` (see ``find_store``) from set ``backbone``; refuses a
    set still missing images of the table unless ``allow_partial``."""
    store = find_store(data, cache)
    key = pick_set(store, backbone)
    store.require_complete(key, allow_partial)
    emb = store.load(key)
    split, how = assign_splits(emb.frame, val_size=val_size, test_size=test_size, random_state=random_state)
    detector = train_detector(emb, split, head, params=params, preprocess=preprocess, random_state=random_state)
    if cv:
        pool = np.isin(split, ["train", "val"])
        detector.metrics["cv"] = cross_validate(emb, pool, head, n_splits=cv, params=params,
                                                preprocess=preprocess, random_state=random_state)
    detector.training.update({
        "store": str(store.path.resolve()), "dataset": store.path.stem, "source": store.attrs().get("source", ""),
        "key": emb.key, "split": how, "val_size": val_size, "test_size": test_size, "random_state": random_state,
        "counts": _counts(emb.y, split), "n_features": int(emb.X.shape[1]),
    })
    return detector


# --------------------------------------------------------------------------- embeddings for a model


def matching_set(store: Store, detector: Detector) -> str | None:
    """Key of an unperturbed set in ``store`` made with the model's fingerprint (its own key first)."""
    if not store.exists:
        return None
    sets = store.embedding_sets()
    if sets.empty:
        return None
    sets = sets[(sets["fingerprint"] == detector.fingerprint) & (sets["perturb"] == "")]
    if detector.key in set(sets["key"]):
        return detector.key
    return sets["key"].iloc[0] if len(sets) else None


def lazy_backbone(detector: Detector, checkpoint=None, device: str = "auto") -> Callable[[], "Backbone"]:
    """The model's backbone, created on first call only (cached embeddings need none)."""
    return functools.cache(functools.partial(detector.create_backbone, checkpoint, device))


def embed_source(
    detector: Detector,
    source: str | Path,
    cache: str | Path | None = None,
    *,
    backbone: Callable[[], "Backbone"] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[Embeddings, pd.DataFrame, Store]:
    """Embeddings of a folder or zip for ``detector``: from the cache, extracting what is missing.

    Returns (embeddings, the files as discovered now, the store).
    """
    from .extract import extract

    frame = discover(source, progress=progress)
    store = Store(store_path(open_source(source).name, cache))
    key = matching_set(store, detector)
    done = set(store.embedded_ids(key)) | set(store.failures()["id"]) if key else set()
    if not set(frame.loc[frame["error"] == "", "id"]) <= done:
        backbone = backbone or lazy_backbone(detector)
        key = extract(source, backbone(), cache=cache, frame=frame, batch_size=batch_size, workers=workers,
                      progress=progress).key
    emb = store.load(key)
    detector.check(emb)
    return emb, frame, store


# --------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """Metrics of a detector on one dataset split, with the per-image predictions."""

    metrics: dict
    predictions: pd.DataFrame
    dataset: str
    split: str
    excluded: int = 0

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
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> Evaluation:
    """Metrics at the model's threshold on ``data`` (default: its training data).

    ``split``: train, val, test or all. Default: the test split of the training data (the split
    the model was fit with), or all labelled rows of another dataset, where train/val/test
    refer to that dataset's folders and images identical to ones the model was fit or tuned on
    are left out (counted in ``excluded``). ``key`` picks an embedding set (e.g. a perturbed one);
    a dataset folder or zip without embeddings of the model's backbone is extracted first.
    """
    if split not in (None, "train", "val", "test", "all"):
        raise ValueError(f"split must be train, val, test or all, not {split!r}")
    store = Store(detector.training["store"]) if data is None else find_store(data, cache)
    own = store.path.resolve() == Path(detector.training.get("store", "")).resolve()
    if key is not None:
        emb = store.load(key)
        detector.check(emb)
    elif data is not None and not own and Path(data).exists() and Path(data).suffix not in (".h5", ".hdf5"):
        emb = embed_source(detector, data, cache, backbone=lazy_backbone(detector, checkpoint, device),
                           batch_size=batch_size, workers=workers, progress=progress)[0]
    else:
        found = matching_set(store, detector)
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
    predictions["p_fake"] = detector.predict_proba(emb.X[rows])
    predictions["pred"] = (predictions["p_fake"] >= detector.threshold).astype(np.int8)
    scored = predictions[predictions["label"] >= 0]
    metrics = binary_metrics(scored["label"], scored["p_fake"], detector.threshold)
    return Evaluation(metrics, predictions, store.path.stem, split, int((chosen & known).sum()))


# --------------------------------------------------------------------------- compare


def compare(
    data: str | Path | None = None,
    backbones: list[str] | None = None,
    heads: list[str] | None = None,
    *,
    preprocess: str | None = None,
    cache: str | Path | None = None,
    val_size: float = 0.2,
    test_size: float = 0.0,
    random_state: int = 0,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Every head on every embedding set (default: all unperturbed sets and all heads), best first.

    Scores the test split (threshold from val) when there is one, else val. ``fit_s`` is the
    time to fit, ``predict_s`` the time to score the val and test rows.
    """
    heads = list(heads or HEADS)
    for head in heads:
        get_head(head)  # fail before fitting anything
    store = find_store(data, cache)
    if backbones:
        keys = list(dict.fromkeys(store.resolve_key(b) for b in backbones))
    else:
        sets = store.embedding_sets()
        keys = list(sets.loc[sets["perturb"] == "", "key"]) if not sets.empty else []
        if not keys:
            raise StoreError(f"{store.path} holds no embeddings yet; run `fakedet extract` first")
    rows = []
    for key in keys:
        store.require_complete(key, allow_partial)
    for key in keys:
        emb = store.load(key)
        split, _ = assign_splits(emb.frame, val_size=val_size, test_size=test_size, random_state=random_state)
        for head in heads:
            detector = train_detector(emb, split, head, preprocess=preprocess, random_state=random_state)
            on = "test" if "test" in detector.metrics else "val"
            metrics = detector.metrics[on]
            rows.append({"backbone": key, "head": head, "scored": on, "n": metrics["n"],
                         **{c: metrics[c] for c in COMPARE_COLUMNS},
                         "fit_s": detector.training["seconds"]["fit"],
                         "predict_s": detector.training["seconds"]["predict"]})
    table = pd.DataFrame(rows).sort_values(["balanced_accuracy", "roc_auc"], ascending=False, kind="stable")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A pipe table (no extra dependency); floats rounded to ``digits``."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "n/a" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def save_table(table: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    table.to_csv(csv, index=False)
    md.write_text(to_markdown(table) + "\n")
    return csv, md


# --------------------------------------------------------------------------- predict


def predict(
    detector: Detector,
    inputs: list[str | Path],
    *,
    cache: str | Path | None = None,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """P(fake) and label for images, folders and zips: columns path, p_fake, label, error.

    Folders and zips are embedded through the cache (extracting what is missing, with the model's
    backbone and settings); loose image files are embedded in memory, not cached. Files that
    cannot be read get a row with the reason in ``error`` instead of stopping the batch.
    """
    backbone = lazy_backbone(detector, checkpoint, device)
    rows: list[dict] = []
    loose: list[tuple[int, Path]] = []
    for item in map(Path, inputs):
        if not item.exists():
            rows.append({"path": str(item), "error": "no such file or folder"})
        elif item.is_dir() or item.suffix.lower() == ".zip":
            try:
                emb, frame, store = embed_source(detector, item, cache, backbone=backbone, batch_size=batch_size,
                                                 workers=workers, progress=progress)
            except ModelMismatch:
                raise
            except (OSError, SourceError, StoreError) as err:
                rows.append({"path": str(item), "error": f"cannot read: {err}"})
                continue
            p = pd.Series(detector.predict_proba(emb.X) if len(emb.X) else [], index=emb.frame["id"], dtype=float)
            reasons = store.failures().set_index("id")["reason"]
            for file in frame.itertuples():
                error = file.error or ("" if file.id in p.index else reasons.get(file.id, "not embedded"))
                rows.append({"path": f"{item}/{file.path}", "p_fake": p.get(file.id) if not error else None,
                             "error": error})
        else:
            loose.append((len(rows), item))
            rows.append({"path": str(item), "error": ""})
    for start in range(0, len(loose), batch_size):
        images = []
        for index, path in loose[start : start + batch_size]:
            try:
                images.append((index, decode_image(path.read_bytes())))
            except (ImageDecodeError, OSError) as err:
                rows[index]["error"] = str(err)
        if images:
            X = backbone().embed_images([image for _, image in images], batch_size=batch_size)
            for (index, _), p_fake in zip(images, detector.predict_proba(X)):
                rows[index]["p_fake"] = float(p_fake)
    table = pd.DataFrame(rows, columns=["path", "p_fake", "error"])
    table["p_fake"] = table["p_fake"].astype(float)
    table.insert(2, "label", np.where(table["p_fake"].isna(), "",
                                      np.where(table["p_fake"] >= detector.threshold, "fake", "real")))
    return table
