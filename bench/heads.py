"""Every classifier head on one cached embedding set: fit and predict time, validation scores.

Grouped seeded split (``fakedet.splits.assign_splits``, val 20% of train, test rows left out),
then for each head: fit on train, score val (threshold 0.5 for accuracies; the detector's
val-chosen threshold would flatter them). Prints a Markdown table and writes it with machine,
command and date to BENCHMARKS.md under "## Heads" (or ``--title``).

    python bench/heads.py cache/cifake-train.h5 --backbone effnet-lite0
    python bench/heads.py cache/demo-images.h5 --heads knn,logreg --no-write   # smoke test
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import output_options, publish  # noqa: E402

from fakedet.catalog import pick_set  # noqa: E402
from fakedet.tables import to_markdown  # noqa: E402
from fakedet.heads import HEADS, make_head, tuned_params  # noqa: E402
from fakedet.metrics import binary_metrics  # noqa: E402
from fakedet.splits import assign_splits  # noqa: E402
from fakedet.store import Store  # noqa: E402


def run(store: Path, backbone: str | None, heads: list[str], seed: int) -> tuple[pd.DataFrame, str]:
    """One row per head: sizes, fit_s, predict_s, val accuracy, balanced accuracy, ROC-AUC, and what
    the head chose itself (logreg's cross-validated C)."""
    store = Store(store)
    emb = store.load(pick_set(store, backbone))
    split, how = assign_splits(emb.frame, val_size=0.2, random_state=seed)
    train, val = [np.flatnonzero((split == s) & (emb.y >= 0)) for s in ("train", "val")]
    rows = []
    for name in heads:
        pipeline = make_head(name, random_state=seed, n_samples=len(train))
        start = time.perf_counter()
        pipeline.fit(emb.X[train], emb.y[train])
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        p_fake = pipeline.predict_proba(emb.X[val])[:, list(pipeline.classes_).index(1)]
        predict_s = time.perf_counter() - start
        m = binary_metrics(emb.y[val], p_fake)
        rows.append({"head": name, "n_train": len(train), "n_val": len(val), "fit_s": fit_s,
                     "predict_s": predict_s, "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"], "roc_auc": m["roc_auc"],
                     "chosen": ", ".join(f"{k}={v:g}" for k, v in tuned_params(pipeline).items())})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows), f"{store.path.name}, set `{emb.key}` ({emb.X.shape[1]}-d); split: {how}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path, help="cache file, e.g. cache/cifake-train.h5")
    parser.add_argument("--backbone", "-b", default=None, help="embedding set: spec, key or key prefix")
    parser.add_argument("--heads", default=",".join(HEADS), help="comma-separated head names")
    parser.add_argument("--seed", type=int, default=0)
    output_options(parser, "Heads")
    args = parser.parse_args()
    table, data = run(args.store, args.backbone, args.heads.split(","), args.seed)
    publish(args, f"Data: {data}. Accuracies at threshold 0.5 on val.\n\n{to_markdown(table)}")


if __name__ == "__main__":
    main()
