"""Splits and folds: dataset folders respected, seeded stratified carving, identical content kept together."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fakedet.splits import assign_splits, cv_folds


def table(n: int, split: str | list[str] = "", copies: int = 1, seed: int = 0) -> pd.DataFrame:
    """n content ids with random labels, each present ``copies`` times (an image-level table)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = [{"id": f"{i:032x}", "path": f"{c}/{i:05d}.png", "label": labels[i],
             "split": split if isinstance(split, str) else split[i]} for i in range(n) for c in range(copies)]
    return pd.DataFrame(rows)


def one_split_per_id(frame: pd.DataFrame, split: np.ndarray) -> bool:
    return frame.assign(s=split).groupby("id")["s"].nunique().max() == 1


def test_dataset_folders_are_used_as_they_are():
    folders = ["train"] * 60 + ["val"] * 20 + ["test"] * 20
    frame = table(100, folders)
    split, how = assign_splits(frame, val_size=0.5, test_size=0.3)
    assert list(split) == folders and how.startswith("dataset folders")


def test_val_is_carved_from_train_only_stratified_and_seeded():
    folders = ["train"] * 200 + ["test"] * 50
    frame = table(250, folders)
    split, how = assign_splits(frame, random_state=1)
    assert list(split[200:]) == ["test"] * 50  # test untouched
    val = split[:200] == "val"
    assert val.sum() == 40 and "carved from train" in how
    train_fake = frame["label"][:200].mean()
    assert abs(frame["label"][:200][val].mean() - train_fake) < 0.03  # stratified
    assert list(assign_splits(frame, random_state=1)[0]) == list(split)
    assert list(assign_splits(frame, random_state=2)[0]) != list(split)


def test_without_folders_a_seeded_stratified_split():
    frame = table(500)
    split, how = assign_splits(frame, val_size=0.2, test_size=0.1)
    counts = pd.Series(split).value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (350, 100, 50)
    for name in ("val", "test"):
        assert abs(frame["label"][split == name].mean() - frame["label"].mean()) < 0.03
    assert "seeded stratified" in how
    assert set(assign_splits(frame)[0]) == {"train", "val"}  # no test unless asked


def test_identical_content_stays_in_one_split_and_unlabelled_rows_get_none():
    frame = table(200, copies=3)
    frame.loc[frame.index % 7 == 0, "label"] = -1  # some copies unlabelled
    split, _ = assign_splits(frame, test_size=0.2)
    assert one_split_per_id(frame, split)
    assert set(split) == {"train", "val", "test"}
    unlabelled = table(5).assign(label=-1, id=lambda f: "u" + f["id"])
    split, _ = assign_splits(pd.concat([frame, unlabelled], ignore_index=True))
    assert list(split[-5:]) == [""] * 5


def test_cross_split_copy_follows_its_first_path():
    frame = pd.DataFrame({
        "id": ["a", "a", "b", "c", "d", "e"] + [f"x{i}" for i in range(20)],
        "path": ["test/real/1.png", "train/real/1.png", "test/fake/2.png", "train/fake/3.png",
                 "train/real/4.png", "train/fake/5.png"] + [f"train/{'real' if i % 2 else 'fake'}/x{i}.png"
                                                             for i in range(20)],
        "label": [0, 0, 1, 1, 0, 1] + [i % 2 for i in range(20)],
        "split": ["test", "train", "test", "train", "train", "train"] + ["train"] * 20,
    })
    split, _ = assign_splits(frame)
    assert list(split[:2]) == ["test", "test"]  # "test/..." sorts before "train/..."


def test_cv_folds_keep_duplicates_together_and_are_stratified():
    frame = table(150, copies=2, seed=3)
    frame.loc[:3, "label"] = -1
    folds = cv_folds(frame, n_splits=5, random_state=0)
    labelled = frame["label"] >= 0
    assert (folds[~labelled] == -1).all() and set(folds[labelled]) == set(range(5))
    assert one_split_per_id(frame[labelled], folds[labelled])
    rate = frame["label"][labelled].mean()
    for k in range(5):
        assert abs(frame["label"][folds == k].mean() - rate) < 0.1
    assert np.array_equal(folds, cv_folds(frame, n_splits=5, random_state=0))


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="no labelled"):
        assign_splits(table(10).assign(label=-1))
    with pytest.raises(ValueError, match="val_size"):
        assign_splits(table(10), val_size=0.6, test_size=0.5)
    with pytest.raises(ValueError, match="2 folds"):
        cv_folds(table(10), n_splits=1)
