"""2-D projections (PCA, t-SNE, UMAP) of a cached embedding set, stored next to the embeddings.

A projection is named by its method and parameters (``ProjectionParams.name``, e.g.
``umap-n15-d0.1-s0-pca50-sub20000``) and written to ``/projections/<key>/<name>`` of the store,
so the next report reuses it. A cached projection is only reused while the embedding set
still holds the same images (checked by a hash of its content ids).

Pipeline: optional stratified subsample (seeded) -> optional PCA pre-reduction -> exact
k-nearest neighbours (scikit-learn, shared by t-SNE and UMAP; exact, deterministic and with no
JIT warm-up) -> openTSNE or umap-learn on that graph.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .provenance import versions
from .store import Store, StoreError

METHODS = ("umap", "tsne", "pca")
MIN_POINTS = 5


@dataclass(frozen=True)
class ProjectionParams:
    """How to project. ``pca``: dimensions of the PCA pre-reduction (0 = none; ignored by "pca");
    ``subsample``: at most this many points, stratified by label (0 = all)."""

    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    perplexity: float = 30.0
    pca: int = 50
    subsample: int = 20_000
    random_state: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown projection method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.n_neighbors < 2 or self.perplexity <= 0 or self.min_dist < 0 or self.pca < 0 or self.subsample < 0:
            raise ValueError(f"invalid projection parameters: {self}")

    @property
    def name(self) -> str:
        """Canonical name: only the parameters that matter for the method, in a fixed order."""
        parts = [self.method]
        if self.method == "umap":
            parts += [f"n{self.n_neighbors}", f"d{self.min_dist:g}"]
        elif self.method == "tsne":
            parts.append(f"p{self.perplexity:g}")
        parts.append(f"s{self.random_state}")
        if self.method != "pca" and self.pca:
            parts.append(f"pca{self.pca}")
        if self.subsample:
            parts.append(f"sub{self.subsample}")
        return "-".join(parts)


@dataclass
class Projection:
    """2-D coordinates of the points ``ids`` of embedding set ``key``."""

    key: str
    name: str
    ids: np.ndarray
    coords: np.ndarray
    params: dict
    cached: bool
    seconds: float


def default_jobs() -> int:
    return os.cpu_count() or 1


def ids_hash(ids: np.ndarray) -> str:
    """Order-independent hash of a set of content ids (detects a changed embedding set)."""
    joined = "\n".join(sorted(np.asarray(ids, dtype=str)))
    return hashlib.blake2b(joined.encode(), digest_size=8).hexdigest()


def stratified_subsample(labels: np.ndarray, n: int, random_state: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows (all if ``n`` is 0 or >= len) keeping the label proportions."""
    labels = np.asarray(labels)
    if not n or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(random_state)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]:  # largest remainders
        quota[i] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def nearest_neighbors(X: np.ndarray, k: int, n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the others: (indices, distances), (N, k)."""
    index = NearestNeighbors(n_neighbors=k, n_jobs=n_jobs or default_jobs()).fit(X)
    distances, indices = index.kneighbors()
    return indices, distances.astype(np.float32)


def compute_projection(X: np.ndarray, params: ProjectionParams, n_jobs: int | None = None) -> np.ndarray:
    """(N, 2) float32 coordinates of the rows of ``X`` (no subsampling here)."""
    n = len(X)
    if n < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} points to project, got {n}")
    X = np.asarray(X, dtype=np.float32)
    n_jobs = n_jobs or default_jobs()
    if params.method == "pca":
        return _pca(X, 2, params.random_state)
    if params.pca and params.pca < min(X.shape):
        X = _pca(X, params.pca, params.random_state)
    if params.method == "tsne":
        return _tsne(X, params, n_jobs)
    return _umap(X, params, n_jobs)


def _pca(X: np.ndarray, dims: int, random_state: int) -> np.ndarray:
    solver = "randomized" if dims < min(X.shape) // 2 else "full"
    return PCA(dims, svd_solver=solver, random_state=random_state).fit_transform(X).astype(np.float32)


def _tsne(X: np.ndarray, params: ProjectionParams, n_jobs: int) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.initialization import pca as pca_init
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    perplexity = min(params.perplexity, (len(X) - 1) / 3)
    k = min(len(X) - 1, int(3 * perplexity))
    indices, distances = nearest_neighbors(X, k, n_jobs)
    affinities = PerplexityBasedNN(knn_index=PrecomputedNeighbors(indices, distances), perplexity=perplexity)
    tsne = TSNE(n_jobs=n_jobs, random_state=params.random_state)
    embedding = tsne.fit(affinities=affinities, initialization=pca_init(X, random_state=params.random_state))
    return np.asarray(embedding, dtype=np.float32)


def _umap(X: np.ndarray, params: ProjectionParams, n_jobs: int) -> np.ndarray:
    from umap import UMAP

    k = min(params.n_neighbors, len(X) - 1)
    indices, distances = nearest_neighbors(X, k - 1, n_jobs)
    # UMAP's graph counts each point as its own nearest neighbour
    indices = np.hstack([np.arange(len(X))[:, None], indices])
    distances = np.hstack([np.zeros((len(X), 1), np.float32), distances])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        # a seed makes UMAP's layout single-threaded (deterministic); n_jobs served the k-NN above
        model = UMAP(n_neighbors=k, min_dist=params.min_dist, random_state=params.random_state, n_jobs=1,
                     precomputed_knn=(indices, distances, None))
        return model.fit_transform(X).astype(np.float32)


def project(
    store: Store | str | Path,
    embedding: str,
    params: ProjectionParams = ProjectionParams(),
    *,
    n_jobs: int | None = None,
    recompute: bool = False,
    allow_partial: bool = False,
) -> Projection:
    """The projection of embedding set ``embedding`` (key or spec) of ``store``: read from the
    store when cached for the same images, else computed and written back."""
    store = store if isinstance(store, Store) else Store(store)
    key = store.resolve_key(embedding)
    store.require_complete(key, allow_partial)
    current = ids_hash(store.frame(key)["id"].to_numpy())
    cached = None if recompute else store.projection(key, params.name)
    if cached is not None and cached[2].get("ids_hash") == current:
        ids, coords, stored = cached
        return Projection(key, params.name, ids, coords, stored, cached=True, seconds=0.0)
    data = store.load(key)
    start = time.perf_counter()
    rows = stratified_subsample(data.y, params.subsample, params.random_state)
    coords = compute_projection(data.X[rows], params, n_jobs)
    seconds = time.perf_counter() - start
    ids = data.frame["id"].to_numpy()[rows]
    record = {
        **asdict(params), "name": params.name, "ids_hash": current, "n_points": int(len(rows)),
        "n_total": int(len(data.X)), "dim": int(data.X.shape[1]), "seconds": round(seconds, 3),
        "versions": {**versions(), **_projection_versions()},
    }
    try:
        with store.writer() as writer:
            writer.put_projection(key, params.name, ids, coords, record)
    except (StoreError, OSError) as err:  # e.g. another process is writing: still return the result
        warnings.warn(f"projection not cached: {err}", stacklevel=2)
    return Projection(key, params.name, ids, coords, record, cached=False, seconds=seconds)


def _projection_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("umap-learn", "openTSNE", "pynndescent", "numba"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
