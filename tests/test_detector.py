"""Detector: fit / evaluate / compare on synthetic caches, saving, safe loading, fingerprint refusal."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from fakedet.catalog import find_model, find_store, model_dir, model_name
from fakedet.detector import Detector, ModelMismatch, UntrustedModel
from fakedet.training import train_detector
from fakedet.workflow import compare, fit
from fakedet.scoring import backbone_for, evaluate, model_store
from fakedet.heads import HEADS, LOGREG_CS
from fakedet.metrics import choose_threshold
from fakedet.splits import assign_splits
from fakedet.store import Store, StoreError

IDENTITY = {"family": "effnet-lite", "weights": "w", "layers": "final", "precision": "fp32",
            "preprocess": {"policy": "resize", "size": 64, "interpolation": "bicubic"}}


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Tiny matrices: extra BLAS threads only contend (the mlp tests ran 10x slower on a busy machine)."""
    with threadpool_limits(1):
        yield


def make_store(path, n: int = 200, dim: int = 16, shift: float = 1.5, fingerprint: str = "f" * 32,
               key: str = "effnet-lite0.resize64-ffffffffffff", seed: int = 0, folders: bool = True,
               ids: list[str] | None = None):
    """A cache with one embedding set: labels alternate, fakes shifted by ``2 * shift`` on 4 dims.

    With ``folders`` the first 75% of rows are in train/, the rest in test/.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X[:, :4] += np.where(y[:, None] == 1, shift, -shift)
    ids = ids or [f"{seed:04d}{i:028x}" for i in range(n)]
    split = np.where(np.arange(n) < n * 3 // 4, "train", "test") if folders else np.full(n, "")
    frame = pd.DataFrame({
        "id": ids,
        "path": [f"{s}/{'fake' if c else 'real'}/{i:05d}.png".lstrip("/") for i, (s, c) in enumerate(zip(split, y))],
        "split": split, "label": y.astype(np.int8), "format": "PNG", "width": 32, "height": 32,
        "nbytes": 100, "error": "",
    })
    store = Store(path)
    with store.writer(source=str(path)) as writer:
        writer.write_images(frame)
        out = writer.open_set(key, {"spec": "effnet-lite0", "fingerprint": fingerprint, "identity": IDENTITY,
                                    "perturb": ""}, dim)
        out.append(np.array(ids), X)
    return store


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    make_store(root / "data.h5")
    return root


def test_fit_chooses_threshold_on_val_and_scores_test(cache):
    detector = fit(cache=cache, head="logreg", random_state=0)
    training = detector.training
    assert training["dataset"] == "data" and training["counts"]["test"] == {"real": 25, "fake": 25}
    assert training["counts"]["val"]["real"] + training["counts"]["val"]["fake"] == 30  # 20% of 150 train
    emb = Store(cache / "data.h5").load(detector.key)
    split = emb.frame["id"].map(detector.splits.set_index("id")["split"]).to_numpy()
    val = split == "val"
    assert detector.threshold == choose_threshold(emb.y[val], detector.p_fake(emb.X[val]))
    assert detector.metrics["test"]["n"] == 50 and detector.metrics["test"]["accuracy"] > 0.95
    assert detector.metrics["test"]["threshold"] == detector.threshold
    assert set(detector.predict(emb.X)) <= {0, 1}


def test_threshold_ignores_test_rows(cache):
    """Same train/val, different test data: identical threshold."""
    emb = Store(cache / "data.h5").load("effnet")
    split, _ = assign_splits(emb.frame)
    a = train_detector(emb, split, "logreg")
    emb.X[split == "test"] = np.random.default_rng(5).normal(size=((split == "test").sum(), emb.X.shape[1]))
    b = train_detector(emb, split, "logreg")
    assert a.threshold == b.threshold and a.metrics["val"] == b.metrics["val"]
    assert a.metrics["test"]["accuracy"] > 0.95 > b.metrics["test"]["accuracy"]


def test_save_writes_metrics_and_metadata_and_loads_back(cache, tmp_path):
    detector = fit(cache=cache, head="knn", params={"n_neighbors": 5}, cv=3)
    assert model_name(detector) == f"data-{detector.key}-knn"
    directory = detector.save(model_dir(model_name(detector), cache))
    assert directory == cache / "models" / f"data-{detector.key}-knn"
    metrics = json.loads((directory / "metrics.json").read_text())
    assert set(metrics) == {"val", "test", "cv"} and metrics["cv"]["folds"] == 3
    assert metrics["test"]["accuracy"] == detector.metrics["test"]["accuracy"]
    meta = json.loads((directory / "model.json").read_text())
    assert meta["fingerprint"] == "f" * 32 and meta["backbone"] == "effnet-lite0"
    assert meta["labels"]["0"] == "real" and meta["labels"]["1"] == "fake"
    assert meta["params"]["n_neighbors"] == 5 and "scikit-learn" in meta["versions"]
    loaded = Detector.load(find_model(directory.name, cache))
    X = Store(cache / "data.h5").load(detector.key).X
    assert np.array_equal(loaded.predict_proba(X), detector.predict_proba(X))
    assert loaded.threshold == detector.threshold and loaded.splits.equals(detector.splits)
    with pytest.raises(StoreError, match="no model nothing"):
        find_model("nothing", cache)


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_saves_and_loads_with_the_trusted_types(tmp_path, head):
    make_store(tmp_path / "d.h5", n=120)
    params = {"exact_max": 10} if head == "svm" else {}  # the Nystroem variant too
    detector = fit(tmp_path / "d.h5", head=head, params=params)
    loaded = Detector.load(detector.save(tmp_path / "model"))
    X = Store(tmp_path / "d.h5").load("effnet").X
    assert np.allclose(loaded.predict_proba(X), detector.predict_proba(X))


class Custom(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_load_refuses_types_outside_the_trusted_list(cache, tmp_path):
    detector = fit(cache=cache)
    directory = detector.save(tmp_path / "model")
    X, y = np.zeros((4, 16)), np.array([0, 1, 0, 1])
    sio.dump(Pipeline([("custom", Custom()), ("head", LogisticRegression())]).fit(X, y), directory / "model.skops")
    with pytest.raises(UntrustedModel, match="Custom"):
        Detector.load(directory)
    sio.dump(LogisticRegression().fit(X, y), directory / "model.skops")
    with pytest.raises(UntrustedModel, match="not a Pipeline"):
        Detector.load(directory)


def test_a_model_re_creates_its_backbone_with_layers_resize_and_scales():
    from fakedet.backbones import create_backbone

    backbone = create_backbone("effnet-lite0", layers="blocks", resize="48", scales="1,0.5", precision="fp32",
                               device="cpu")
    detector = Detector(pipeline=None, head="logreg", params={}, preprocess="standard", key=backbone.key,
                        fingerprint=backbone.fingerprint, backbone=backbone.spec, identity=backbone.identity)
    assert detector.extract_command().endswith(
        "--layers blocks --resize resize:48 --interpolation bicubic --scales 1,0.5 --precision fp32")
    assert backbone_for(detector, device="cpu").fingerprint == backbone.fingerprint
    # at 24 px the last stages are 1x1 maps: their spread is 0, not NaN
    assert np.isfinite(backbone.embed_images([Image.new("RGB", (32, 32), (90, 30, 200))])).all()


def test_embeddings_of_another_fingerprint_are_refused(cache, tmp_path):
    detector = fit(cache=cache)
    other = make_store(tmp_path / "other.h5", fingerprint="0" * 32, key="effnet-lite0-000000000000")
    with pytest.raises(ModelMismatch, match="fakedet extract DATA --backbone effnet-lite0 --layers final "
                                            "--resize resize:64 --interpolation bicubic --precision fp32"):
        detector.check(other.load("effnet"))
    with pytest.raises(ModelMismatch, match="holds no embeddings of this model's backbone"):
        evaluate(detector, tmp_path / "other.h5")
    with pytest.raises(ModelMismatch, match="was not made by this model's backbone"):
        evaluate(detector, tmp_path / "other.h5", key="effnet")


def test_evaluate_own_test_split_and_other_dataset_without_leaks(cache, tmp_path):
    detector = fit(cache=cache)
    own = evaluate(detector)
    assert (own.name, len(own.predictions)) == ("data/test", 50)
    expected = detector.metrics["test"]
    assert own.metrics["confusion"] == expected["confusion"]
    assert {k: v for k, v in own.metrics.items() if k != "confusion"} == pytest.approx(
        {k: v for k, v in expected.items() if k != "confusion"})
    assert list(own.predictions.columns) == ["id", "path", "split", "label", "p_fake", "pred",
                                             "domain_score", "out_of_domain"]
    val = evaluate(detector, cache / "data.h5", split="val")
    assert val.metrics["n"] == detector.metrics["val"]["n"]
    # another dataset sharing 10 training and 10 test images with the first
    first = Store(cache / "data.h5").load("effnet").frame
    train_ids = list(first["id"][first["id"].isin(detector.splits.query("split == 'train'")["id"])][:10])
    test_ids = list(first["id"][first["split"] == "test"][:10])
    ids = train_ids + test_ids + [f"9{i:031x}" for i in range(60)]
    make_store(cache / "other.h5", n=80, seed=3, folders=False, ids=ids)
    other = evaluate(detector, "other", cache=cache)
    assert (other.name, other.excluded, len(other.predictions)) == ("other/all", 10, 70)
    assert not other.predictions["id"].isin(train_ids).any() and other.metrics["accuracy"] > 0.9
    with pytest.raises(ValueError, match="split"):
        evaluate(detector, split="holdout")


def test_find_store_by_name_file_or_only_cache(cache):
    assert find_store(cache=cache).path == cache / "data.h5"
    assert find_store("data", cache).path == cache / "data.h5"
    assert find_store(cache / "data.h5").path == cache / "data.h5"
    make_store(cache / "second.h5")
    with pytest.raises(StoreError, match="(?s)several caches.*data.h5.*second.h5"):
        find_store(cache=cache)
    with pytest.raises(StoreError, match="neither a dataset"):
        find_store("missing", cache)


def test_compare_ranks_heads_and_sets_best_first(cache):
    with Store(cache / "data.h5").writer() as writer:  # a second, uninformative set on the same images
        ids = Store(cache / "data.h5").embedded_ids("effnet-lite0.resize64-ffffffffffff")
        out = writer.open_set("noise-111111111111", {"spec": "noise", "fingerprint": "1" * 32,
                                                      "identity": IDENTITY, "perturb": ""}, 8)
        out.append(ids, np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32))
    table = compare(cache / "data.h5", heads=["logreg", "centroid"])
    assert len(table) == 4 and set(table["head"]) == {"logreg", "centroid"}
    assert list(table["backbone"][:2]) == ["effnet-lite0.resize64-ffffffffffff"] * 2
    assert (table["balanced_accuracy"].diff().dropna() <= 0).all() and (table["scored"] == "test").all()
    columns = {"accuracy", "roc_auc", "average_precision", "recall_real", "recall_fake", "fit_s", "predict_s"}
    assert columns <= set(table)
    only = compare(cache / "data.h5", backbones=["noise"], heads=["knn"])
    assert list(only["backbone"]) == ["noise-111111111111"] and 0.3 < only["accuracy"][0] < 0.7
    with pytest.raises(ValueError, match="unknown head"):
        compare(cache / "data.h5", heads=["forest"])


def test_detector_is_a_torch_free_estimator(cache):
    """predict_proba is (N, 2) in the order of classes_, p_fake its fake column; the heads layer
    (detector, catalog, workflow, heads, config, ensemble) imports neither torch nor the backbones."""
    detector = fit(cache=cache, head="logreg", params={"C": 1.0})
    X = Store(cache / "data.h5").load(detector.key).X
    proba = detector.predict_proba(X)
    assert proba.shape == (len(X), 2) and list(detector.classes_) == [0, 1]
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(detector.p_fake(X), proba[:, 1])
    code = ("import sys, fakedet.detector, fakedet.catalog, fakedet.workflow, fakedet.heads, fakedet.backbone_config,"
            " fakedet.ensemble;"
            "print(sorted(m for m in ('torch', 'fakedet.backbones') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_logreg_tunes_its_regularisation_by_cross_validation(cache):
    tuned = fit(cache=cache, head="logreg")
    assert tuned.params["C"] == "auto" and tuned.training["tuned"]["C"] in LOGREG_CS
    fixed = fit(cache=cache, head="logreg", params={"C": 0.5})
    assert "tuned" not in fixed.training and fixed.pipeline[-1].C == 0.5


def test_model_name_joins_datasets_and_marks_augmented_fits():
    one = SimpleNamespace(key="k1", head="mlp", training={"dataset": "a"})
    both = SimpleNamespace(key="k1", head="mlp", training={"dataset": "a", "sources": [{"dataset": "a"}, {"dataset": "b"}],
                                                             "augment": {"copies": 1}})
    assert (model_name(one), model_name(both)) == ("a-k1-mlp", "a+b-k1-mlp-aug")


def test_model_store_is_the_named_data_or_the_models_own(cache):
    detector = fit(cache=cache, head="logreg", params={"C": 1.0})
    assert model_store(detector).path == (cache / "data.h5").resolve()
    assert model_store(detector, "data", cache).path == cache / "data.h5"
    with pytest.raises(StoreError, match="neither a dataset"):
        model_store(detector, "elsewhere", cache)
    detector.training.pop("store")
    with pytest.raises(ValueError, match="pass --data"):
        model_store(detector)


def test_a_model_whose_scaler_stretches_float_noise_warns_on_load(tmp_path):
    """Models fit before NoiseFloorScaler stretched dead channels to unit variance: loading says to refit."""
    import warnings

    from sklearn.preprocessing import StandardScaler

    root = tmp_path / "cache"
    store = make_store(root / "data.h5")
    X = store.load(store.embedding_sets()["key"][0]).X.copy()
    X[:, -1] = 0.16 + 1e-8 * np.random.default_rng(0).normal(size=len(X))  # a dead channel
    detector = fit(cache=root, head="logreg", params={"C": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fit now: nothing to say
        Detector.load(detector.save(tmp_path / "new"))
    old = Pipeline([("standard", StandardScaler().fit(X)), *detector.pipeline.steps[1:]])
    stale = Detector(**{**detector.__dict__, "pipeline": old}).save(tmp_path / "old")
    with pytest.warns(UserWarning, match=r"stretches 1 near-constant column\(s\).*fit it again"):
        Detector.load(stale)
