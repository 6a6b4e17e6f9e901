"""bench/beyond.py: the augmentation table's gaps to clean and its mean ± sd over seeds."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "beyond.py"
spec = importlib.util.spec_from_file_location("bench_beyond", SCRIPT)
beyond = importlib.util.module_from_spec(spec)
spec.loader.exec_module(beyond)


def runs(clean: dict[tuple[int, str], float]) -> pd.DataFrame:
    """Rows as ``augmentation_runs`` makes them (fractions): every perturbation 1-3 points below clean."""
    return pd.DataFrame([{"seed": seed, "model": model, "clean": c, "jpeg:q=75": c - 0.01, "blur:sigma=1": c - 0.02,
                          "resize:0.5": c - 0.03, "worst drop": 0.03} for (seed, model), c in clean.items()])


def test_one_seed_gives_points_and_gaps():
    table = beyond.summarise(runs({(0, "no augmentation"): 0.95, (0, "augmented"): 0.96}))
    row = table.set_index("model").loc["augmented"]
    assert row["clean"] == "96.00" and row["resize:0.5 - clean"] == "-3.00" and row["blur:sigma=1 - clean"] == "-2.00"
    assert row["clean vs no augmentation"] == "1.00" and len(table) == 2


def test_several_seeds_add_mean_and_sd_per_model():
    table = beyond.summarise(runs({(0, "no augmentation"): 0.95, (0, "augmented"): 0.96,
                                   (1, "no augmentation"): 0.97, (1, "augmented"): 0.96}))
    summary = table[table["seed"] == "mean ± sd"].set_index("model")
    assert list(summary.index) == ["no augmentation", "augmented"]
    assert summary.loc["no augmentation", "clean"] == "96.00 ± 1.41"
    assert summary.loc["augmented", "clean"] == "96.00 ± 0.00"
    # against its own seed's unaugmented model: +1 then -1
    assert summary.loc["augmented", "clean vs no augmentation"] == "0.00 ± 1.41"


def test_cost_line_never_reports_a_negative_extraction_time():
    args = beyond.argparse.Namespace(copies=3, augment_pick="all")
    timed = beyond.cost_line(args, 300, 300, 30.0, 10.0, 5.0)
    assert "embedded by this run in 30 s (10 img/s, 10 s per copy)" in timed
    shared = beyond.cost_line(args, 300, 300, -178.0, 2157.0, 255.0)  # the cached refit ran slower (shared CPU)
    assert "not measurable here" in shared and "-178" not in shared and "img/s" not in shared
    cached = beyond.cost_line(args, 300, 0, 0.0, 10.0, 5.0)
    assert "all were already in the cache" in cached and cached.endswith("fit 10.0 s with them (cached) vs 5.0 s without.")
