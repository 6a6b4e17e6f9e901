"""Out-of-domain summary: calibrated on held-out in-domain rows, flags shifted and off-subspace rows."""
from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from fakedet import domain
from fakedet.detector import TRUSTED_TYPES
from fakedet.domain import DomainModel, fit_rows


def _domain(n, rng, dim=40, rank=5):
    """Rows near a rank-5 subspace of a 40-d space, like embeddings of one kind of image."""
    basis = np.random.default_rng(99).normal(size=(rank, dim))
    return rng.normal(size=(n, rank)) @ basis + 0.05 * rng.normal(size=(n, dim))


def test_in_domain_rate_holds_and_other_domains_are_flagged():
    rng = np.random.default_rng(0)
    train, val, test = _domain(2000, rng), _domain(1000, rng), _domain(2000, rng)
    model = DomainModel.fit(train, n_components=5).calibrate(val, 0.99)
    assert 0.97 <= 1 - model.flag(test).mean() <= 1.0  # about 99% of new in-domain rows stay in
    shifted = _domain(500, rng) + 3.0                   # same structure, moved
    off_subspace = rng.normal(size=(500, 40))           # unremarkable scale, outside the subspace
    assert model.flag(shifted).mean() > 0.95
    assert model.flag(off_subspace).mean() > 0.95
    assert model.score(train).mean() == pytest.approx(1.0, rel=1e-6)


def test_large_training_sets_are_summarised_from_a_seeded_sample_and_scored_in_chunks(monkeypatch):
    rng = np.random.default_rng(2)
    X = _domain(9000, rng)
    monkeypatch.setattr(domain, "SCORE_BYTES", 8 * X.shape[1] * 4000)  # 4,000 float64 rows at a time
    train = np.arange(1000, 9000)
    model = DomainModel.fit(X, train, n_components=5, max_rows=3000, random_state=0)
    assert model.pipeline["scale"].n_samples_seen_ == 3000          # a sample, not all 8,000 rows
    again = DomainModel.fit(X, train, n_components=5, max_rows=3000, random_state=0)
    np.testing.assert_array_equal(model.pipeline["pca"].components_, again.pipeline["pca"].components_)
    whole = DomainModel.fit(X[train], n_components=5, max_rows=3000, random_state=0)  # rows=None: all of X
    np.testing.assert_allclose(model.score(X[:20]), whole.score(X[:20]), rtol=1e-9)
    scores = model.score(X)                                          # 9,000 rows: three chunks
    one_by_one = np.concatenate([model.score(X[i:i + 1]) for i in range(0, 9000, 997)])
    np.testing.assert_allclose(scores[::997], one_by_one, rtol=1e-9)
    assert model.score(X[:0]).shape == (0,)


def test_wide_embeddings_are_summarised_from_fewer_rows(monkeypatch):
    assert fit_rows(12_512) == 20_000 and fit_rows(34_144) == 2 * 2**30 // (8 * 34_144)  # lite2 blocks: all rows
    monkeypatch.setattr(domain, "FIT_BYTES", 8 * 40 * 1000)  # 1,000 float64 rows of 40 columns
    X = _domain(3000, np.random.default_rng(3))
    assert X.shape[1] <= 40 and fit_rows(X.shape[1]) >= 1000
    wide = np.concatenate([X, X], axis=1)  # twice the columns: half the rows
    model = DomainModel.fit(wide, n_components=5, random_state=0)
    assert model.pipeline["scale"].n_samples_seen_ == fit_rows(wide.shape[1]) < 3000


def test_rate_moves_the_threshold():
    rng = np.random.default_rng(1)
    train, val = _domain(800, rng), _domain(400, rng)
    strict = DomainModel.fit(train, n_components=5).calibrate(val, 0.9)
    loose = DomainModel.fit(train, n_components=5).calibrate(val, 0.999)
    assert strict.threshold < loose.threshold
    with pytest.raises(ValueError, match="in-domain rate"):
        strict.calibrate(val, 1.0)
    with pytest.raises(ValueError, match="held-out"):
        strict.calibrate(val[:0])


