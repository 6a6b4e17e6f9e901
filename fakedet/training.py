"""Fitting a head on embeddings with a given split: the detector, its threshold, metrics and
out-of-domain summary (``train_detector``), and k-fold cross-validation (``cross_validate``).
Arrays in, torch-free."""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .datasets import LABEL_NAMES
from .detector import Detector
from .domain import DEFAULT_RATE, DomainModel
from .fusion import head_pipeline
from .heads import HEADS, head_params, tuned_params
from .metrics import binary_metrics, choose_threshold
from .splits import cv_folds
from .store import Embeddings


def split_counts(labels: np.ndarray, split: np.ndarray) -> dict:
    """Images per split and label name."""
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
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    sample_weight: np.ndarray | None = None,
    domain_rate: float | None = DEFAULT_RATE,
    fusion: str = "concat",
) -> Detector:
    """Fit ``head`` on the labelled train rows, choose the threshold on val, score val and test.

    ``extra``: more training rows (X, y), e.g. augmented copies of train images, appended after
    them; ``sample_weight``: one weight per training row (train rows, then extra rows).
    ``domain_rate``: fit the out-of-domain summary on the clean train rows and calibrate it on
    val to keep this share in domain (None: no summary). ``fusion``: how a head reads a fused set
    (``fakedet.fusion``; ignored for one set).
    """
    y = emb.y
    rows = {s: np.flatnonzero((split == s) & (y >= 0)) for s in ("train", "val", "test")}
    if len(np.unique(y[rows["train"]])) < 2:
        raise ValueError("the training split needs both real and fake images")
    X_fit, y_fit = emb.X[rows["train"]], y[rows["train"]]
    if extra is not None and len(extra[1]):
        X_fit, y_fit = np.concatenate([X_fit, extra[0]]), np.concatenate([y_fit, extra[1]])
    pipeline = head_pipeline(emb, head, params, preprocess, random_state, n_samples=len(y_fit), fusion=fusion)
    start = time.perf_counter()
    pipeline.fit(X_fit, y_fit, **weight_kwargs(pipeline, head, sample_weight, len(y_fit)))
    fit_seconds = time.perf_counter() - start
    detector = Detector.for_embeddings(pipeline, emb, head, head_params(head, params),
                                       HEADS[head].preprocess if preprocess is None else preprocess)
    scored = np.concatenate([rows["val"], rows["test"]])
    start = time.perf_counter()
    p = np.full(len(y), np.nan)
    p[scored] = detector.p_fake(emb.X[scored])
    detector.training["seconds"] = {"fit": fit_seconds, "predict": time.perf_counter() - start}
    if emb.attrs.get("sets"):
        detector.training["fusion"] = {"mode": fusion, "sets": [m["key"] for m in emb.attrs["sets"]],
                                       "dropped": emb.attrs.get("dropped", {})}
    if tuned := tuned_params(pipeline):
        detector.training["tuned"] = tuned
    settle(detector, y, p, rows, domain_rate, lambda: DomainModel.fit(emb.X, rows["train"], random_state=random_state),
           lambda summary, r: summary.score(emb.X[r]))
    labelled = (y >= 0) & (split != "")
    detector.splits = pd.DataFrame({"id": emb.frame["id"].to_numpy()[labelled], "split": split[labelled]})
    return detector


def settle(detector: Detector, y: np.ndarray, p: np.ndarray, rows: dict, domain_rate: float | None,
           fit_domain: Callable[[], DomainModel], domain_scores: Callable[[DomainModel, object], np.ndarray]) -> None:
    """Give a fitted ``detector`` its threshold (chosen on the val rows), its out-of-domain summary
    (``fit_domain()``, calibrated on val to keep ``domain_rate`` in; None: none) and the metrics of the
    val and test rows. ``y``, ``p`` (P(fake)) are aligned; ``rows[split]``: an index array or slice of
    them; ``domain_scores(summary, rows[split])``: those rows' domain scores."""
    val = rows["val"]
    both = len(np.unique(y[val])) == 2
    if both:
        detector.threshold = choose_threshold(y[val], p[val])
    detector.training["threshold_from"] = "val" if both else "default 0.5"
    scores = {}  # each split's domain scores, computed once
    if domain_rate is not None and len(y[val]):
        summary = fit_domain()
        scores = {s: domain_scores(summary, rows[s]) for s in ("val", "test") if len(y[rows[s]])}
        detector.domain = summary.calibrate_scores(scores["val"], domain_rate)
    for s in ("val", "test"):
        if len(y[rows[s]]):
            detector.metrics[s] = binary_metrics(y[rows[s]], p[rows[s]], detector.threshold)
            if s in scores:
                detector.metrics[s]["out_of_domain"] = float((scores[s] > detector.domain.threshold).mean())


def weight_kwargs(pipeline, head: str, sample_weight: np.ndarray | None, n: int) -> dict:
    """``fit`` keywords passing ``sample_weight`` to the pipeline's last step (refused where it has none)."""
    if sample_weight is None:
        return {}
    if len(sample_weight) != n:
        raise ValueError(f"{len(sample_weight)} sample weights for {n} training rows")
    name, step = pipeline.steps[-1]
    inner = getattr(step, "estimator", None) or step  # a calibrated head weights its own classifier too
    if not all("sample_weight" in inspect.signature(e.fit).parameters for e in (step, inner)):
        raise ValueError(f"head {head} does not take sample weights (needed to balance sources); "
                         "use logreg, linsvm, svm or mlp")
    return {f"{name}__sample_weight": np.asarray(sample_weight, dtype=float)}


def cross_validate(
    emb: Embeddings,
    pool: np.ndarray,
    head: str = "logreg",
    *,
    n_splits: int = 5,
    params: dict | None = None,
    preprocess: str | None = None,
    random_state: int = 0,
    fusion: str = "concat",
) -> dict:
    """k-fold metrics (threshold 0.5) over the rows where ``pool`` is true, content ids kept together."""
    folds = cv_folds(emb.frame[pool], n_splits, random_state)
    X, y, per_fold = emb.X[pool], emb.y[pool], []
    for k in range(n_splits):
        train, held_out = (folds >= 0) & (folds != k), folds == k
        pipeline = head_pipeline(emb, head, params, preprocess, random_state, n_samples=int(train.sum()),
                                 fusion=fusion).fit(X[train], y[train])
        proba = pipeline.predict_proba(X[held_out])[:, list(pipeline.classes_).index(1)]
        per_fold.append({k: v for k, v in binary_metrics(y[held_out], proba).items() if k != "confusion"})
    table = pd.DataFrame(per_fold).astype(float)
    return {"folds": n_splits, "threshold": 0.5, "mean": table.mean().to_dict(), "std": table.std().to_dict()}
