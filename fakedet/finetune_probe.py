"""The linear probe fine-tuning starts from: frozen embeddings of the training images (from the cache
where it holds them) and the heads' logistic regression re-expressed as one ``nn.Linear``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .backbones import Backbone
from .catalog import matching_set, source_store
from .datasets import ImageSource
from .embedding import embed_in_memory
from .heads import make_head


def probe_embeddings(backbone: Backbone, src: ImageSource, items: pd.DataFrame, cache, batch_size: int,
                     workers: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Frozen embeddings of ``items``: from the cache's set with ``backbone``'s fingerprint where present,
    the rest computed now (no augmentation). Returns (X, embedded row mask, rows taken from the cache)."""
    X = np.zeros((len(items), backbone.dim), np.float32)
    row = pd.Series(np.arange(len(items)), index=items["id"].to_numpy())
    done = np.zeros(len(items), bool)
    store = source_store(src.root, cache)
    key = matching_set(store, backbone.fingerprint, prefer=backbone.key)
    if key is not None and store.attrs().get("source") == src.root:
        emb = store.load(key)
        hit = emb.frame["id"].isin(row.index).to_numpy()
        at = row.loc[emb.frame["id"][hit]].to_numpy()
        X[at], done[at] = emb.X[hit], True
    from_cache = int(done.sum())
    if not done.all():
        ids, Z, _ = embed_in_memory(src, items[~done], backbone.preprocess, backbone.embed, batch_size=batch_size,
                                    workers=workers, progress=progress, desc="probe embeddings")
        at = row.loc[ids].to_numpy()
        X[at], done[at] = Z, True
    return X, done, from_cache


def probe_head(X: np.ndarray, y: np.ndarray, random_state: int = 0) -> nn.Linear:
    """The heads' logistic regression (standardised features) as one ``nn.Linear`` on raw features."""
    pipeline = make_head("logreg", random_state=random_state).fit(X, y)
    scaler, logreg = pipeline.named_steps["standard"], pipeline.named_steps["head"]
    weight = logreg.coef_[0] / scaler.scale_
    head = nn.Linear(X.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).view(1, -1))
        head.bias.fill_(float(logreg.intercept_[0] - weight @ scaler.mean_))
    return head


def probe_loss(head: nn.Linear, X: np.ndarray, y: np.ndarray) -> float:
    """Mean log loss of ``head`` on embeddings ``X``: the training loss fine-tuning starts from."""
    with torch.no_grad():
        logits = head(torch.from_numpy(X).to(head.weight.device)).squeeze(1)
        target = torch.as_tensor(y, dtype=torch.float32, device=logits.device)
        return float(nn.functional.binary_cross_entropy_with_logits(logits, target))
