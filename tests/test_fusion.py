"""Fusion of embedding sets: rows aligned by content id, fused fits (concat / stack) with several datasets,
the model file, evaluate / predict extracting every missing set, evaluate --perturb perturbing every set,
refusals, and compare's fused candidates."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import layout_files, make_image, write_tree
from test_detector import IDENTITY, make_store
from test_training_data import FAST, images  # noqa: F401 - images is a fixture
from threadpoolctl import threadpool_limits

from fakedet import fusion
from fakedet.backbone_config import BackboneError
from fakedet.cli import cli
from fakedet.detector import Detector, ModelMismatch
from fakedet.extract import extract
from fakedet.fusion import fuse, load_sets, resolve_sets
from fakedet.perturb import augmentations
from fakedet.robustness import assess
from fakedet.scoring import backbone_for, evaluate, model_store, predict
from fakedet.store import Store, StoreError
from fakedet.training_data import gather
from fakedet.workflow import compare, fit

KEY_A, KEY_B = "effnet-lite0.resize64-ffffffffffff", "effnet-lite0.blocks-eeeeeeeeeeee"


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def add_set(store: Store, key: str, ids: list[str], X: np.ndarray, fingerprint: str) -> None:
    """Write set ``key`` with rows ``X`` for ``ids`` (in that order) into an existing store."""
    identity = {**IDENTITY, "layers": "blocks"}
    with store.writer() as writer:
        writer.open_set(key, {"spec": "effnet-lite0", "fingerprint": fingerprint, "identity": identity,
                              "perturb": ""}, X.shape[1]).append(np.array(ids), X)


def two_sets(path, n: int = 200, seed: int = 0, drop: int = 0) -> tuple[Store, np.ndarray]:
    """A store with set A (``make_store``) and set B (8 columns, written in reverse row order, without A's
    first ``drop`` rows); returns the store and B's rows in A's row order (NaN where B has none)."""
    store = make_store(path, n=n, seed=seed)
    a = store.load(KEY_A)
    rng = np.random.default_rng(seed + 100)
    B = rng.normal(size=(n, 8)).astype(np.float32) + a.y[:, None]
    order = np.arange(n)[::-1][: n - drop]
    add_set(store, KEY_B, list(a.frame["id"].to_numpy()[order]), B[order], "e" * 32)
    B[:drop] = np.nan
    return store, B


def test_fuse_aligns_sets_by_content_id_whatever_their_row_order(tmp_path, monkeypatch):
    store, B = two_sets(tmp_path / "d.h5", n=60, drop=7)
    monkeypatch.setattr(fusion, "FUSE_CHUNK_ROWS", 7)  # several chunks and a partial last one
    a = store.load(KEY_A)
    fused = fuse([a, store.load(KEY_B)])
    kept = ~np.isnan(B[:, 0])
    assert list(fused.frame["id"]) == list(a.frame["id"][kept])
    assert fused.X.dtype == a.X.dtype
    np.testing.assert_array_equal(fused.X, np.concatenate([a.X[kept], B[kept]], axis=1))
    assert fused.key == f"{KEY_A}+{KEY_B}" and fused.fingerprint == "f" * 32 + "+" + "e" * 32
    assert fused.attrs["dropped"] == {KEY_A: 7, KEY_B: 0}
    assert [m["dim"] for m in fused.attrs["sets"]] == [16, 8]
    # names: each part a key, prefix or spec; a whole key is one set; A+B is two
    assert resolve_sets(store, [f"{KEY_A}+effnet-lite0.blocks"]) == [KEY_A, KEY_B]
    assert resolve_sets(store, [KEY_A, KEY_B, KEY_A]) == [KEY_A, KEY_B]
    with pytest.raises(ValueError, match="A\\+B"):
        resolve_sets(store, [f"{KEY_A}+"])
    with pytest.raises(StoreError, match="no embedding set 'nope'"):
        resolve_sets(store, [f"{KEY_A}+nope"])


def test_load_sets_reads_one_set_at_a_time_into_what_fuse_makes(tmp_path, monkeypatch):
    store, _ = two_sets(tmp_path / "d.h5", n=60, drop=5)
    loaded, load = [], store.load
    monkeypatch.setattr(store, "load", lambda key, **kw: loaded.append(key) or load(key, **kw))
    for keys in ([KEY_A, KEY_B], [KEY_B, KEY_A]):  # B's rows are stored in reverse: the first set's order wins
        expected = fuse([load(k) for k in keys])
        fused = load_sets(store, keys)
        assert fused.frame.equals(expected.frame) and fused.key == expected.key and fused.attrs == expected.attrs
        np.testing.assert_array_equal(fused.X, expected.X)
    assert loaded == [KEY_A, KEY_B, KEY_B, KEY_A]


def test_load_sets_of_some_ids_is_the_whole_load_restricted_to_them(tmp_path, monkeypatch):
    store, _ = two_sets(tmp_path / "d.h5", n=60, drop=5)
    monkeypatch.setattr("fakedet.store.READ_BLOCK_BYTES", 7 * 16 * 4)  # 7 rows of A per block: some skipped
    whole = load_sets(store, [KEY_B, KEY_A])
    wanted = whole.frame["id"].iloc[[0, 1, 2, 30, 54]].tolist() + ["x" * 32]  # an id no set holds is ignored
    for keys in ([KEY_B, KEY_A], KEY_A, KEY_B):
        whole, part = load_sets(store, keys), load_sets(store, keys, ids=wanted)
        kept = whole.frame["id"].isin(wanted).to_numpy()
        assert part.frame.equals(whole.frame[kept].reset_index(drop=True)) and part.key == whole.key
        np.testing.assert_array_equal(part.X, whole.X[kept])
    assert load_sets(store, [KEY_A, KEY_B], ids=wanted).attrs["dropped"] == {KEY_A: 0, KEY_B: 0}
    assert load_sets(store, KEY_A, ids=[]).X.shape == (0, 16)


def test_evaluate_reads_only_the_rows_of_the_split_it_scores(tmp_path, monkeypatch):
    store, _ = two_sets(tmp_path / "d.h5", n=200)
    detector = fit(store.path, [KEY_A, KEY_B], "logreg", fusion="stack")
    read, load = [], Store.load
    monkeypatch.setattr(Store, "load", lambda self, key, **kw: read.append(len(load(self, key, **kw).X))
                        or load(self, key, **kw))
    for split in ("val", "test"):
        read.clear()
        result = evaluate(detector, split=split)
        assert result.metrics["confusion"] == detector.metrics[split]["confusion"]
        assert read == [detector.metrics[split]["n"]] * 2  # each set: that split's rows only
    read.clear()
    assert len(evaluate(detector, split="all").predictions) == 200 and read == [200, 200]


def test_fused_fit_reads_both_sets_side_by_side_and_round_trips(tmp_path):
    store, B = two_sets(tmp_path / "d.h5", n=200, drop=10)
    with pytest.raises(StoreError, match="incomplete"):  # B lacks 10 ids of the table: the store's rule holds
        fit(store.path, [KEY_A, KEY_B])
    data = gather([store.path], [KEY_B, KEY_A], allow_partial=True)  # the order of -b is the column order
    a = store.load(KEY_A)
    rows = pd.Index(a.frame["id"]).get_indexer(data.emb.frame["id"])  # B's row order, B's ids
    assert sorted(rows) == list(range(10, 200))
    np.testing.assert_array_equal(data.emb.X, np.concatenate([B[rows], a.X[rows]], axis=1))
    detector = fit(store.path, f"{KEY_A}+{KEY_B}", "logreg", cv=3, allow_partial=True)
    assert detector.fused and [m.key for m in detector.members] == [KEY_A, KEY_B]
    assert detector.training["n_features"] == 24 and detector.training["fusion"]["mode"] == "concat"
    assert detector.training["fusion"]["dropped"] == {KEY_A: 10}
    assert list(detector.pipeline.named_steps) == ["blocks", "head"]  # each block standardised on its own
    scalers = [block["standard"] for _, block in detector.pipeline["blocks"].transformer_list]
    assert [s.n_features_in_ for s in scalers] == [16, 8]
    assert detector.metrics["test"]["accuracy"] > 0.9 and detector.domain is not None and "cv" in detector.metrics
    saved = Detector.load(detector.save(tmp_path / "m"))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["config"] is None and [s["fingerprint"] for s in meta["sets"]] == ["f" * 32, "e" * 32]
    assert saved.members == detector.members and saved.key == detector.key
    emb = load_sets(store, saved.key)
    np.testing.assert_allclose(saved.p_fake(emb.X), detector.p_fake(emb.X))
    result = evaluate(saved, store.path, split="test")
    assert result.metrics["accuracy"] == detector.metrics["test"]["accuracy"] and result.key == detector.key
    single = fit(store.path, KEY_A, allow_partial=True)  # one set: the old model.json, no "sets"
    assert "sets" not in json.loads((single.save(tmp_path / "s") / "model.json").read_text())
    assert not Detector.load(tmp_path / "s").fused


def test_stack_is_the_mean_of_the_per_set_heads(tmp_path):
    store, _ = two_sets(tmp_path / "d.h5", n=200)
    detector = fit(store.path, [KEY_A, KEY_B], "logreg", fusion="stack")
    emb = load_sets(store, detector.key)
    voters = detector.pipeline["fusion"].estimators_
    mean = np.mean([v.predict_proba(emb.X)[:, 1] for v in voters], axis=0)
    np.testing.assert_allclose(detector.p_fake(emb.X), mean)
    assert [v[-1].n_features_in_ for v in voters] == [16, 8]
    saved = Detector.load(detector.save(tmp_path / "m"))
    np.testing.assert_allclose(saved.p_fake(emb.X), mean)
    out = CliRunner().invoke(cli, ["fit", "-d", str(store.path), "-b", f"{KEY_A}+{KEY_B}", "--fusion", "stack",
                                   "--cache", str(tmp_path), "-q"])
    assert out.exit_code == 0, out.output
    assert "fused (stack)" in out.output and (tmp_path / "models" / f"d-{KEY_A}+{KEY_B}-logreg-stack").is_dir()
    with pytest.raises(ValueError, match="fusion must be"):
        fit(store.path, [KEY_A, KEY_B], fusion="vote")


def test_fusion_composes_with_several_datasets(tmp_path):
    a, _ = two_sets(tmp_path / "a.h5", n=120, seed=0)
    b, _ = two_sets(tmp_path / "b.h5", n=80, seed=1)
    detector = fit([a.path, b.path], [KEY_A, KEY_B], balance="sources")
    assert detector.training["n_features"] == 24 and {"b/val", "a/test"} <= set(detector.metrics)
    only_a = make_store(tmp_path / "c.h5", n=60, seed=2)
    with pytest.raises(ModelMismatch, match="no embeddings with the settings of effnet-lite0.blocks.*\n  "
                                            "fakedet extract .* --layers blocks"):
        fit([a.path, only_a.path], [KEY_A, KEY_B])
    with pytest.raises(ValueError, match="--fusion concat"):
        fit([a.path, b.path], [KEY_A, KEY_B], balance="sources", fusion="stack")


def test_compare_takes_fused_candidates(tmp_path):
    store, _ = two_sets(tmp_path / "d.h5", n=200)
    table = compare(store.path, [KEY_A, KEY_B, f"{KEY_A}+{KEY_B}"], ["logreg", "knn"])
    assert len(table) == 6 and set(table["backbone"]) == {KEY_A, KEY_B, f"{KEY_A}+{KEY_B}"}
    out = CliRunner().invoke(cli, ["compare", "-d", str(store.path), "-b", f"{KEY_A}+{KEY_B}", "--head", "logreg",
                                   "--fusion", "stack", "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    written = pd.read_csv(tmp_path / "r" / "compare-d.csv")
    assert list(written["backbone"]) == [f"{KEY_A}+{KEY_B}"]


@pytest.fixture(scope="module")
def sets(images):
    """test_training_data's images with a second set: effnet-lite0 every block at 32 px (the first: final, 64 px)."""
    root, data, _, cache, first = images
    second = extract(data, "effnet-lite0", cache=cache, **{**FAST, "resize": "32", "layers": "blocks"}).key
    return root, data, cache, first, second


