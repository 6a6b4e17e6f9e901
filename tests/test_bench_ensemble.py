"""bench/ensemble.py: the mean of saved models' P(fake), and its refusals of files it cannot pair."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakedet.metrics import binary_metrics

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ensemble.py"
spec = importlib.util.spec_from_file_location("bench_ensemble", SCRIPT)
ensemble_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ensemble_script)


def predictions(path: Path, ids, labels, p_fake) -> Path:
    pd.DataFrame({"id": ids, "path": ids, "split": "val", "label": labels, "p_fake": p_fake}).to_csv(path, index=False)
    return path


def test_mean_of_models_aligned_by_id_whatever_their_row_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(40)]
    y = np.arange(40) % 2
    a, b = rng.random(40), rng.random(40)
    order = rng.permutation(40)  # the second file lists the images in another order
    first = predictions(tmp_path / "a.csv", ids, y, a)
    second = predictions(tmp_path / "b.csv", [ids[i] for i in order], y[order], b[order])
    table = ensemble_script.ensemble([first, second])
    assert list(table["predictions"]) == ["a", "b", "mean of a + b"]
    expected = binary_metrics(y, (a + b) / 2)
    assert table.loc[2, "accuracy"] == expected["accuracy"] and table.loc[2, "roc_auc"] == expected["roc_auc"]
    assert table.loc[0, "accuracy"] == binary_metrics(y, a)["accuracy"] and set(table["n"]) == {40}


def test_refuses_files_of_other_images_or_without_predictions(tmp_path):
    first = predictions(tmp_path / "a.csv", ["x", "y"], [0, 1], [0.2, 0.9])
    other = predictions(tmp_path / "b.csv", ["x", "z"], [0, 1], [0.1, 0.8])
    with pytest.raises(SystemExit, match="scores other images than .*a.csv: evaluate every model on the same split"):
        ensemble_script.ensemble([first, other])
    pd.DataFrame({"id": ["x", "y"], "score": [0.1, 0.2]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(SystemExit, match="lacks column.*label, p_fake.*fakedet evaluate"):
        ensemble_script.ensemble([first, tmp_path / "c.csv"])
