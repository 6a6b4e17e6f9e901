"""Classifier heads on embeddings: scikit-learn pipelines chosen by name, all giving P(fake).

``make_head(name, params, preprocess, random_state, n_samples)`` builds an unfitted
``Pipeline([*preprocessing, ("head", classifier)])``. Heads (``HEADS``):

* ``knn``: k nearest neighbours by cosine (euclidean on L2-normalised rows, the same ranking,
  computed with BLAS); P(fake) = distance-weighted vote.
* ``logreg``: logistic regression; ``C='auto'`` (the default) picks C from ``LOGREG_CS`` by
  ``LOGREG_FOLDS``-fold cross-validated log loss (``LogisticRegressionCV``) on the training rows,
  or on a stratified sample of ``LOGREG_SEARCH_MAX`` of them when there are more, then fits every
  row at that C (``SampledLogisticRegressionCV``); a number fixes C.
* ``linsvm``: linear SVM, P(fake) by sigmoid (Platt) calibration, 3 folds.
* ``svm``: RBF SVM. Exact ``SVC`` (sigmoid-calibrated, 3 folds) up to ``exact_max`` training
  samples (default 10,000); above, a Nystroem approximation of the same kernel
  (``n_components`` landmarks, default 1,000) followed by the linear SVM, so 100k samples fit in
  minutes; other SVC parameters apply to the exact SVC only. ``gamma='scale'`` means
  1 / (n_features * X.var()) for SVC and 1 / n_features for Nystroem (the same on
  standardised features, the default preprocessing).
* ``mlp``: one hidden layer of 256 units; ``early_stopping='auto'`` stops on a 10% validation
  split from 5,000 training samples up, on the training loss below.
* ``centroid``: nearest class centroid, sigmoid-calibrated on its distance difference.

Parameters (``params``) override the defaults; any other constructor parameter of the head's
classifier is accepted too (``head_parameters(name)`` lists them). Feature preprocessing is a
comma-separated list of ``l2`` (unit length rows), ``standard`` (zero mean, unit variance; columns of
float noise left unscaled, see ``NoiseFloorScaler``) and
``pca:K`` (K principal components), in order, or ``none``; each head has a default.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

CALIBRATION_FOLDS = 3
LOGREG_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse regularisation strengths tried by C='auto'
LOGREG_FOLDS = 5
LOGREG_SEARCH_MAX = 20_000  # C='auto' searches on at most this many rows (all of CIFAKE: 22.5 GB -> a sample)
MLP_EARLY_STOPPING_MIN = 5_000  # below, a 10% early-stopping split is too small to judge by


def _calibrated(estimator: BaseEstimator) -> CalibratedClassifierCV:
    return CalibratedClassifierCV(estimator, method="sigmoid", cv=CALIBRATION_FOLDS)


def _svm(p: dict, random_state: int, n_samples: int) -> list[tuple[str, BaseEstimator]]:
    exact_max, n_components, gamma = p.pop("exact_max"), p.pop("n_components"), p["gamma"]
    if n_samples <= exact_max:
        return [("head", _calibrated(SVC(kernel="rbf", random_state=random_state, **p)))]
    kernel = Nystroem(kernel="rbf", gamma=None if gamma == "scale" else gamma,
                      n_components=min(n_components, n_samples), random_state=random_state)
    return [("kernel", kernel), ("head", _calibrated(LinearSVC(C=p["C"], random_state=random_state)))]


class SampledLogisticRegressionCV(LogisticRegressionCV):
    """``LogisticRegressionCV`` whose C search runs on a stratified sample of at most
    ``LOGREG_SEARCH_MAX`` rows; the model is then fit on every row at the chosen C.

    The search works on float64 copies of its rows and of each fold (scikit-learn's choice): on all of
    CIFAKE train with 9,920-d features it peaked at 22.5 GB. The final ``LogisticRegression`` keeps
    the rows' own float32. ``C_`` is the chosen C, ``coef_`` / ``intercept_`` those of the final fit.
    """

    def fit(self, X, y, sample_weight=None, **params):
        y = np.asarray(y)
        if len(y) <= LOGREG_SEARCH_MAX:
            return super().fit(X, y, sample_weight=sample_weight, **params)
        rows, _ = train_test_split(np.arange(len(y)), train_size=LOGREG_SEARCH_MAX, stratify=y,
                                   random_state=self.random_state)
        rows.sort()
        super().fit(X[rows], y[rows], sample_weight=None if sample_weight is None else sample_weight[rows], **params)
        shared = set(LogisticRegression().get_params()) & set(self.get_params())
        final = LogisticRegression(C=float(np.atleast_1d(self.C_)[0]), **{k: getattr(self, k) for k in shared})
        final.fit(X, y, sample_weight=sample_weight)
        self.coef_, self.intercept_, self.n_iter_ = final.coef_, final.intercept_, final.n_iter_
        return self


def _logreg(p: dict, random_state: int, n_samples: int) -> list[tuple[str, BaseEstimator]]:
    if p["C"] != "auto":
        return [("head", LogisticRegression(random_state=random_state, **p))]
    p.pop("C")
    if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters:  # scikit-learn >= 1.8
        p = {"l1_ratios": (0.0,), "use_legacy_attributes": False, **p}
    return [("head", SampledLogisticRegressionCV(Cs=list(LOGREG_CS), cv=LOGREG_FOLDS, scoring="neg_log_loss",
                                                 random_state=random_state, **p))]


class LeanMLPClassifier(MLPClassifier):
    """``MLPClassifier`` that lets go of what only fitting uses: its optimizer's state (Adam's two moment
    arrays per weight array) and the best weights' copy kept without early stopping; a saved lite2
    every-block mlp head: 38.8 MB with them, 13.2 MB without. A refit without ``warm_start`` makes new ones."""

    FIT_ONLY = ("_optimizer", "_best_coefs", "_best_intercepts")

    def fit(self, X, y, sample_weight=None):
        super().fit(X, y, sample_weight=sample_weight)
        for name in self.FIT_ONLY:
            self.__dict__.pop(name, None)
        return self


NOISE_FLOOR = 1e-4  # a column's std below this share of the median column's is float noise


class NoiseFloorScaler(StandardScaler):
    """``StandardScaler`` that leaves float noise alone: a column whose standard deviation is below ``floor``
    times the median column's (a backbone's dead channel, constant but for rounding: effnet-lite2's every-block
    sets have four, std 1e-8 against a median of 1.5) keeps scale 1 instead of being stretched to unit
    variance, which would make P(fake) follow the rounding of whatever embedded the image (torch or ONNX,
    one CPU or another). Columns of exactly zero variance keep scale 1 as in ``StandardScaler``."""

    def __init__(self, *, floor: float = NOISE_FLOOR, copy: bool = True, with_mean: bool = True,
                 with_std: bool = True):
        super().__init__(copy=copy, with_mean=with_mean, with_std=with_std)
        self.floor = floor

    def partial_fit(self, X, y=None, sample_weight=None):
        super().partial_fit(X, y, sample_weight)
        if self.scale_ is not None:
            self.scale_[float_noise(np.sqrt(self.var_), self.floor)] = 1.0
        return self


def float_noise(std: np.ndarray, floor: float = NOISE_FLOOR) -> np.ndarray:
    """Columns whose standard deviation ``std`` is below ``floor`` times the median column's: float noise."""
    return std < floor * np.median(std)


