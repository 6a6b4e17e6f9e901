"""Soft-voting ensemble of saved models, from their per-image predictions: P(fake) = the mean of the
models' P(fake), scored at threshold 0.5 beside each model alone.

The same rule as ``fakedet ensemble`` (and ``fit --fusion stack``), which makes one usable model of
them; this script only scores saved predictions, to compare many combinations of members in seconds.
Write each model's predictions of one split first, e.g.:

    fakedet evaluate cache/full/models/ft64-logreg --cache cache/full --split val --out ft64-val.csv
    fakedet evaluate cache/full/models/ft96-logreg --cache cache/full --split val --out ft96-val.csv
    python bench/ensemble.py ft64-val.csv ft96-val.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fakedet.metrics import binary_metrics
from fakedet.tables import to_markdown


def ensemble(paths: list[Path]) -> pd.DataFrame:
    """One row per model and one for their mean: images, accuracy at 0.5, balanced accuracy, ROC-AUC."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"id", "label", "p_fake"} - set(frame.columns)
        if missing:
            raise SystemExit(f"{path} lacks column(s) {', '.join(sorted(missing))}: give the CSV files "
                             "`fakedet evaluate MODEL --out FILE.csv` writes")
        frames.append(frame.set_index("id"))
    ids = frames[0].index
    for path, frame in zip(paths[1:], frames[1:]):
        if set(frame.index) != set(ids):
            raise SystemExit(f"{path} scores other images than {paths[0]}: evaluate every model on the same split")
    y = frames[0]["label"].to_numpy()
    probabilities = {p.stem: f.loc[ids, "p_fake"].to_numpy() for p, f in zip(paths, frames)}
    probabilities["mean of " + " + ".join(probabilities)] = np.mean(list(probabilities.values()), axis=0)
    rows = []
    for name, p in probabilities.items():
        m = binary_metrics(y, p)
        rows.append({"predictions": name, "n": len(y), "accuracy": m["accuracy"],
                     "balanced_accuracy": m["balanced_accuracy"], "roc_auc": m["roc_auc"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path, nargs="+", help="CSV files written by `fakedet evaluate --out`")
    args = parser.parse_args()
    if len(args.predictions) < 2:
        parser.error("give the predictions of at least two models")
    print(to_markdown(ensemble(args.predictions)))


if __name__ == "__main__":
    main()
