"""Soft-voting ensembles of saved models: the mean of the members, the same model as a stacked fused fit,
the model file and its use by evaluate, the CLI, and refusals of members that cannot be averaged."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from test_detector import make_store
from test_fusion import KEY_A, KEY_B, add_set, two_sets
from threadpoolctl import threadpool_limits

from fakedet.cli import cli
from fakedet.detector import Detector
from fakedet.ensemble import ensemble
from fakedet.fusion import load_sets
from fakedet.scoring import evaluate
from fakedet.workflow import fit


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def test_ensemble_is_the_stacked_fit_without_refitting(tmp_path):
    store, _ = two_sets(tmp_path / "d.h5", n=200)
    a, b = fit(store.path, KEY_A, "logreg"), fit(store.path, KEY_B, "logreg")
    a.save(tmp_path / "a"), b.save(tmp_path / "b")
    model = ensemble([tmp_path / "a", tmp_path / "b"])
    emb = load_sets(store, [KEY_A, KEY_B])
    mean = (a.p_fake(emb.X[:, :16]) + b.p_fake(emb.X[:, 16:])) / 2
    np.testing.assert_allclose(model.p_fake(emb.X), mean, rtol=1e-6)
    stacked = fit(store.path, [KEY_A, KEY_B], "logreg", fusion="stack")  # the same heads fit inside one model
    np.testing.assert_allclose(model.p_fake(emb.X), stacked.p_fake(emb.X), rtol=1e-6)
    assert model.threshold == stacked.threshold and model.key == stacked.key and model.sets == stacked.sets
    for s in ("val", "test"):
        assert model.metrics[s]["accuracy"] == stacked.metrics[s]["accuracy"]
        assert model.metrics[s]["out_of_domain"] == stacked.metrics[s]["out_of_domain"] <= 0.1
    # the same out-of-domain summary, though the ensemble scores it one set's columns at a time
    assert model.domain.threshold == pytest.approx(stacked.domain.threshold, rel=1e-6)
    np.testing.assert_allclose(model.domain_score(emb.X), stacked.domain_score(emb.X), rtol=1e-6)
    assert model.training["counts"] == stacked.training["counts"]
    assert [m["key"] for m in model.training["ensemble"]] == [KEY_A, KEY_B]
    saved = Detector.load(model.save(tmp_path / "e"))
    assert saved.fused and [m.key for m in saved.members] == [KEY_A, KEY_B]
    np.testing.assert_allclose(saved.p_fake(emb.X), mean, rtol=1e-6)
    result = evaluate(saved, split="test")
    assert result.metrics["accuracy"] == model.metrics["test"]["accuracy"]
    out = CliRunner().invoke(cli, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                   str(tmp_path / "cli")])
    assert out.exit_code == 0, out.output
    assert "fused (stack)" in out.output and f"member 2: logreg on {KEY_B}" in out.output
    np.testing.assert_allclose(Detector.load(tmp_path / "cli").p_fake(emb.X), mean, rtol=1e-6)


def test_members_may_share_a_set(tmp_path):
    """Two heads on one set and one on another: the mean of the three, through save, load and evaluate."""
    store, _ = two_sets(tmp_path / "d.h5", n=200)
    a, a2, b = (fit(store.path, KEY_A, "logreg"), fit(store.path, KEY_A, "logreg", params={"C": 0.01}),
                fit(store.path, KEY_B, "logreg"))
    model = ensemble([a, a2, b])
    assert [s["key"] for s in model.sets] == [KEY_A, KEY_A, KEY_B] and model.key == f"{KEY_A}+{KEY_A}+{KEY_B}"
    emb = load_sets(store, model.key)
    assert emb.X.shape[1] == 16 + 16 + 8  # the shared set read once per member
    whole = load_sets(store, [KEY_A, KEY_B])
    mean = (a.p_fake(whole.X[:, :16]) + a2.p_fake(whole.X[:, :16]) + b.p_fake(whole.X[:, 16:])) / 3
    np.testing.assert_allclose(model.p_fake(emb.X), mean, rtol=1e-6)
    saved = Detector.load(model.save(tmp_path / "e"))
    assert [v.key for v in saved.voters()] == [KEY_A, KEY_A, KEY_B]
    result = evaluate(saved, split="test")
    assert result.metrics["accuracy"] == model.metrics["test"]["accuracy"]


def test_ensemble_refuses_members_it_cannot_average(tmp_path):
    store, _ = two_sets(tmp_path / "d.h5", n=120)
    a = fit(store.path, KEY_A, "logreg")
    with pytest.raises(ValueError, match="at least two models"):
        ensemble([a])
    with pytest.raises(ValueError, match="another split than model 1: fit every member with the same"):
        ensemble([a, fit(store.path, KEY_B, "logreg", random_state=1)])
    with pytest.raises(ValueError, match="the same fit"):
        ensemble([a, fit(store.path, KEY_A, "logreg")])
    with pytest.raises(ValueError, match="is a fused model"):
        ensemble([a, fit(store.path, [KEY_A, KEY_B], "logreg")])
    other, _ = two_sets(tmp_path / "o.h5", n=120)
    with pytest.raises(ValueError, match="must be fit on the same data"):
        ensemble([a, fit(other.path, KEY_B, "logreg")])
    out = CliRunner().invoke(cli, ["ensemble", "nope", "--cache", str(tmp_path)])
    assert out.exit_code == 2 and "at least two models" in out.output
    b = fit(store.path, KEY_B, "logreg")
    a.save(tmp_path / "a"), b.save(tmp_path / "b"), b.save(tmp_path / "b2")
    (tmp_path / "b" / "model.skops").write_bytes(b"not a model")  # a corrupt member
    out = CliRunner().invoke(cli, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                   str(tmp_path / "e")])
    assert out.exit_code == 2 and "not a fakedet model file" in out.output and "model.skops" in out.output
    store.path.rename(tmp_path / "moved.h5")  # the members' cache is gone: refused, naming it
    out = CliRunner().invoke(cli, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b2"), "--out",
                                   str(tmp_path / "e")])
    assert out.exit_code == 2 and str(store.path) in out.output, out.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "models").exists()  # nothing written


def test_a_fused_model_file_grows_with_its_heads_not_with_the_column_count(tmp_path):
    """Each set's head (stacked) or preprocessing (concatenated) reads its block through a ColumnBlock (two
    numbers); a ColumnTransformer would save the index of every other column, megabytes for wide sets."""
    store = make_store(tmp_path / "w.h5", n=120, dim=3000)
    a = store.load(KEY_A)
    add_set(store, KEY_B, list(a.frame["id"]), a.X[:, ::-1].copy(), "e" * 32)
    params = {"C": 1.0}
    members = [fit(store.path, k, "logreg", params=params, domain_rate=None) for k in (KEY_A, KEY_B)]
    heads = sum((m.save(tmp_path / k) / "model.skops").stat().st_size for m, k in zip(members, "ab"))
    for model, name in ((ensemble(members, domain_rate=None), "e"),
                        (fit(store.path, [KEY_A, KEY_B], "logreg", params=params, fusion="stack", domain_rate=None), "s")):
        size = (model.save(tmp_path / name) / "model.skops").stat().st_size
        assert size < 2.5 * heads, (size, heads)  # the heads' arrays once, their structure (skops' schema, 10 kB
        # each) thrice: estimators, estimators_, named_estimators_; a ColumnTransformer would add about 1 kB per
        # column to each head, 30 times this
        np.testing.assert_allclose(Detector.load(tmp_path / name).p_fake(np.hstack([a.X, a.X[:, ::-1]])[:5]),
                                   model.p_fake(np.hstack([a.X, a.X[:, ::-1]])[:5]))
    concat = fit(store.path, [KEY_A, KEY_B], "logreg", params=params, fusion="concat", domain_rate=None)
    size = (concat.save(tmp_path / "c") / "model.skops").stat().st_size
    assert size < 1.25 * heads, (size, heads)  # one head twice as wide, two scalers: about the two heads' size