def stretched_noise(pipeline: BaseEstimator) -> int:
    """Columns that a plain ``StandardScaler`` anywhere in a fitted ``pipeline`` (models fit before
    ``NoiseFloorScaler``) stretches from float noise to unit variance; 0 for models fit since."""
    count, todo = 0, [pipeline]
    while todo:
        step = todo.pop()
        if type(step) is StandardScaler and getattr(step, "var_", None) is not None:
            std = np.sqrt(step.var_)
            count += int(((std > 0) & float_noise(std)).sum())  # zero variance: StandardScaler kept scale 1
        inner = getattr(step, "estimator", None)  # FrozenEstimator
        todo += [s for _, s in getattr(step, "steps", [])] + [t for _, t in getattr(step, "transformer_list", [])]
        todo += list(getattr(step, "estimators_", [])) + ([inner] if isinstance(inner, BaseEstimator) else [])
    return count


def _mlp(p: dict, random_state: int, n_samples: int) -> list[tuple[str, BaseEstimator]]:
    if p["early_stopping"] == "auto":
        p["early_stopping"] = n_samples >= MLP_EARLY_STOPPING_MIN
    return [("head", LeanMLPClassifier(random_state=random_state, **p))]


@dataclass(frozen=True)
class Head:
    """A named head: its classifier class (whose parameters ``params`` may set), defaults, default
    preprocessing; ``calibrate`` wraps it for P(fake), ``build`` replaces the generic construction."""

    estimator: type
    defaults: dict
    preprocess: str
    description: str
    calibrate: bool = False
    build: Callable[[dict, int, int], list[tuple[str, BaseEstimator]]] | None = None

    def steps(self, params: dict, random_state: int, n_samples: int) -> list[tuple[str, BaseEstimator]]:
        if self.build is not None:
            return self.build(dict(params), random_state, n_samples)
        if "random_state" in inspect.signature(self.estimator).parameters:
            params = {"random_state": random_state, **params}
        estimator = self.estimator(**params)
        return [("head", _calibrated(estimator) if self.calibrate else estimator)]


