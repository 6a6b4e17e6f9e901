"""Robustness under perturbations and cross-dataset evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import layout_files, write_tree
from PIL import Image

from fakedet.cli import cli
from fakedet.workflow import fit
from fakedet.scoring import backbone_for
from fakedet.extract import extract
from fakedet.perturb import parse_perturbation
from fakedet.robustness import cross_evaluate, evaluate_perturbed
from fakedet.store import Store

FAST = {"resize": "64", "precision": "fp32", "device": "cpu", "workers": 0, "progress": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    data = write_tree(root / "src", layout_files({"train/real": 16, "train/fake": 16, "test/real": 8, "test/fake": 8}))
    result = extract(data, "effnet-lite0", cache=root / "cache", **FAST)
    detector = fit(data, result.key, "logreg", cache=root / "cache")
    directory = detector.save(root / "cache" / "models" / "m")
    return root, data, detector, directory


def test_perturbed_copies_are_cached_under_their_own_key(trained):
    root, data, detector, _ = trained
    table = evaluate_perturbed(detector, [parse_perturbation("jpeg:q=90"), parse_perturbation("blur:sigma=6")],
                               cache=root / "cache", device="cpu", workers=0)
    assert table["perturbation"].tolist() == ["none", "jpeg-q90", "blur-sigma6"]
    assert (table["n"] == 16).all() and table.loc[0, "accuracy"] >= 0.9
    assert table.set_index("perturbation").loc["blur-sigma6", "accuracy_drop"] >= 0.1  # heavy blur hurts
    store = Store(root / "cache" / "src.h5")
    sets = store.embedding_sets().set_index("key")
    assert sets.loc[f"{detector.key}+blur-sigma6", "count"] == 16
    assert sets.loc[f"{detector.key}+jpeg-q90", "perturb"] == "jpeg-q90"
    assert len(store.images()) == 48  # the full table is kept
    # the cached rows are the embeddings of the perturbed images
    emb = store.load(f"{detector.key}+blur-sigma6")
    image = Image.open(data / emb.frame["path"].iloc[0]).convert("RGB")
    backbone = backbone_for(detector, device="cpu")
    expected = backbone.embed_images([parse_perturbation("blur:sigma=6")(image)])[0]
    np.testing.assert_allclose(emb.X[0], expected, atol=1e-4)


def test_cross_dataset_table(trained, tmp_path):
    root, data, detector, _ = trained
    files = layout_files({"REAL": 6, "FAKE": 6}, size=48)
    other = write_tree(tmp_path / "other", files)
    table = cross_evaluate(detector, [other], cache=root / "cache", device="cpu", workers=0)
    assert table["evaluated"].tolist() == ["src/test", "other/all"]
    assert table.loc[1, "n"] == 12
    assert {"recall_real", "recall_fake", "average_precision"} <= set(table.columns)


def test_cli_evaluate_perturb_and_many_datasets(trained, tmp_path):
    root, data, _, directory = trained
    out = CliRunner().invoke(cli, ["evaluate", str(directory), "--perturb", "resize:0.5", "--cache",
                                   str(root / "cache"), "--device", "cpu", "--workers", "0", "-q",
                                   "--out", str(tmp_path / "t.csv")])
    assert out.exit_code == 0, out.output
    assert "| none |" in out.output and "| resize-scale0.5 |" in out.output
    assert pd.read_csv(tmp_path / "t.csv")["perturbation"].tolist() == ["none", "resize-scale0.5"]
    bad = CliRunner().invoke(cli, ["evaluate", str(directory), "--perturb", "gamma:2", "--cache", str(root / "cache")])
    assert bad.exit_code == 2 and "use jpeg:q=75" in bad.output
