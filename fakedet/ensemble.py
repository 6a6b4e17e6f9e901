"""Soft-voting ensembles of saved models: one model from several, without refitting any of them.

``ensemble([m1, m2, ...])`` takes single-set models fit on the same data with the same split (several
backbones, one backbone at several settings, or several heads on one set, which the model then reads
once per member) and returns one fused model whose P(fake) is the mean of theirs: the model ``fit
--fusion stack`` would make, but with each head fitted on its own. A stacked fit holds every set's rows at once and, on all of CIFAKE with two or
three every-block sets, needs more than 24 GiB; here only the validation and test rows and a sample of
the training rows are read, one set at a time.

The result is an ordinary fused model (``fakedet.fusion``): a scikit-learn ``VotingClassifier`` over
the members' fitted pipelines (each wrapped in ``FrozenEstimator`` behind its ``ColumnBlock``), saved,
evaluated and used by ``predict`` like any other. Its threshold is chosen on the shared validation
split, and its out-of-domain summary is fitted on the fused training rows (at most
``domain.fit_rows(width)`` of them) and calibrated on the validation rows, scored one set at a time
(``domain.BlockScores``), so no more than one set's validation and test rows are ever in memory.
Torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from .catalog import find_model
from .detector import Detector
from .domain import DEFAULT_RATE, BlockScores, DomainModel, fit_rows
from .fusion import column_blocks
from .store import Store
from .training import settle, split_counts


def load_members(models: list[str | Path | Detector], cache: str | Path | None = None) -> list[Detector]:
    """The members as detectors (folders or names under ``<cache>/models/``), checked to form an ensemble."""
    if len(models) < 2:
        raise ValueError("an ensemble needs at least two models")
    members = [m if isinstance(m, Detector) else Detector.load(find_model(m, cache)) for m in models]
    first = members[0]
    for i, m in enumerate(members):
        name = f"model {i + 1} ({m.key}/{m.head})"
        if m.fused:
            raise ValueError(f"{name} is a fused model; an ensemble takes models fit on one embedding set each")
        if m.training.get("sources"):
            raise ValueError(f"{name} was fit on several datasets; ensembles of such models are not supported yet")
        if Path(m.training.get("store", "")).resolve() != Path(first.training.get("store", "")).resolve():
            raise ValueError(f"{name} was fit on {m.training.get('store')}, model 1 on {first.training.get('store')}: "
                             "an ensemble's models must be fit on the same data")
        if not _same_split(m.splits, first.splits):
            raise ValueError(f"{name} was fit on another split than model 1: fit every member with the same --data, "
                             "--val-size, --test-size and --seed, so that none has trained on the others' "
                             "validation images")
    fits = [(m.key, m.head, json.dumps(m.params, sort_keys=True, default=str)) for m in members]
    if len(set(fits)) < len(fits):
        raise ValueError("two of the models are the same fit (same embedding set, head and parameters); "
                         "give each model once")
    return members


def ensemble(models: list[str | Path | Detector], *, cache: str | Path | None = None,
             domain_rate: float | None = DEFAULT_RATE, random_state: int = 0) -> Detector:
    """One model whose P(fake) is the mean of ``models``' (see module docstring); ``domain_rate``: the share of
    validation images its out-of-domain flag keeps in (None: no flag)."""
    members = load_members(models, cache)
    store = Store(members[0].training["store"])
    splits = members[0].splits.set_index("id")["split"]
    frames = [store.frame(m.key) for m in members]
    present = [splits.index.isin(f["id"]) for f in frames]
    ids = splits.index[np.all(present, axis=0)]  # ids every member's set holds
    split, labels = splits.loc[ids].to_numpy(), frames[0].set_index("id")["label"].loc[ids].to_numpy()
    dims = [int(m.training["n_features"]) for m in members]
    sample, n_fit = np.flatnonzero(split == "train"), fit_rows(sum(dims))
    if len(sample) > n_fit:
        sample = np.sort(np.random.default_rng(random_state).choice(sample, n_fit, replace=False))
    scored = np.concatenate([np.flatnonzero(split == s) for s in ("val", "test")])
    n_val = int((split == "val").sum())
    summary = None  # the out-of-domain summary, scored a set (a block of its columns) at a time
    if domain_rate is not None and n_val:
        summary = DomainModel.fit(_fused_rows(store, members, dims, ids[sample]), random_state=random_state)
        blocks = BlockScores(summary.pipeline, len(scored))
    votes, starts = [], np.cumsum([0, *dims])
    for m, start, end in zip(members, starts, starts[1:]):  # one set's scored rows in memory at a time
        X = _set_rows(store, m, ids[scored])
        votes.append(m.p_fake(X))
        if summary is not None:
            blocks.add(X, slice(start, end))
        del X
    p, y = np.mean(votes, axis=0), labels[scored]
    domain = summary.scores_of(blocks) if summary is not None else None
    keys = [m.key for m in members]
    sets = [{"key": m.key, "spec": m.backbone, "fingerprint": m.fingerprint, "identity": m.identity,
             "config": m.config.to_dict(), "dim": width} for m, width in zip(members, dims)]
    detector = Detector(pipeline=_voting(members, dims), head=_head(members), params={}, preprocess="",
                        key="+".join(keys), fingerprint="+".join(m.fingerprint for m in members),
                        backbone="+".join(m.backbone for m in members), identity={}, sets=sets)
    training = members[0].training
    detector.training = {
        **{k: training[k] for k in ("store", "dataset", "source", "split", "val_size", "test_size", "random_state")
           if k in training},
        "key": detector.key, "counts": split_counts(labels, split),
        "n_features": int(sum(dims)),
        "fusion": {"mode": "stack", "sets": keys,
                   "dropped": {k: int((~h).sum()) for k, h in zip(keys, present) if (~h).any()}},
        "ensemble": [{"key": m.key, "head": m.head, "params": m.params, "threshold": m.threshold,
                      "val_accuracy": m.metrics.get("val", {}).get("accuracy")} for m in members],
    }
    settle(detector, y, p, {"val": slice(0, n_val), "test": slice(n_val, len(p))}, domain_rate,
           lambda: summary, lambda _, rows: domain[rows])
    detector.splits = members[0].splits[members[0].splits["id"].isin(ids)].reset_index(drop=True)
    return detector


def _set_rows(store: Store, member: Detector, ids: pd.Index) -> np.ndarray:
    """``member``'s embedding set's rows of ``ids``, in that order."""
    emb = store.load(member.key, ids=ids)
    member.check(emb)
    return emb.X[pd.Index(emb.frame["id"]).get_indexer(ids)]


def _fused_rows(store: Store, members: list[Detector], dims: list[int], ids: pd.Index) -> np.ndarray:
    """The rows of ``ids`` with every member's set side by side (the fused model's columns)."""
    X, starts = np.empty((len(ids), sum(dims)), np.float32), np.cumsum([0, *dims])
    for m, start, end in zip(members, starts, starts[1:]):
        X[:, start:end] = _set_rows(store, m, ids)
    return X


def _same_split(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.sort_values("id").reset_index(drop=True).equals(b.sort_values("id").reset_index(drop=True))


def _head(members: list[Detector]) -> str:
    heads = list(dict.fromkeys(m.head for m in members))
    return heads[0] if len(heads) == 1 else "+".join(heads)


def _voting(members: list[Detector], dims: list[int]) -> Pipeline:
    """The fitted soft-voting pipeline: member i reads its column block (``dims[i]`` wide) of the fused rows."""
    probe = np.zeros((2, sum(dims)), np.float32)  # fits only the column blocks and the class labels
    voters = [(f"set{i}", FrozenEstimator(Pipeline([("block", block.fit(probe)), *m.pipeline.steps])))
              for i, (m, block) in enumerate(zip(members, column_blocks(dims)))]
    return Pipeline([("fusion", VotingClassifier(voters, voting="soft").fit(probe, np.array([0, 1])))])
