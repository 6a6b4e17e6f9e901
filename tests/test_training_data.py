"""Fits beyond one training set: several datasets in one model, augmented copies through the cache,
the out-of-domain flag in evaluate / predict, and bad input refused before any work."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import encode_image, layout_files, make_image, write_tree
from test_detector import make_store

from fakedet.cli import cli
from fakedet.detector import Detector, ModelMismatch
from fakedet.extract import extract
from fakedet.perturb import augmentations
from fakedet.store import Store
from fakedet.training_data import gather, source_weights
from fakedet.workflow import fit
from fakedet.scoring import evaluate, predict

FAST = {"resize": "64", "precision": "fp32", "device": "cpu", "workers": 0, "progress": False}
KEY = "effnet-lite0.resize64-ffffffffffff"


def test_source_weights_make_sources_equal():
    sources = np.array(["a"] * 90 + ["b"] * 10)
    w = source_weights(sources)
    assert w.mean() == pytest.approx(1.0)
    assert w[sources == "a"].sum() == pytest.approx(w[sources == "b"].sum())


def test_two_datasets_in_one_model_split_per_dataset_and_grouped_by_content(tmp_path):
    a = make_store(tmp_path / "a.h5", n=200, seed=0)
    shared = [f"{0:04d}{i:028x}" for i in range(150, 170)]  # 20 images of a (its test folder) appear in b too
    b = make_store(tmp_path / "b.h5", n=120, seed=1, folders=False,
                   ids=shared + [f"{1:04d}{i:028x}" for i in range(100)])
    data = gather([a.path, b.path], KEY)
    assert data.sources == ["a", "b"] and len(data.emb.X) == 320
    frame = data.emb.frame.assign(split=data.split)
    assert set(frame.loc[frame["source"] == "a", "split"]) == {"train", "val", "test"}  # folders + carved val
    b_own = (frame["source"] == "b") & ~frame["id"].isin(shared)
    assert set(frame.loc[b_own, "split"]) == {"train", "val"}                      # b: seeded carve
    by_id = frame.groupby("id")["split"].nunique()
    assert (by_id == 1).all()                       # same content, same split, across datasets
    assert set(frame.loc[frame["id"].isin(shared), "split"]) == {"test"}            # the first dataset's split
    detector = fit([a.path, b.path], KEY, "logreg", balance="sources", domain_rate=0.99)
    assert [s["dataset"] for s in detector.training["sources"]] == ["a", "b"]
    assert {"b/val", "a/test", "val", "test"} <= set(detector.metrics)
    assert detector.training["balance"] == "sources"


def test_datasets_with_other_settings_are_refused_with_the_command(tmp_path):
    a = make_store(tmp_path / "a.h5", n=60)
    b = make_store(tmp_path / "b.h5", n=60, fingerprint="e" * 32, key="effnet-lite0.resize64-eeeeeeeeeeee")
    with pytest.raises(ModelMismatch, match="fakedet extract .* --backbone effnet-lite0") as refused:
        fit([a.path, b.path], KEY)
    assert f"--cache {b.path} " in str(refused.value)   # the command embeds into the store that was refused
    with pytest.raises(ValueError, match="named twice"):
        fit([a.path, a.path], KEY)
    with pytest.raises(ValueError, match="sample weights"):
        fit([a.path, make_store(tmp_path / "c.h5", n=60).path], KEY, "knn", balance="sources")


def test_out_of_domain_flag_separates_a_shifted_dataset(tmp_path):
    own = make_store(tmp_path / "own.h5", n=400, dim=32, seed=0)
    other = make_store(tmp_path / "other.h5", n=100, dim=32, seed=5, folders=False)
    emb = Store(other.path).load(KEY)
    detector = fit(own.path, KEY, "logreg", domain_rate=0.99)
    assert detector.metrics["test"]["out_of_domain"] <= 0.05
    far = detector.domain.flag(emb.X + 6.0)  # the other dataset moved away on every dimension
    assert far.mean() >= 0.95
    saved = Detector.load(detector.save(tmp_path / "m"))
    np.testing.assert_allclose(saved.domain_score(emb.X), detector.domain_score(emb.X))
    assert saved.domain.threshold == detector.domain.threshold
    result = evaluate(saved, own.path, split="test")
    assert {"domain_score", "out_of_domain"} <= set(result.predictions.columns)
    assert result.metrics["out_of_domain"] == pytest.approx(detector.metrics["test"]["out_of_domain"])
    assert fit(own.path, KEY, "logreg", domain_rate=None).domain is None


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    data = write_tree(root / "src", layout_files({"train/real": 12, "train/fake": 12, "test/real": 6, "test/fake": 6}))
    faces = write_tree(root / "faces", layout_files({"REAL": 10, "FAKE": 10}, size=96))
    cache = root / "cache"
    key = extract(data, "effnet-lite0", cache=cache, **FAST).key
    extract(faces, "effnet-lite0", cache=cache, **FAST)
    return root, data, faces, cache, key


def test_augmented_copies_are_cached_train_only_and_reused(images):
    root, data, _, cache, key = images
    specs = ["jpeg:q=30-95", "blur:sigma=0-2"]
    detector = fit(data, key, "logreg", cache=cache, augment=specs, copies=2, device="cpu", workers=0)
    augment = detector.training["augment"]
    n_train = sum(detector.training["counts"]["train"].values())
    assert augment["copies"] == 2 and augment["rows"] == 2 * n_train == 38
    store = Store(cache / "src.h5")
    sets = store.embedding_sets().set_index("key")
    names = [f"{key}+{a.name}" for a in augmentations(specs, 2)]
    assert augment["sets"] == names and all(sets.loc[n, "count"] == 19 for n in names)  # train ids only
    train_ids = set(detector.splits.loc[detector.splits["split"] == "train", "id"])
    assert set(store.load(names[0]).frame["id"]) == train_ids                           # never val or test
    clean = store.load(key)
    first = store.load(names[0])
    same = clean.frame.set_index("id").index.get_indexer(first.frame["id"])
    assert np.abs(clean.X[same] - first.X).max() > 1e-3                                 # really perturbed
    before = first.X.copy()
    again = fit(data, key, "logreg", cache=cache, augment=specs, copies=2, device="cpu", workers=0)
    np.testing.assert_array_equal(store.load(names[0]).X, before)                       # reused, not redone
    assert again.training["augment"] == augment and augment["pick"] == "all"
    one = fit(data, key, "logreg", cache=cache, augment=specs, copies=2, augment_pick="one", device="cpu", workers=0)
    assert one.training["augment"]["pick"] == "one" and one.training["augment"]["rows"] == 38
    assert one.training["augment"]["sets"] == [f"{key}+{a.name}" for a in augmentations(specs, 2, pick="one")]


def test_cli_fit_two_datasets_evaluate_per_source_and_predict_columns(images, tmp_path):
    root, data, faces, cache, key = images
    out = CliRunner().invoke(cli, ["fit", "--data", str(data), "--data", str(faces), "-b", key, "--balance",
                                   "sources", "--cache", str(cache), "--out", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    assert "logreg on src, faces" in out.output and "out-of-domain flag" in out.output
    table = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "m"), "--cache", str(cache), "-q"])
    assert table.exit_code == 0, table.output
    assert "| src/test |" in table.output and "| faces/val |" in table.output and "| pooled/held-out |" in table.output
    image = tmp_path / "one.png"
    make_image("noise", 64, 3).save(image)
    rows = predict(Detector.load(tmp_path / "m"), [image], cache=cache, device="cpu", workers=0)
    assert list(rows.columns) == ["path", "p_fake", "label", "domain_score", "out_of_domain", "error"]
    assert rows.loc[0, "domain_score"] > 0


def test_cli_fit_one_kind_per_copy(images, tmp_path):
    root, data, _, cache, key = images
    out = CliRunner().invoke(cli, ["fit", "--data", str(data), "-b", key, "--cache", str(cache), "--augment",
                                   "jpeg:q=30-95", "--augment", "resize:0.5-1", "--augment-pick", "one", "--copies", "2",
                                   "--out", str(tmp_path / "m"), "-q"])
    assert out.exit_code == 0, out.output
    assert "augmented: 2 copies of the training images (jpeg-q30-95, resize-scale0.5-1; one kind per copy)" in out.output
    assert Detector.load(tmp_path / "m").training["augment"]["pick"] == "one"


@pytest.mark.parametrize("args, message", [
    (["--augment", "jpeg:q=0-50"], "jpeg quality"),
    (["--augment", "gamma:1-2"], "use jpeg:q=30-95"),
    (["--augment", "blur:0-1", "--copies", "0"], "copies must be at least 1"),
    (["--data", "no-such-dataset"], "neither a dataset"),
    (["--balance", "classes"], "balance"),
    (["--augment", "blur:0-1", "--augment-pick", "some"], "'some' is not one of"),
])
def test_cli_fit_refuses_bad_input_before_writing(images, args, message):
    root, data, _, cache, key = images
    before = Store(cache / "src.h5").embedding_sets()["key"].tolist()
    data_args = [] if "--data" in args else ["--data", str(data)]
    out = CliRunner().invoke(cli, ["fit", *data_args, "-b", key, "--cache", str(cache), *args])
    assert out.exit_code == 2, out.output
    assert message in out.output
    assert Store(cache / "src.h5").embedding_sets()["key"].tolist() == before


def test_unlabelled_dataset_is_refused(images, tmp_path):
    root, data, _, cache, key = images
    plain = write_tree(tmp_path / "plain", {f"img{i}.png": encode_image(make_image("smooth", 40, i), "PNG")
                                            for i in range(6)})
    extract(plain, "effnet-lite0", cache=cache, **FAST)
    out = CliRunner().invoke(cli, ["fit", "--data", str(data), "--data", str(plain), "-b", key,
                                   "--cache", str(cache)])
    assert out.exit_code == 2 and "no labelled images" in out.output

