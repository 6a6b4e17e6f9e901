"""Robustness under perturbations and cross-dataset evaluation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import layout_files, write_tree
from PIL import Image

from fakedet.cli import cli
from fakedet.workflow import fit
from fakedet.scoring import Evaluation, backbone_for
from fakedet.extract import extract
from fakedet.perturb import parse_perturbation
from fakedet.robustness import Assessment, assess, cross_evaluate, evaluate_perturbed
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


def test_assess_records_one_evaluation_and_writes_its_predictions(trained, tmp_path):
    root, _, _, directory = trained
    found = assess(directory.name, cache=root / "cache", device="cpu", workers=0)
    assert found.table is None and found.evaluation.name == "src/test"
    assert json.loads(found.metrics_file.read_text())["src/test"] == found.evaluation.metrics
    written = pd.read_csv(found.write(tmp_path / "p.csv"))
    assert len(written) == found.evaluation.metrics["n"] == 16 and "p_fake" in written


def test_assess_makes_a_table_under_perturbations_or_for_several_datasets(trained, tmp_path):
    root, data, _, directory = trained
    options = {"cache": root / "cache", "device": "cpu", "workers": 0}
    perturbed = assess(directory, perturb=["jpeg:q=90"], **options)
    assert perturbed.evaluation is None and perturbed.table["perturbation"].tolist() == ["none", "jpeg-q90"]
    others = [write_tree(tmp_path / name, layout_files({"REAL": 4, "FAKE": 4}, size=48)) for name in ("o1", "o2")]
    crossed = assess(directory, others, **options)
    assert crossed.table["evaluated"].tolist() == ["src/test", "o1/all", "o2/all"]
    assert pd.read_json(crossed.write(tmp_path / "t.json"))["n"].tolist() == crossed.table["n"].tolist()
    with pytest.raises(ValueError, match="one dataset at a time"):
        assess(directory, [data, *others], perturb=["jpeg:q=90"], **options)
    with pytest.raises(ValueError, match="use jpeg:q=75"):
        assess(directory, perturb=["gamma:2"], **options)


def test_assess_names_what_is_mostly_out_of_domain(trained):
    detector = trained[2]
    table = pd.DataFrame({"evaluated": ["a/all", "b/all"], "out_of_domain": [0.9, 0.2]})
    assert Assessment(detector, table=table).out_of_domain() == [("a/all", 0.9)]
    assert Assessment(detector, table=table.drop(columns="out_of_domain")).out_of_domain() == []
    single = Evaluation({"n": 4, "out_of_domain": 0.75}, pd.DataFrame(), "c", "all")
    assert Assessment(detector, evaluation=single).out_of_domain() == [("c/all", 0.75)]
    assert Assessment(detector, evaluation=single).out_of_domain(share=0.8) == []
