"""Fusion of embedding sets: several sets of one dataset (two backbones, or one backbone at two
settings) read as one, rows aligned by content id, and the head pipelines that read them.

A fused candidate is named by its sets joined with ``+``: ``A+B`` (each part a backbone spec, key or
key prefix; a name that is one set's key as a whole, e.g. a perturbed ``<key>+jpeg-q75``, stays one set).

* ``fuse``: the rows of the content ids embedded in every set, in the first set's order, with the
  columns of set 1, then set 2, ...; ids missing from a set are left out (counted per set).
* ``head_pipeline``: how a head reads such rows, ``fusion`` one of ``FUSIONS``:

  - ``concat``: each set's block preprocessed on its own (the head's preprocessing, e.g. standardised,
    side by side in a ``FeatureUnion`` of ``ColumnBlock`` pipelines), then one head on the concatenation;
  - ``stack``: one head per set, P(fake) = the mean of their probabilities (a soft-voting
    ``VotingClassifier``). Chosen over a ``StackingClassifier``: the heads already give calibrated
    probabilities (logreg tuned on log loss, the SVMs sigmoid-calibrated), and a stacker would refit
    every head on 5 more folds (logreg's own C search is 5 folds already) to learn weights that a small
    validation split cannot pin down.

Torch-free, like the heads.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import VotingClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from .backbone_config import BackboneConfig
from .heads import get_head, make_head, preprocessing_steps
from .store import Embeddings, Store, StoreError

FUSIONS = ("concat", "stack")
FUSE_CHUNK_ROWS = 4096  # rows copied at a time when fusing (two whole-set copies of all of CIFAKE took 7.9 GB)
SET_FIELDS = ("key", "spec", "fingerprint", "identity", "config", "dim")  # what a fused set records of each part


class ColumnBlock(TransformerMixin, BaseEstimator):
    """Columns ``start:stop`` of fused rows: one set's block (its head's input in a stacked model, its
    preprocessing's in a concatenated one).
    Saved as two numbers, where a ``ColumnTransformer`` would save the index of every other column."""

    def __init__(self, start: int = 0, stop: int = 0):
        self.start, self.stop = start, stop

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X[:, self.start:self.stop]


def column_blocks(dims: list[int]) -> list[ColumnBlock]:
    """One ``ColumnBlock`` per set of fused rows whose sets are ``dims`` columns wide, in order."""
    edges = np.cumsum([0, *dims]).tolist()
    return [ColumnBlock(start, stop) for start, stop in zip(edges, edges[1:])]


def resolve_sets(store: Store, names: list[str], once: bool = True) -> list[str]:
    """Keys of the sets ``names`` name (each one set, or sets joined with ``+``), in order, each once
    (``once=False``: as often as named, as a model whose members share a set reads them)."""
    keys: list[str] = []
    for name in names:
        try:
            keys.append(store.resolve_key(name))
        except StoreError:
            parts = name.split("+")
            if len(parts) == 1:
                raise
            if not all(p.strip() for p in parts):
                raise ValueError(f"{name!r}: name fused sets as A+B, each part a backbone spec, key or key prefix")
            keys += [store.resolve_key(p.strip()) for p in parts]
    return list(dict.fromkeys(keys)) if once else keys


def members(emb: Embeddings) -> list[dict]:
    """The attributes of every set ``emb`` reads (one dict with its key for a plain set)."""
    if "sets" in emb.attrs:
        return emb.attrs["sets"]
    config = BackboneConfig.from_set_attrs(emb.attrs).to_dict()
    return [{"key": emb.key, "spec": emb.attrs["spec"], "fingerprint": emb.fingerprint,
             "identity": emb.attrs["identity"], "config": config, "dim": int(emb.X.shape[1])}]


def fuse(parts: list[Embeddings]) -> Embeddings:
    """One embedding set from several of one dataset, aligned by content id (see module docstring)."""
    if len(parts) == 1:
        return parts[0]
    return _fuse([p.frame for p in parts], [p.X.shape[1] for p in parts], parts.__getitem__,
                 np.result_type(*(p.X for p in parts)))


def _fuse(frames: list[pd.DataFrame], widths: list[int], part: Callable[[int], Embeddings],
          dtype) -> Embeddings:
    """Fused rows (of ``dtype``) of the ids every frame holds, part ``i`` (``part(i)``, with rows
    ``frames[i]``) filled into its columns and then let go: one part besides the fused rows in memory at
    a time."""
    ids = frames[0]["id"]
    for frame in frames[1:]:
        ids = ids[ids.isin(frame["id"])]
    X, sets, keys, column, first = None, [], [], 0, None
    for i, width in enumerate(widths):
        emb = part(i)
        rows = pd.Index(emb.frame["id"]).get_indexer(ids)
        if X is None:
            X, first = np.empty((len(ids), sum(widths)), dtype=dtype), emb.frame.iloc[rows]
        for start in range(0, len(rows), FUSE_CHUNK_ROWS):  # filled in row chunks: no whole-set temporary copies
            X[start:start + FUSE_CHUNK_ROWS, column:column + width] = emb.X[rows[start:start + FUSE_CHUNK_ROWS]]
        column += width
        sets += members(emb)
        keys.append(emb.key)
        del emb
    attrs = {"spec": "+".join(m["spec"] for m in sets), "fingerprint": "+".join(m["fingerprint"] for m in sets),
             "identity": {}, "perturb": "", "sets": sets,
             "dropped": {k: int(len(f) - len(ids)) for k, f in zip(keys, frames)}}
    return Embeddings(X, first.reset_index(drop=True), "+".join(keys), attrs)


def load_sets(store: Store, name: str | list[str], allow_partial: bool = True, ids=None) -> Embeddings:
    """Set ``name`` of ``store`` (a key, spec, prefix, or fused ``A+B``; or a list of them, fused in order,
    e.g. the perturbed sets ``A+jpeg-q75`` of each part), fused when it names several, reading one set at
    a time; a set still missing images of its table is refused unless ``allow_partial``. ``ids``: only
    the rows of these content ids (e.g. one split's), the others never read."""
    keys = resolve_sets(store, [name] if isinstance(name, str) else list(name), once=False)
    for key in dict.fromkeys(keys):
        store.require_complete(key, allow_partial)
    if len(keys) == 1:
        return store.load(keys[0], ids=ids)
    dims = store.embedding_sets().set_index("key")["dim"]
    frames = [store.frame(k) for k in keys]
    order = pd.Index(frames[0]["id"]).get_indexer(store.embedded_ids(keys[0]))
    frames[0] = frames[0].iloc[order[order >= 0]]  # rows in the first set's order, as load() gives them
    if ids is not None:
        frames = [f[f["id"].isin(ids)] for f in frames]
    return _fuse(frames, [int(dims[k]) for k in keys], lambda i: store.load(keys[i], ids=frames[0]["id"]),
                 np.float32)  # load()'s dtype


def head_pipeline(emb: Embeddings, head: str, params: dict | None = None, preprocess: str | None = None,
                  random_state: int = 0, n_samples: int = 0, fusion: str = "concat") -> Pipeline:
    """The unfitted pipeline of ``head`` for rows like ``emb``'s: ``make_head`` for one set, per-set
    blocks for a fused one (see module docstring)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if "sets" not in emb.attrs:
        return make_head(head, params, preprocess, random_state, n_samples)
    dims = [int(m["dim"]) for m in emb.attrs["sets"]]
    names = [f"set{i}" for i in range(len(dims))]
    if fusion == "stack":
        voters = [(n, Pipeline([("block", block), *make_head(head, params, preprocess, random_state,
                                                             n_samples).steps]))
                  for n, block in zip(names, column_blocks(dims))]
        return Pipeline([("fusion", VotingClassifier(voters, voting="soft"))])
    pre = get_head(head).preprocess if preprocess is None else preprocess
    blocks = FeatureUnion([(n, Pipeline([("block", block), *preprocessing_steps(pre, random_state)]))
                           for n, block in zip(names, column_blocks(dims))])
    return Pipeline([("blocks", blocks), *make_head(head, params, "none", random_state, n_samples).steps])
