"""The HDF5 store: round trip, dtypes, attributes, commit protocol, lock, refusals."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from fakedet.store import Store, StoreError, StoreLocked, store_path

ATTRS = {"spec": "toy", "fingerprint": "f" * 32, "identity": {"weights": "w"}}


def image_table(n: int) -> pd.DataFrame:
    ids = [f"{i:032x}" for i in range(n)]
    return pd.DataFrame({
        "id": ids, "path": [f"train/{'REAL' if i % 2 else 'FAKE'}/{i}.jpg" for i in range(n)],
        "split": "train", "label": np.array([i % 2 for i in range(n)], dtype=np.int8) ^ 1,
        "format": "JPEG", "width": np.full(n, 32, np.int32), "height": np.full(n, 32, np.int32),
        "nbytes": np.arange(n, dtype=np.int64) + 100, "error": "",
    })


def fill(path, n=10, dim=4, dtype="float32", batches=2):
    table = image_table(n)
    X = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    with Store(path).writer(source="/data/x") as w:
        w.write_images(table)
        out = w.open_set("toy-ffff", ATTRS, dim, dtype)
        for part in np.array_split(np.arange(n), batches):
            out.append(table["id"].to_numpy()[part], X[part])
    return table, X


def test_store_path_folder_or_file(tmp_path):
    assert store_path("cifake", tmp_path) == tmp_path / "cifake.h5"
    assert store_path("cifake", tmp_path / "mine.h5") == tmp_path / "mine.h5"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    table, X = fill(tmp_path / "s.h5", n=10, dim=4, dtype=dtype, batches=3)
    store = Store(tmp_path / "s.h5")
    emb = store.load("toy-ffff")
    assert emb.X.dtype == np.float32 and emb.X.shape == (10, 4)
    order = emb.frame["id"].map({k: i for i, k in enumerate(table["id"])}).to_numpy()
    np.testing.assert_allclose(emb.X, X[order], rtol=1e-3 if dtype == "float16" else 0)
    assert emb.frame["path"].tolist() == table["path"].iloc[order].tolist()
    assert emb.frame["label"].tolist() == table["label"].iloc[order].tolist()
    sets = store.embedding_sets()
    assert sets.loc[0, "dtype"] == dtype and sets.loc[0, "count"] == 10 and sets.loc[0, "dim"] == 4
    assert emb.attrs["fingerprint"] == "f" * 32 and emb.attrs["identity"] == {"weights": "w"}
    assert {"numpy", "h5py"} <= set(emb.attrs["versions"]) and emb.attrs["created"] and emb.attrs["updated"]
    assert store.attrs()["source"] == "/data/x"
    pd.testing.assert_frame_equal(store.images(), table, check_dtype=False)


def test_load_resolves_by_spec_and_prefix(tmp_path):
    fill(tmp_path / "s.h5")
    store = Store(tmp_path / "s.h5")
    assert store.resolve_key("toy") == "toy-ffff"
    assert store.resolve_key("toy-f") == "toy-ffff"
    with pytest.raises(StoreError, match="no embedding set 'nope'"):
        store.load("nope")


def test_duplicates_collapse_to_one_row_per_id(tmp_path):
    table = image_table(3)
    table.loc[1, "id"] = table.loc[0, "id"]  # same content under another path and label
    with Store(tmp_path / "s.h5").writer() as w:
        w.write_images(table)
        w.open_set("toy-ffff", ATTRS, 2).append(table["id"].unique(), np.eye(2, dtype=np.float32))
    emb = Store(tmp_path / "s.h5").load("toy")
    assert len(emb.frame) == 2
    row = emb.frame.set_index("id").loc[table.loc[0, "id"]]
    assert row["n_copies"] == 2 and bool(row["label_conflict"])


def test_uncommitted_rows_are_invisible_and_dropped(tmp_path):
    path = tmp_path / "s.h5"
    fill(path, n=10)
    with h5py.File(path, "a") as f:  # what a kill between row write and commit leaves behind
        for name in ("X", "ids"):
            f["embeddings/toy-ffff"][name].resize(14, axis=0)
    assert len(Store(path).load("toy").X) == 10
    assert len(Store(path).embedded_ids("toy-ffff")) == 10
    with Store(path).writer() as w:
        out = w.open_set("toy-ffff", ATTRS, 4)
        assert out.group["X"].shape[0] == 10 and out.count == 10


def test_second_writer_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "s.h5"
    with Store(path).writer():
        with pytest.raises(StoreLocked, match=r"being written by pid \d+.*--cache"):
            with Store(path).writer():
                pass
    with Store(path).writer():  # released afterwards
        pass


def test_reader_works_while_a_writer_holds_the_file(tmp_path):
    path = tmp_path / "s.h5"
    fill(path, n=6)
    with Store(path).writer() as w:
        w.open_set("toy-ffff", ATTRS, 4).append(np.array(["a" * 32]), np.ones((1, 4), np.float32))
        assert Store(path).embedding_sets().loc[0, "count"] == 7


def test_mismatches_are_refused(tmp_path):
    path = tmp_path / "s.h5"
    fill(path)
    with pytest.raises(StoreError, match="holds embeddings of /data/x, not /data/y.*--cache"):
        with Store(path).writer(source="/data/y"):
            pass
    with Store(path).writer() as w:
        with pytest.raises(StoreError, match="made by another model"):
            w.open_set("toy-ffff", {**ATTRS, "fingerprint": "0" * 32}, 4)
        with pytest.raises(StoreError, match="stored as float32; pass --dtype float32"):
            w.open_set("toy-ffff", ATTRS, 4, "float16")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    with pytest.raises(StoreError, match="not a fakedet-store/1 cache"):
        Store(foreign).images()
    with pytest.raises(StoreError, match="did not write"):
        with Store(foreign).writer():
            pass
    with pytest.raises(StoreError, match="run `fakedet extract"):
        Store(tmp_path / "missing.h5").images()


def test_failures_merge_by_id(tmp_path):
    path = tmp_path / "s.h5"
    with Store(path).writer() as w:
        w.add_failures(pd.DataFrame({"id": ["a", "b"], "path": ["x", "y"], "reason": ["r1", "r2"]}))
        w.add_failures(pd.DataFrame({"id": ["b"], "path": ["y"], "reason": ["r3"]}))
    bad = Store(path).failures().set_index("id")
    assert bad["reason"].to_dict() == {"a": "r1", "b": "r3"}


def test_projection_round_trip(tmp_path):
    path = tmp_path / "s.h5"
    fill(path)
    with Store(path).writer() as w:
        w.put_projection("toy-ffff", "pca", np.array(["a", "b"]), np.ones((2, 2)), {"method": "pca"})
    ids, coords, params = Store(path).projection("toy-ffff", "pca")
    assert ids.tolist() == ["a", "b"] and coords.shape == (2, 2) and params == {"method": "pca"}
    assert Store(path).projection("toy-ffff", "umap") is None