def test_cli_fit_fused_then_evaluate_and_predict_extract_every_set(sets, tmp_path):
    root, data, cache, first, second = sets
    other = write_tree(tmp_path / "other", layout_files({"REAL": 6, "FAKE": 6}, size=48))
    out = CliRunner().invoke(cli, ["fit", "-d", str(data), "-b", first, "-b", second, "--cache", str(cache),
                                   "--out", str(tmp_path / "m"), "-q"])
    assert out.exit_code == 0, out.output
    assert f"fused (concat): {first} + {second}" in out.output
    detector = Detector.load(tmp_path / "m")
    fingerprints = [m.fingerprint for m in detector.members]
    result = evaluate(detector, other, cache=cache, device="cpu", workers=0)  # a new dataset: both sets extracted
    sets = Store(cache / "other.h5").embedding_sets()
    assert sorted(sets["fingerprint"]) == sorted(fingerprints) and set(sets["count"]) == {12}
    assert result.metrics["n"] == 12 and result.key == "+".join(sets.set_index("fingerprint").loc[fingerprints, "key"])
    image = tmp_path / "one.png"
    make_image("checker", 40, 9).save(image)
    rows = predict(detector, [other, image, tmp_path / "missing.png"], cache=cache, device="cpu", workers=0)
    assert len(rows) == 14 and rows["p_fake"].notna().sum() == 13
    assert rows.loc[rows["path"] == str(image), "error"].item() == ""
    folder = rows[rows["path"].str.startswith(str(other))].set_index("path")["p_fake"]
    by_path = result.predictions.assign(path=str(other) + "/" + result.predictions["path"]).set_index("path")
    np.testing.assert_allclose(folder.loc[by_path.index], by_path["p_fake"])  # the same fused rows


