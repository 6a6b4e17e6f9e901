"""Soft-voting ensembles of saved models: the mean of the members, the same model as a stacked fused fit,
the model file and its use by evaluate, the CLI, and refusals of members that cannot be averaged."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from test_fusion import KEY_A, KEY_B, two_sets
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
        assert model.metrics[s]["out_of_domain"] <= 0.1
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


def test_ensemble_refuses_members_it_cannot_average(tmp_path):
    store, _ = two_sets(tmp_path / "d.h5", n=120)
    a = fit(store.path, KEY_A, "logreg")
    with pytest.raises(ValueError, match="at least two models"):
        ensemble([a])
    with pytest.raises(ValueError, match="another split than model 1: fit every member with the same"):
        ensemble([a, fit(store.path, KEY_B, "logreg", random_state=1)])
    with pytest.raises(ValueError, match="read the same embedding set"):
        ensemble([a, fit(store.path, KEY_A, "knn")])
    with pytest.raises(ValueError, match="is a fused model"):
        ensemble([a, fit(store.path, [KEY_A, KEY_B], "logreg")])
    other, _ = two_sets(tmp_path / "o.h5", n=120)
    with pytest.raises(ValueError, match="must be fit on the same data"):
        ensemble([a, fit(other.path, KEY_B, "logreg")])
    out = CliRunner().invoke(cli, ["ensemble", "nope", "--cache", str(tmp_path)])
    assert out.exit_code == 2 and "at least two models" in out.output
    assert not (tmp_path / "models").exists()  # nothing written
