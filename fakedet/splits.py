"""Train / val / test assignment and cross-validation folds without leakage.

Identical content never straddles a boundary: rows are grouped by content id, and a group takes
the split of its first path (the rule ``store.per_id`` uses). The dataset's own ``train`` /
``val`` / ``test`` folders are used when present (labelled rows outside them count as train);
a missing val (and test, if asked) is carved out of train. Without folders, val and test are
seeded stratified fractions of the labelled rows. Unlabelled rows get the split ``""``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

SPLITS = ("train", "val", "test")


def _groups(frame: pd.DataFrame) -> pd.DataFrame:
    """One labelled row per content id: its first path's label and folder split."""
    labelled = frame[frame["label"] >= 0].sort_values("path", kind="stable")
    return labelled.drop_duplicates("id")[["id", "label", "split"]].reset_index(drop=True)


def _carve(split: pd.Series, labels: pd.Series, source: str, name: str, size: float, seed: int) -> None:
    """Move a stratified fraction ``size`` of the ``source`` groups to ``name`` (in place)."""
    pool = split.index[split == source]
    counts = labels.loc[pool].value_counts()
    stratify = labels.loc[pool] if len(counts) > 1 and counts.min() >= 2 else None
    _, moved = train_test_split(pool, test_size=size, random_state=seed, stratify=stratify)
    split.loc[moved] = name


def assign_splits(
    frame: pd.DataFrame, *, val_size: float = 0.2, test_size: float = 0.0, random_state: int = 0
) -> tuple[np.ndarray, str]:
    """Split name per row of ``frame`` (columns id, path, label, split) and how it was made.

    With dataset folders, ``val_size`` / ``test_size`` are fractions of the train folder and
    only used for a split the folders lack (test only if ``test_size`` > 0). Without folders
    they are fractions of all labelled groups.
    """
    if not (0 < val_size < 1 and 0 <= test_size < 1 and val_size + test_size < 1):
        raise ValueError("val_size must be in (0, 1), test_size in [0, 1), and their sum below 1")
    groups = _groups(frame)
    if groups.empty:
        raise ValueError("no labelled images (label real/fake) to split")
    folders = set(groups["split"]) & set(SPLITS)
    split = groups["split"].where(groups["split"].isin(SPLITS), "train").copy()
    carved = []
    if folders:
        if "test" not in folders and test_size > 0:
            _carve(split, groups["label"], "train", "test", test_size, random_state)
            carved.append(f"test {test_size:.0%}")
        if "val" not in folders:
            _carve(split, groups["label"], "train", "val", val_size / (1 - test_size * ("test" not in folders)),
                   random_state)
            carved.append(f"val {val_size:.0%}")
        how = f"dataset folders ({', '.join(sorted(folders))})"
        if carved:
            how += f"; carved from train (grouped, stratified, seed {random_state}): {', '.join(carved)}"
    else:
        split[:] = "train"
        if test_size > 0:
            _carve(split, groups["label"], "train", "test", test_size, random_state)
        _carve(split, groups["label"], "train", "val", val_size / (1 - test_size), random_state)
        how = (f"seeded stratified split grouped by content (seed {random_state}): "
               f"val {val_size:.0%}" + (f", test {test_size:.0%}" if test_size else ""))
    by_id = pd.Series(split.to_numpy(), index=groups["id"])
    return frame["id"].map(by_id).fillna("").to_numpy(dtype=object), how


def cv_folds(frame: pd.DataFrame, n_splits: int = 5, random_state: int = 0) -> np.ndarray:
    """Fold number per row (-1 for unlabelled rows): stratified, seeded, content ids kept together."""
    if n_splits < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    folds = np.full(len(frame), -1)
    rows = np.flatnonzero(frame["label"].to_numpy() >= 0)
    y, ids = frame["label"].to_numpy()[rows], frame["id"].to_numpy()[rows]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), y, groups=ids)):
        folds[rows[held_out]] = fold
    return folds
