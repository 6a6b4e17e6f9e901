"""Heads: every head learns separable data, stays at chance on noise; parameters and preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from fakedet import heads
from fakedet.heads import HEADS, head_parameters, make_head, preprocessing_steps, tuned_params


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Tiny matrices: extra BLAS threads only contend (the mlp tests ran 10x slower on a busy machine)."""
    with threadpool_limits(1):
        yield


def blobs(n: int = 400, dim: int = 32, shift: float = 1.5, seed: int = 0):
    """Two Gaussian classes whose means differ by 2 * shift on 4 dimensions (train, test halves)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X[:, :4] += np.where(y[:, None] == 1, shift, -shift)
    return X[: n // 2], y[: n // 2], X[n // 2:], y[n // 2:]


def noise(n: int = 400, dim: int = 32, seed: int = 1):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n, dim)).astype(np.float32), rng.integers(0, 2, n)
    return X[: n // 2], y[: n // 2], X[n // 2:], y[n // 2:]


def rings(n: int = 600, seed: int = 2):
    """Fake inside a ring of real (2-D plus 6 noise dims): needs a non-linear head."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 1, 1.0, 3.0) + rng.normal(0, 0.2, n)
    X = np.column_stack([radius * np.cos(angle), radius * np.sin(angle), rng.normal(0, 0.3, (n, 6))])
    return X[: n // 2], y[: n // 2], X[n // 2:], y[n // 2:]


def p_fake(pipeline, X):
    return pipeline.predict_proba(X)[:, list(pipeline.classes_).index(1)]


@pytest.mark.parametrize("name", list(HEADS))
def test_head_learns_separable_and_not_noise(name):
    Xtr, ytr, Xte, yte = blobs()
    model = make_head(name, n_samples=len(Xtr)).fit(Xtr, ytr)
    p = p_fake(model, Xte)
    assert p.shape == (len(Xte),) and ((p >= 0) & (p <= 1)).all()
    assert ((p >= 0.5) == yte).mean() > 0.95
    assert p[yte == 1].mean() > p[yte == 0].mean() + 0.5  # P(fake) is the fake column

    Xtr, ytr, Xte, yte = noise()
    p = p_fake(make_head(name, n_samples=len(Xtr)).fit(Xtr, ytr), Xte)
    assert 0.35 < ((p >= 0.5) == yte).mean() < 0.65


@pytest.mark.parametrize("exact_max", [10_000, 100])
def test_svm_is_an_rbf_kernel_machine_exact_or_approximate(exact_max):
    Xtr, ytr, Xte, yte = rings()
    model = make_head("svm", {"exact_max": exact_max, "n_components": 200}, n_samples=len(Xtr)).fit(Xtr, ytr)
    approximate = len(Xtr) > exact_max
    assert isinstance(model.named_steps.get("kernel"), Nystroem) is approximate
    assert isinstance(model[-1].estimator, SVC) is not approximate
    assert ((p_fake(model, Xte) >= 0.5) == yte).mean() > 0.95
    linear = make_head("logreg", n_samples=len(Xtr)).fit(Xtr, ytr)
    assert ((p_fake(linear, Xte) >= 0.5) == yte).mean() < 0.7  # the rings are not linearly separable


def test_logreg_searches_c_on_a_sample_of_large_training_sets_then_fits_every_row(monkeypatch):
    """Above LOGREG_SEARCH_MAX rows the C search sees a stratified sample (its float64 copies of all of
    CIFAKE took 22.5 GB); the model is the plain logistic regression of every row at the chosen C."""
    Xtr, ytr, Xte, yte = blobs(n=800, shift=0.4)
    weights = np.where(ytr == 1, 2.0, 1.0)
    monkeypatch.setattr(heads, "LOGREG_SEARCH_MAX", 120)
    seen = []
    fit = LogisticRegressionCV.fit
    monkeypatch.setattr(LogisticRegressionCV, "fit", lambda self, X, y, **kw: seen.append(len(y)) or fit(self, X, y, **kw))
    model = make_head("logreg", random_state=3).fit(Xtr, ytr, head__sample_weight=weights)
    head = model[-1]
    assert seen == [120] and head.C_ in heads.LOGREG_CS
    whole = make_head("logreg", {"C": float(head.C_)}, random_state=3).fit(Xtr, ytr, head__sample_weight=weights)
    np.testing.assert_allclose(head.coef_, whole[-1].coef_, rtol=1e-5)
    np.testing.assert_allclose(p_fake(model, Xte), p_fake(whole, Xte), rtol=1e-5)
    assert tuned_params(model) == {"C": float(head.C_)} and tuned_params(whole) == {}
    monkeypatch.setattr(heads, "LOGREG_SEARCH_MAX", 10_000)  # small sets: the search's own refit on every row
    seen.clear()
    assert make_head("logreg").fit(Xtr, ytr)[-1].coef_.shape == (1, Xtr.shape[1]) and seen == [len(ytr)]


def test_parameters_override_defaults_and_are_checked():
    model = make_head("logreg", {"C": 0.01, "class_weight": "balanced"}, random_state=7)
    head = model[-1]
    assert (head.C, head.class_weight, head.max_iter, head.random_state) == (0.01, "balanced", 2000, 7)
    assert make_head("knn", {"n_neighbors": 3})[-1].get_params()["n_neighbors"] == 3
    assert make_head("linsvm", {"C": 5.0})[-1].estimator.C == 5.0
    with pytest.raises(ValueError, match="no parameter bogus.*C"):
        make_head("logreg", {"bogus": 1})
    with pytest.raises(ValueError, match="unknown head 'forest'"):
        make_head("forest")
    assert {"C", "exact_max", "n_components", "gamma"} <= set(head_parameters("svm"))


def test_preprocessing_steps_in_order_and_defaults():
    steps = preprocessing_steps("l2, standard ,pca:8", random_state=3)
    assert [n for n, _ in steps] == ["l2", "standard", "pca"]
    assert isinstance(steps[0][1], Normalizer) and isinstance(steps[1][1], StandardScaler)
    assert isinstance(steps[2][1], PCA) and steps[2][1].n_components == 8 and steps[2][1].random_state == 3
    assert preprocessing_steps("none") == []
    assert [n for n, _ in make_head("logreg").steps] == ["standard", "head"]  # the head's default
    assert [n for n, _ in make_head("logreg", preprocess="none").steps] == ["head"]
    for bad in ("pca", "pca:0", "whiten", "l2,l2"):
        with pytest.raises(ValueError):
            preprocessing_steps(bad)
    Xtr, ytr, Xte, yte = blobs()
    model = make_head("logreg", preprocess="l2,standard,pca:8").fit(Xtr, ytr)
    assert model.named_steps["pca"].components_.shape == (8, 32)
    assert ((p_fake(model, Xte) >= 0.5) == yte).mean() > 0.95


def test_random_state_makes_fits_reproducible():
    Xtr, ytr, Xte, _ = blobs()
    a, b, c = (make_head("mlp", random_state=s).fit(Xtr, ytr) for s in (0, 0, 1))
    assert np.array_equal(p_fake(a, Xte), p_fake(b, Xte))
    assert not np.array_equal(p_fake(a, Xte), p_fake(c, Xte))


def test_a_fitted_mlp_saves_without_its_optimizer_state_and_predicts_as_scikit_learns():
    import skops.io as sio
    from sklearn.neural_network import MLPClassifier

    Xtr, ytr, Xte, _ = blobs(dim=256)
    lean = make_head("mlp", n_samples=len(Xtr)).fit(Xtr, ytr)
    plain = make_head("mlp", n_samples=len(Xtr))
    plain.steps[-1] = ("head", MLPClassifier(**plain["head"].get_params()))
    plain.fit(Xtr, ytr)
    assert not any(hasattr(lean["head"], k) for k in ("_optimizer", "_best_coefs"))
    assert all(hasattr(plain["head"], k) for k in ("_optimizer", "_best_coefs"))
    np.testing.assert_array_equal(p_fake(lean, Xte), p_fake(plain, Xte))
    assert len(sio.dumps(lean)) < 0.35 * len(sio.dumps(plain))  # Adam's moments and the best weights' copy
    again = sio.loads(sio.dumps(lean), trusted=sio.get_untrusted_types(data=sio.dumps(lean)))
    np.testing.assert_array_equal(p_fake(again, Xte), p_fake(lean, Xte))


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_float_noise_columns_are_not_stretched_so_rounding_does_not_move_p_fake(name):
    """A dead channel (constant 0.16 but for float32 rounding, like effnet-lite2's) must not turn a
    different runtime's rounding into a different verdict."""
    Xtr, ytr, Xte, _ = blobs()
    rng = np.random.default_rng(5)
    dead = lambda n: (0.16 + 1e-8 * rng.normal(size=(n, 1))).astype(np.float32)  # noqa: E731
    Xtr, Xte = np.hstack([Xtr, dead(len(Xtr))]), np.hstack([Xte, dead(len(Xte))])
    model = make_head(name, {"max_iter": 200} if name == "mlp" else None, n_samples=len(Xtr)).fit(Xtr, ytr)
    scaler = model.named_steps["standard"]
    assert scaler.scale_[-1] == 1.0 and np.allclose(scaler.scale_[:-1], Xtr[:, :-1].std(axis=0), rtol=1e-4)
    rounded = Xte.copy()
    rounded[:, -1] = np.nextafter(rounded[:, -1], np.float32(1), dtype=np.float32)  # one float32 step: 1.5e-8
    assert np.abs(p_fake(model, rounded) - p_fake(model, Xte)).max() < 1e-6
    import skops.io as sio

    from fakedet.detector import TRUSTED_TYPES

    again = sio.loads(sio.dumps(model), trusted=TRUSTED_TYPES)  # fakedet's loader trusts the scaler
    np.testing.assert_array_equal(p_fake(again, Xte), p_fake(model, Xte))