def test_evaluate_perturb_on_a_fused_model_perturbs_every_set(sets, tmp_path):
    root, data, cache, first, second = sets
    detector = fit(data, [first, second], cache=cache)
    table = assess(detector.save(tmp_path / "m"), perturb=["blur:sigma=2"], split="val", cache=cache, device="cpu",
                   workers=0).table
    clean = evaluate(detector, split="val", cache=cache)
    keys = [f"{first}+blur-sigma2", f"{second}+blur-sigma2"]
    counts = model_store(detector, cache=cache).embedding_sets().set_index("key")["count"]
    assert counts[keys].tolist() == [clean.metrics["n"]] * 2  # both sets perturbed, the evaluated images only
    blurred = evaluate(detector, split="val", key=keys, cache=cache)
    assert blurred.key == "+".join(keys) and not np.allclose(blurred.predictions["p_fake"], clean.predictions["p_fake"])
    assert table["perturbation"].tolist() == ["none", "blur-sigma2"]
    assert table["accuracy"].tolist() == [clean.metrics["accuracy"], blurred.metrics["accuracy"]]


def test_augmented_copies_of_a_fused_fit_are_made_by_every_set_and_fused(sets):
    root, data, cache, first, second = sets
    specs = ["blur:sigma=0-2", "jpeg:q=30-95"]
    detector = fit(data, [first, second], cache=cache, augment=specs, copies=2, fusion="stack", device="cpu",
                   workers=0)
    augment, names = detector.training["augment"], [a.name for a in augmentations(specs, 2)]
    assert augment["sets"] == [f"{first}+{n}+{second}+{n}" for n in names]   # each copy fused from both sets
    n_train = sum(detector.training["counts"]["train"].values())
    assert augment["rows"] == 2 * n_train
    store = model_store(detector, cache=cache)
    train_ids = set(detector.splits.loc[detector.splits["split"] == "train", "id"])
    for key in (f"{first}+{names[0]}", f"{second}+{names[0]}"):                 # made by each set's backbone
        assert set(store.load(key).frame["id"]) == train_ids
    fused = load_sets(store, [f"{first}+{names[0]}", f"{second}+{names[0]}"])
    clean = load_sets(store, [first, second], ids=fused.frame["id"])
    assert fused.X.shape == clean.X.shape and np.abs(fused.X - clean.X).max() > 1e-3
    plain = fit(data, [first, second], cache=cache, fusion="stack")
    assert detector.metrics["val"]["n"] == plain.metrics["val"]["n"]             # val and test stay clean


