"""The path-taking jobs on top of the store and the ``Detector``: fit, compare, report (scoring with a
fitted model, ``evaluate`` and ``predict``, lives in ``fakedet.scoring``).

Data are named as the CLI names them (a dataset folder or zip, a ``.h5`` file, a dataset name;
see ``catalog.find_store``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .catalog import clean_sets, find_model, find_store, pick_set
from .detector import Detector
from .domain import DEFAULT_RATE
from .fusion import FUSIONS, load_sets, resolve_sets
from .heads import HEADS, get_head
from .metrics import binary_metrics
from .perturb import augmentations
from .scoring import evaluate, missing_sets, model_set, model_store, training_stores
from .splits import assign_splits
from .store import Store, StoreError
from .training import cross_validate, split_counts, train_detector
from .training_data import add_augmented, gather, source_weights

COMPARE_COLUMNS = ["accuracy", "balanced_accuracy", "roc_auc", "average_precision", "recall_real", "recall_fake"]

# --------------------------------------------------------------------------- fit


def fit(
    data: str | Path | list[str | Path] | None = None,
    backbone: str | list[str] | None = None,
    head: str = "logreg",
    *,
    fusion: str = "concat",
    params: dict | None = None,
    preprocess: str | None = None,
    cache: str | Path | None = None,
    val_size: float = 0.2,
    test_size: float = 0.0,
    cv: int = 0,
    random_state: int = 0,
    augment: list[str] | tuple[str, ...] = (),
    copies: int = 1,
    augment_pick: str = "all",
    balance: str | None = None,
    domain_rate: float | None = DEFAULT_RATE,
    device: str = "auto",
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    allow_partial: bool = False,
) -> Detector:
    """Fit ``head`` on cached embeddings of ``data`` (one dataset or a list; see ``find_store``)
    from set ``backbone``, or from several sets side by side (a list, or names joined with ``+``), read
    as ``fusion`` says (``fakedet.fusion``: ``concat`` or ``stack``).

    ``augment`` (e.g. ``["jpeg:q=30-95", "blur:sigma=0-2"]``) with ``copies``: augmented copies
    of the training images, embedded into the cache once and added to the training rows (see
    ``fakedet.training_data``); ``augment_pick``: each copy applies every kind (``all``) or one
    (``one``, see ``fakedet.perturb.Augmentation``). ``balance='sources'``: every dataset weighs the same in the fit.
    ``domain_rate``: in-domain share kept by the out-of-domain flag, calibrated on val (None: no flag).
    ``runtime``: the engine that embeds the augmented copies (see ``fakedet.runtimes``).
    A set still missing images of its table (an extraction running or interrupted) is refused unless
    ``allow_partial``.
    """
    datasets = list(data) if isinstance(data, (list, tuple)) else [data]
    copies_ = augmentations(augment, copies, random_state, augment_pick) if augment else []  # bad specs fail before any work
    if balance not in (None, "none", "sources"):
        raise ValueError(f"balance must be 'sources' or 'none', not {balance!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    gathered = gather(datasets, backbone, cache, val_size=val_size, test_size=test_size, random_state=random_state,
                      allow_partial=allow_partial)
    if balance == "sources" and fusion == "stack" and "sets" in gathered.emb.attrs:
        raise ValueError("--balance sources weighs one head; use it with --fusion concat")
    if copies_:
        add_augmented(gathered, copies_, device=device, runtime=runtime, batch_size=batch_size, workers=workers,
                      progress=progress, cache=cache)
    emb, split = gathered.emb, gathered.split
    weights = source_weights(gathered.train_sources()) if balance == "sources" else None
    extra = gathered.extra[:2] if gathered.extra is not None else None
    detector = train_detector(emb, split, head, params=params, preprocess=preprocess, random_state=random_state,
                              extra=extra, sample_weight=weights, domain_rate=domain_rate, fusion=fusion)
    if cv:
        pool = np.isin(split, ["train", "val"])
        detector.metrics["cv"] = cross_validate(emb, pool, head, n_splits=cv, params=params, preprocess=preprocess,
                                                random_state=random_state, fusion=fusion)
    if len(gathered.stores) > 1:
        source = emb.frame["source"].to_numpy()
        for name in gathered.sources:
            for s in ("val", "test"):
                rows = (source == name) & (split == s) & (emb.y >= 0)
                if rows.any():
                    detector.metrics[f"{name}/{s}"] = binary_metrics(emb.y[rows], detector.p_fake(emb.X[rows]),
                                                                     detector.threshold)
    store = gathered.stores[0]
    detector.training.update({
        "store": str(store.path.resolve()), "dataset": store.path.stem, "source": store.attrs().get("source", ""),
        "key": emb.key, "split": gathered.how[store.path.stem], "val_size": val_size, "test_size": test_size,
        "random_state": random_state, "counts": split_counts(emb.y, split), "n_features": int(emb.X.shape[1]),
    })
    if len(gathered.stores) > 1:
        detector.training["sources"] = [
            {"dataset": s.path.stem, "store": str(s.path.resolve()), "source": s.attrs().get("source", ""),
             "split": gathered.how[s.path.stem],
             "counts": split_counts(emb.y[emb.frame["source"] == s.path.stem],
                                    split[(emb.frame["source"] == s.path.stem).to_numpy()])}
            for s in gathered.stores]
        detector.training["balance"] = balance or "none"
    if gathered.augment:
        detector.training["augment"] = gathered.augment
    return detector


# --------------------------------------------------------------------------- compare


def compare(
    data: str | Path | None = None,
    backbones: list[str] | None = None,
    heads: list[str] | None = None,
    *,
    preprocess: str | None = None,
    fusion: str = "concat",
    cache: str | Path | None = None,
    val_size: float = 0.2,
    test_size: float = 0.0,
    random_state: int = 0,
    allow_partial: bool = False,
) -> pd.DataFrame:
    """Every head on every embedding set (default: all unperturbed sets and all heads), best first.

    Each of ``backbones`` is one candidate: a set, or sets fused as ``A+B`` (read as ``fusion`` says,
    see ``fakedet.fusion``).

    Scores the test split (threshold from val) when there is one, else val. ``fit_s`` is the
    time to fit, ``predict_s`` the time to score the val and test rows.
    """
    heads = list(heads or HEADS)
    for head in heads:
        get_head(head)  # fail before fitting anything
    store = find_store(data, cache)
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    keys = (list(dict.fromkeys("+".join(resolve_sets(store, [b])) for b in backbones)) if backbones
            else clean_sets(store))
    if not keys:
        raise StoreError(f"{store.path} holds no embeddings yet; run `fakedet extract` first")
    for key in keys:
        for part in resolve_sets(store, [key]):
            store.require_complete(part, allow_partial)
    rows = [row for key in keys
            for row in _compare_candidate(store, key, heads, preprocess=preprocess, fusion=fusion,
                                          val_size=val_size, test_size=test_size, random_state=random_state)]
    table = pd.DataFrame(rows).sort_values(["balanced_accuracy", "roc_auc"], ascending=False, kind="stable")
    return table.reset_index(drop=True)


def _compare_candidate(store: Store, key: str, heads: list[str], *, preprocess: str | None, fusion: str,
                       val_size: float, test_size: float, random_state: int) -> list[dict]:
    """``compare``'s rows of one candidate. Its embeddings are loaded here and freed on return, so only
    one candidate is in memory at a time (holding the last one while loading and fitting the next, a
    compare of three full-CIFAKE candidates was killed at 24 GB)."""
    emb = load_sets(store, key)
    split, _ = assign_splits(emb.frame, val_size=val_size, test_size=test_size, random_state=random_state)
    rows = []
    for head in heads:
        detector = train_detector(emb, split, head, preprocess=preprocess, random_state=random_state,
                                  fusion=fusion)
        on = "test" if "test" in detector.metrics else "val"
        metrics = detector.metrics[on]
        rows.append({"backbone": key, "head": head, "scored": on, "n": metrics["n"],
                     **{c: metrics[c] for c in COMPARE_COLUMNS},
                     "fit_s": detector.training["seconds"]["fit"],
                     "predict_s": detector.training["seconds"]["predict"]})
    return rows


# --------------------------------------------------------------------------- report


def report(
    data: str | Path | None = None,
    backbone: str | None = None,
    model: str | Path | None = None,
    *,
    split: str | None = None,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    projection=None,
    n_jobs: int | None = None,
    command: str | None = None,
    n_mistakes: int = 8,
    allow_partial: bool = False,
) -> Path:
    """Write the HTML report of ``data`` (see ``find_store``; default: the model's training data or the
    only cache), embedding set ``backbone`` (default: the model's, or the only set), with an evaluation
    of ``model`` (folder or name under <cache>/models) on ``split`` (default: its test split, else val;
    all images of another dataset). A fused model is scored on all its sets and the page projects one
    (``backbone``, default its first). ``out``: .html file or folder. A set still missing images of its
    table is refused unless ``allow_partial``. Returns the file written."""
    from .project import ProjectionParams
    from .report import model_result, write_report

    result, name = None, None
    if model is None:
        store = find_store(data, cache)
        key = pick_set(store, backbone)
    else:
        directory = find_model(model, cache)
        detector, name = Detector.load(directory), directory.name
        store = model_store(detector, data, cache)
        read = model_set(store, detector)  # the set(s) the model reads
        if read is None:
            raise ValueError(f"{store.path} lacks embeddings the model reads; extract them with:\n  "
                             + detector.extract_command(missing=missing_sets(store, detector)))
        key = store.resolve_key(backbone) if backbone else read.split("+")[0]  # the set the page projects
        scored = read.split("+") if detector.fused else [key]
        for k in dict.fromkeys([key, *scored]):
            store.require_complete(k, allow_partial)  # before the evaluation
        own = store.path.resolve() in training_stores(detector)
        if split is None and own:
            split = "test" if "test" in detector.metrics else "val"
        evaluation = evaluate(detector, store.path, split=split, key=scored if detector.fused else key)
        result = model_result(detector, evaluation, own)
    return write_report(store, key, model=result, model_name=name, out=out,
                        projection=projection or ProjectionParams(), n_jobs=n_jobs, command=command,
                        n_mistakes=n_mistakes, allow_partial=allow_partial)