HEADS: dict[str, Head] = {
    # cosine neighbours as euclidean ones of L2-normalised rows: the same ranking, but on BLAS
    # (sklearn's metric="cosine" takes a scalar path, about an hour for 20k x 80k x 2304)
    "knn": Head(KNeighborsClassifier, {"n_neighbors": 15, "weights": "distance", "algorithm": "brute"},
                "l2", "k nearest neighbours, cosine (euclidean on L2-normalised rows)"),
    "logreg": Head(LogisticRegression, {"C": "auto", "max_iter": 2000}, "standard",
                   "logistic regression, C tuned by cross-validation unless given", build=_logreg),
    "linsvm": Head(LinearSVC, {"C": 1.0}, "standard", "linear SVM, sigmoid-calibrated", calibrate=True),
    "svm": Head(SVC, {"C": 1.0, "gamma": "scale", "exact_max": 10_000, "n_components": 1000}, "standard",
                "RBF SVM (Nystroem approximation above exact_max samples), sigmoid-calibrated", build=_svm),
    "mlp": Head(MLPClassifier, {"hidden_layer_sizes": (256,), "alpha": 1e-4, "max_iter": 300,
                                "early_stopping": "auto"}, "standard", "one-hidden-layer perceptron", build=_mlp),
    "centroid": Head(NearestCentroid, {}, "l2", "nearest class centroid, sigmoid-calibrated", calibrate=True),
}


def head_parameters(name: str) -> list[str]:
    """Parameter names that ``params`` may set for head ``name``."""
    head = get_head(name)
    own = [p for p in inspect.signature(head.estimator).parameters if p != "random_state"]
    return sorted(set(head.defaults) | set(own))


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {', '.join(HEADS)}")
    return HEADS[name]


def head_params(name: str, params: dict | None = None) -> dict:
    """The defaults of head ``name`` updated with ``params`` (checked against its parameters)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(head_parameters(name)))
    if unknown:
        raise ValueError(f"head {name} has no parameter {', '.join(unknown)}; "
                         f"its parameters: {', '.join(head_parameters(name))}")
    return {**get_head(name).defaults, **params}


def preprocessing_steps(spec: str, random_state: int = 0) -> list[tuple[str, BaseEstimator]]:
    """Pipeline steps for ``'l2,standard,pca:256'`` (any subset, in order) or ``'none'``."""
    steps: list[tuple[str, BaseEstimator]] = []
    for part in (p.strip().lower() for p in spec.split(",")):
        name, _, arg = part.partition(":")
        if name in ("", "none"):
            continue
        if name == "l2":
            steps.append(("l2", Normalizer()))
        elif name == "standard":
            steps.append(("standard", NoiseFloorScaler()))
        elif name == "pca" and arg.isdigit() and int(arg) > 0:
            steps.append(("pca", PCA(n_components=int(arg), random_state=random_state)))
        else:
            raise ValueError(f"unknown preprocessing {part!r}: use l2, standard, pca:K (e.g. pca:256) or none")
    if len({n for n, _ in steps}) < len(steps):
        raise ValueError(f"preprocessing {spec!r} repeats a step")
    return steps


def make_head(
    name: str,
    params: dict | None = None,
    preprocess: str | None = None,
    random_state: int = 0,
    n_samples: int = 0,
) -> Pipeline:
    """An unfitted pipeline: preprocessing (``None`` = the head's default) then head ``name``.

    ``n_samples`` is the training-set size, which picks the exact or approximate ``svm``.
    """
    head = get_head(name)
    pre = head.preprocess if preprocess is None else preprocess
    steps = preprocessing_steps(pre, random_state) + head.steps(head_params(name, params), random_state, n_samples)
    return Pipeline(steps)


def tuned_params(pipeline: Pipeline) -> dict:
    """Parameters a fitted pipeline chose itself (``C`` of a cross-validated logreg), else ``{}``."""
    if hasattr(pipeline[-1], "C_"):
        return {"C": float(np.atleast_1d(pipeline[-1].C_)[0])}
    return {}