def test_fused_model_refusals_name_the_missing_extract(sets, tmp_path):
    root, data, cache, first, second = sets
    other = write_tree(tmp_path / "fresh", layout_files({"REAL": 2, "FAKE": 2}))
    detector = fit(data, [first, second], cache=cache)
    only_first = tmp_path / "c" / "x.h5"
    only_first.parent.mkdir()
    extract(other, "effnet-lite0", cache=only_first.parent, **FAST)
    (only_first.parent / "fresh.h5").rename(only_first)
    with pytest.raises(ModelMismatch, match=r"effnet-lite0 \(set effnet-lite0.blocks.resize32-\w+\); extract them with:\n  "
                                            r"fakedet extract \S+ --backbone effnet-lite0 --layers blocks --resize resize:32") as err:
        evaluate(detector, only_first)
    assert "resize:64" not in str(err.value)  # only the set that is missing
    broken = Detector(**{**detector.__dict__, "sets": [detector.sets[0], {
        **detector.sets[1], "config": {**detector.sets[1]["config"], "checkpoint": str(tmp_path / "gone.pt")}}]})
    with pytest.raises(ModelMismatch, match="cannot be made here .*\n  fakedet extract .*--checkpoint .*gone.pt"):
        evaluate(broken, other, cache=cache, device="cpu", workers=0)
    with pytest.raises(BackboneError, match="gone.pt"):  # --perturb: every backbone made before any set is written
        assess(broken.save(tmp_path / "broken"), perturb=["jpeg:q=75"], split="val", cache=cache, device="cpu")
    assert not [k for k in model_store(broken, cache=cache).embedding_sets()["key"] if k.endswith("+jpeg-q75")]
    assert [b.fingerprint for b in backbone_for(detector, device="cpu").backbones] == [m.fingerprint for m in
                                                                                      detector.members]
    page = tmp_path / "report.html"  # the page projects the first set and scores the model on both
    report = CliRunner().invoke(cli, ["report", "-m", str(detector.save(tmp_path / "m")), "--cache", str(cache),
                                      "--method", "pca", "--out", str(page)])
    assert report.exit_code == 0, report.output
    text = page.read_text()
    assert f"set <code>{first}</code>" in text and "concat of 2 sets" in text and f"{first}+{second}" in text
    scored = evaluate(detector, split="test").metrics  # the model's test split, all its sets read
    assert f"{scored['n']} labelled images" in text and f"{100 * scored['out_of_domain']:.2f}%" in text
    refused = CliRunner().invoke(cli, ["report", "-m", str(tmp_path / "m"), "--data", str(only_first)])
    assert refused.exit_code == 2 and "--resize resize:32" in refused.output and "resize:64" not in refused.output
