"""Projections: names, stratified subsampling, k-NN graph, shapes, determinism, structure, caching in the store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fakedet.project as projection
from fakedet.cli import cli
from fakedet.project import (
    ProjectionParams, compute_projection, ids_hash, nearest_neighbors, project, stratified_subsample,
)
from fakedet.store import Store

KEY = "toy-0123456789ab"
ATTRS = {"spec": "toy", "fingerprint": "f" * 32, "identity": {"weights": "w"}}
FAST = {"pca": ProjectionParams("pca"), "tsne": ProjectionParams("tsne", perplexity=10),
        "umap": ProjectionParams("umap", n_neighbors=10)}


def clusters(n: int = 90, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs; label 1 for the first, 0 for the others."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(0, 10, size=(3, dim))
    group = np.arange(n) % 3
    X = centre[group] + rng.normal(size=(n, dim))
    return X.astype(np.float32), group


def write_store(path, X: np.ndarray, labels: np.ndarray) -> Store:
    n = len(X)
    table = pd.DataFrame({
        "id": [f"{i:032x}" for i in range(n)], "path": [f"train/{i:04d}.jpg" for i in range(n)],
        "split": "train", "label": labels.astype(np.int8), "format": "JPEG",
        "width": np.full(n, 32, np.int32), "height": np.full(n, 32, np.int32),
        "nbytes": np.full(n, 1000, np.int64), "error": "",
    })
    store = Store(path)
    with store.writer(source="/nowhere") as writer:
        writer.write_images(table)
        writer.open_set(KEY, ATTRS, X.shape[1]).append(table["id"].to_numpy(), X)
    return store


def knn_agreement(coords: np.ndarray, group: np.ndarray, k: int = 5) -> float:
    """Fraction of points whose k nearest 2-D neighbours mostly share their group."""
    indices, _ = nearest_neighbors(coords, k, n_jobs=1)
    return float(np.mean([np.bincount(group[row]).argmax() == g for row, g in zip(indices, group)]))


def test_canonical_names():
    assert ProjectionParams().name == "umap-n15-d0.1-s0-pca50-sub20000"
    assert ProjectionParams("tsne", perplexity=30.0, random_state=3).name == "tsne-p30-s3-pca50-sub20000"
    assert ProjectionParams("pca", pca=50).name == "pca-s0-sub20000"
    assert ProjectionParams("umap", min_dist=0.25, pca=0, subsample=0).name == "umap-n15-d0.25-s0"
    assert ProjectionParams("umap", perplexity=5).name == ProjectionParams("umap").name  # t-SNE only


@pytest.mark.parametrize("bad", [{"method": "mds"}, {"n_neighbors": 1}, {"perplexity": 0}, {"pca": -1},
                                 {"subsample": -5}, {"min_dist": -0.1}])
def test_invalid_params(bad):
    with pytest.raises(ValueError):
        ProjectionParams(**bad)


def test_stratified_subsample_keeps_proportions_and_is_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    rows = stratified_subsample(labels, 100, random_state=1)
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == [70, 30]
    assert np.array_equal(rows, stratified_subsample(labels, 100, random_state=1))
    assert not np.array_equal(rows, stratified_subsample(labels, 100, random_state=2))
    odd = np.array([0] * 5 + [1] * 4 + [-1])  # quotas of 6: 3.0, 2.4, 0.6 -> largest remainder wins
    assert np.bincount(odd[stratified_subsample(odd, 6)] + 1).tolist() == [1, 3, 2]
    assert np.array_equal(stratified_subsample(labels, 0), np.arange(1000))
    assert np.array_equal(stratified_subsample(labels, 5000), np.arange(1000))


def test_nearest_neighbors_exact_and_without_self():
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    indices, distances = nearest_neighbors(X, 4, n_jobs=1)
    full = np.linalg.norm(X[:, None] - X[None], axis=-1)
    np.fill_diagonal(full, np.inf)
    assert indices.shape == distances.shape == (40, 4)
    assert not np.any(indices == np.arange(40)[:, None])
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :4], rtol=1e-4)


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_projection_shape_determinism_and_structure(method):
    X, group = clusters()
    params = FAST[method]
    first = compute_projection(X, params, n_jobs=1)
    assert first.shape == (90, 2) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, compute_projection(X, params, n_jobs=1))
    assert knn_agreement(first, group) > 0.95  # the three blobs stay apart
    if method != "pca":
        other = ProjectionParams(method, n_neighbors=params.n_neighbors, perplexity=params.perplexity, random_state=1)
        assert not np.allclose(first, compute_projection(X, other, n_jobs=1))


def test_pca_pre_reduction_is_applied(monkeypatch):
    seen = []
    monkeypatch.setattr(projection, "_tsne", lambda X, params, n_jobs: seen.append(X.shape) or X[:, :2])
    X, _ = clusters(dim=32)
    compute_projection(X, ProjectionParams("tsne", pca=8), n_jobs=1)
    compute_projection(X, ProjectionParams("tsne", pca=0), n_jobs=1)
    compute_projection(X, ProjectionParams("tsne", pca=64), n_jobs=1)  # more than the data has: skipped
    assert seen == [(90, 8), (90, 32), (90, 32)]


def test_too_few_points():
    with pytest.raises(ValueError, match="at least"):
        compute_projection(np.zeros((3, 4), np.float32), ProjectionParams("pca"))


def counting(monkeypatch) -> list:
    calls = []
    real = projection.compute_projection

    def wrapped(X, params, n_jobs=None):
        calls.append((len(X), params.name))
        return real(X, params, n_jobs)

    monkeypatch.setattr(projection, "compute_projection", wrapped)
    return calls


def test_cached_in_store_and_reused(tmp_path, monkeypatch):
    X, group = clusters(n=60)
    store = write_store(tmp_path / "toy.h5", X, (group == 0).astype(int))
    calls = counting(monkeypatch)
    params = ProjectionParams("pca", subsample=30, random_state=4)

    first = project(store, "toy", params, n_jobs=1)
    assert calls == [(30, "pca-s4-sub30")] and not first.cached
    ids, coords, stored = store.projection(KEY, "pca-s4-sub30")
    assert list(ids) == list(first.ids) and np.array_equal(coords, first.coords)
    assert stored["n_points"] == 30 and stored["n_total"] == 60 and stored["method"] == "pca"
    assert stored["ids_hash"] == ids_hash(store.load(KEY).frame["id"])
    labels = store.load(KEY).frame.set_index("id").loc[first.ids, "label"]
    assert labels.sum() == 10  # stratified: a third of the subsample is label 1

    loaded = store.load(KEY).frame
    pd.testing.assert_frame_equal(store.frame(KEY).sort_values("id", ignore_index=True),
                                  loaded.sort_values("id", ignore_index=True))

    def no_embeddings(*args, **kwargs):
        raise AssertionError("embeddings read although the projection is cached")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "load", no_embeddings)
        second = project(tmp_path / "toy.h5", KEY, params)
    assert second.cached and len(calls) == 1
    np.testing.assert_array_equal(second.coords, first.coords)
    assert list(second.ids) == list(first.ids)

    project(store, KEY, params, recompute=True)
    project(store, KEY, ProjectionParams("pca", subsample=20, random_state=4))
    assert [c[1] for c in calls] == ["pca-s4-sub30", "pca-s4-sub30", "pca-s4-sub20"]


def test_recomputed_when_the_embedding_set_changes(tmp_path, monkeypatch):
    X, group = clusters(n=60)
    store = write_store(tmp_path / "toy.h5", X[:50], group[:50])
    calls = counting(monkeypatch)
    project(store, KEY, ProjectionParams("pca", subsample=0))
    with store.writer() as writer:  # images added and embedded since the projection was cached
        frame = store.images()
        more = frame.iloc[:10].assign(id=[f"{i:032x}" for i in range(50, 60)], path=[f"x/{i}.jpg" for i in range(10)])
        writer.write_images(pd.concat([frame, more], ignore_index=True))
        writer.open_set(KEY, ATTRS, X.shape[1]).append(more["id"].to_numpy(), X[50:])
    again = project(store, KEY, ProjectionParams("pca", subsample=0))
    assert not again.cached and again.coords.shape == (60, 2)
    assert [n for n, _ in calls] == [50, 60]


def test_cli_project(tmp_path):
    X, group = clusters(n=60)
    write_store(tmp_path / "toy.h5", X, group)
    runner = CliRunner()
    args = ["project", "--cache", str(tmp_path / "toy.h5"), "--method", "pca", "--subsample", "40", "--seed", "2"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "pca-s2-sub40 of toy-0123456789ab: 40 of 60 images, computed" in first.output
    second = runner.invoke(cli, args)
    assert "read from the cache" in second.output
    assert Store(tmp_path / "toy.h5").projection(KEY, "pca-s2-sub40")[1].shape == (40, 2)
    bad = runner.invoke(cli, ["project", "--cache", str(tmp_path / "toy.h5"), "-b", "nothing"])
    assert bad.exit_code == 2 and "no embedding set 'nothing'" in bad.output
