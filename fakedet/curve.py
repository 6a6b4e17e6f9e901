"""How many labels does a new domain need? Accuracy on a new dataset's val split against the number
of its labelled training images per class, trained on those alone and together with a base dataset.

For each size, ``repeats`` seeded draws of that many training images per class of NEW are fit
with the head (with BASE's training rows added, sources weighted equally, in the second variant)
and scored on all of NEW's val rows at threshold 0.5. Embeddings come from the cache (see
``fakedet.training_data.gather``: both datasets must be embedded with the same settings).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .heads import make_head
from .metrics import binary_metrics
from .tables import save_table
from .training import weight_kwargs
from .training_data import gather, source_weights

MIN_PER_CLASS = 5  # the default logreg picks C by 5-fold cross-validation


def parse_sizes(text: str) -> list[int]:
    """``'10,50,200'`` -> ``[10, 50, 200]`` (labelled images per class, at least 5 each)."""
    try:
        sizes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"sizes {text!r}: use whole numbers separated by commas, e.g. 10,50,200") from None
    if not sizes or sizes[0] < MIN_PER_CLASS:
        raise ValueError(f"sizes {text!r}: at least {MIN_PER_CLASS} images per class each, e.g. 10,50,200")
    return sizes


def label_curve(new: str | Path, base: str | Path | None = None, *, backbone: str | None = None,
                sizes: list[int] = (10, 50, 200, 550), head: str = "logreg", params: dict | None = None,
                repeats: int = 3, cache: str | Path | None = None, val_size: float = 0.2, random_state: int = 0) -> pd.DataFrame:
    """One row per (size, variant): mean and std over ``repeats`` of NEW-val accuracy, balanced accuracy
    and ROC-AUC; ``n_new`` is the number of NEW training images actually drawn per class. ``params``:
    the head's parameters, as for ``fit``."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    data = gather([new] if base is None else [new, base], backbone, cache, val_size=val_size,
                  random_state=random_state)
    source, y, X = data.emb.frame["source"].to_numpy(), data.emb.y, data.emb.X
    name = data.sources[0]
    pool = {c: np.flatnonzero((source == name) & (data.split == "train") & (y == c)) for c in (0, 1)}
    val = np.flatnonzero((source == name) & (data.split == "val") & (y >= 0))
    if min(len(p) for p in pool.values()) < MIN_PER_CLASS or len(np.unique(y[val])) < 2:
        raise ValueError(f"{name} needs at least {MIN_PER_CLASS} training images per class and both classes in val")
    base_rows = np.flatnonzero((source != name) & (data.split == "train") & (y >= 0))
    variants = [("new only", np.zeros(0, int))] + ([(f"new + {data.sources[1]}", base_rows)] if base else [])
    rows = []
    for size in sizes:
        for variant, extra in variants:
            scores = []
            for r in range(repeats):
                rng = np.random.default_rng([random_state, size, r])
                drawn = np.concatenate([rng.choice(p, min(size, len(p)), replace=False) for p in pool.values()])
                train = np.concatenate([drawn, extra])
                weights = source_weights(source[train]) if len(extra) else None
                pipeline = make_head(head, params, random_state=random_state, n_samples=len(train))
                pipeline.fit(X[train], y[train], **weight_kwargs(pipeline, head, weights, len(train)))
                p = pipeline.predict_proba(X[val])[:, list(pipeline.classes_).index(1)]
                scores.append(binary_metrics(y[val], p, 0.5))
            table = pd.DataFrame(scores)[["accuracy", "balanced_accuracy", "roc_auc"]].astype(float)
            rows.append({"per_class": size, "n_new": min(size, *(len(p) for p in pool.values())),
                         "variant": variant, "n_val": len(val), "repeats": repeats,
                         **table.mean().to_dict(), **{f"{k}_std": v for k, v in table.std(ddof=0).items()}})
    return pd.DataFrame(rows)


def plot_curve(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Balanced accuracy against labelled images per class, one line per variant (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, part in table.groupby("variant", sort=False):
        ax.errorbar(part["per_class"], part["balanced_accuracy"], yerr=part["balanced_accuracy_std"], marker="o",
                    capsize=3, label=variant)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("balanced accuracy on val")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_curve(table: pd.DataFrame, folder: str | Path, dataset: str) -> tuple[Path, Path, Path]:
    """Write ``curve-<dataset>.csv``, ``.md`` and ``.png`` (``plot_curve``) into ``folder``; returns the three."""
    stem = Path(folder) / f"curve-{dataset}"
    csv, md = save_table(table, stem)
    return csv, md, plot_curve(table, stem.with_suffix(".png"), title=f"{dataset}: labels needed")