def test_round_trip_through_skops_and_meta(tmp_path):
    rng = np.random.default_rng(2)
    model = DomainModel.fit(_domain(300, rng), n_components=8).calibrate(_domain(100, rng))
    sio.dump(model.pipeline, tmp_path / "domain.skops")
    again = DomainModel.from_meta(sio.load(tmp_path / "domain.skops", trusted=TRUSTED_TYPES), model.meta)
    X = _domain(50, rng)
    np.testing.assert_allclose(again.score(X), model.score(X))
    assert again.meta == model.meta


def test_tiny_inputs():
    with pytest.raises(ValueError, match="at least 3"):
        DomainModel.fit(np.zeros((2, 4)))
    model = DomainModel.fit(np.random.default_rng(3).normal(size=(5, 10)), n_components=64)
    assert model.meta["n_components"] == 4


def test_scores_are_the_pipelines_statistics_and_fitting_leaves_the_rows_untouched():
    rng = np.random.default_rng(4)
    train, held = _domain(600, rng), _domain(50, rng)
    before = train.copy()
    model = DomainModel.fit(train, n_components=6)  # float64 rows: the summary scales its own copy
    np.testing.assert_array_equal(train, before)
    scaled = model.pipeline["scale"].transform(held)
    z = model.pipeline.transform(held)             # whitened components
    pca = model.pipeline["pca"]
    residual = ((scaled - pca.mean_) ** 2).sum(axis=1) - (((scaled - pca.mean_) @ pca.components_.T) ** 2).sum(axis=1)
    expected = ((z ** 2).mean(axis=1) / model.t2_scale + np.maximum(residual, 0) / model.q_scale) / 2
    np.testing.assert_allclose(model.score(held), expected, rtol=1e-9)
    assert model.score(train).mean() == pytest.approx(1.0, rel=1e-6)


def test_scores_added_a_block_of_columns_at_a_time_equal_the_whole_rows(monkeypatch):
    rng = np.random.default_rng(4)
    model = DomainModel.fit(_domain(600, rng), n_components=5).calibrate(_domain(200, rng))
    X = np.concatenate([_domain(300, rng), rng.normal(size=(50, 40))])  # in and out of domain
    monkeypatch.setattr(domain, "SCORE_BYTES", 8 * 40 * 64)  # a few dozen rows at a time
    blocks = domain.BlockScores(model.pipeline, len(X))
    for columns in (slice(25, 40), slice(0, 7), slice(7, 25)):  # a fused model's sets, in any order
        blocks.add(X[:, columns], columns)
    np.testing.assert_allclose(model.scores_of(blocks), model.score(X), rtol=1e-9)
    np.testing.assert_array_equal(model.scores_of(blocks) > model.threshold, model.flag(X))
    with pytest.raises(ValueError, match="block of 7 columns for 8"):
        blocks.add(X[:, :7], slice(0, 8))


def test_rows_inside_the_subspace_do_not_turn_rounding_into_scores():
    """Rows of exactly rank 5 summarised by 5 components: Q is rounding only (1e-16 of the squared norm);
    a floor on its scale keeps the order of summation (whole rows or a block of columns at a time) from
    moving the scores."""
    rng = np.random.default_rng(5)
    basis = rng.normal(size=(5, 40))
    train, X = rng.normal(size=(300, 5)) @ basis, rng.normal(size=(100, 5)) @ basis
    model = DomainModel.fit(train, n_components=5)
    blocks = domain.BlockScores(model.pipeline, len(X)).add(X[:, 20:], slice(20, 40)).add(X[:, :20], slice(0, 20))
    np.testing.assert_allclose(model.scores_of(blocks), model.score(X), rtol=1e-6)
    assert model.score(train).mean() == pytest.approx(0.5, rel=1e-6)  # the T^2 half; Q adds nothing
