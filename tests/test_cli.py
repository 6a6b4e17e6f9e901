"""fit / evaluate / compare / predict end to end through the CLI with the effnet-lite0 backbone."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import encode_image, layout_files, make_image, write_tree, write_zip

from fakedet.cli import HEAD_NAMES, cli
from fakedet.heads import HEADS
from fakedet.store import Store

FAST = ["--resize", "64", "--precision", "fp32", "--device", "cpu", "--workers", "0", "-q"]


def run(*args, code: int = 0) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def other_files(data: Path) -> dict[str, bytes]:
    """A second labelled dataset: new images plus one copy of a training image."""
    files = {f"{label}/{i}.png": encode_image(make_image(kind, 32, seed=5000 + 10 * i + (kind == "checker")), "PNG")
             for label, kind in (("real", "smooth"), ("fake", "checker")) for i in range(6)}
    files["real/copy.jpg"] = (data / "train/REAL/0000.jpg").read_bytes()
    return files


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    layout = {"train/REAL": 16, "train/FAKE": 16, "test/REAL": 8, "test/FAKE": 8}
    data = write_tree(root / "data", layout_files(layout))
    cache = root / "cache"
    run("extract", "--preset", "fast", data, "--cache", cache, *FAST)
    key = Store(cache / "data.h5").resolve_key("effnet-lite0")
    output = run("fit", "--cache", cache)  # the only cache, the only set, logreg
    return SimpleNamespace(root=root, data=data, cache=cache, key=key, fit_output=output,
                           model=cache / "models" / f"data-{key}-logreg",
                           other=write_tree(root / "other", other_files(data)))


def test_fit_saves_the_model_with_its_metrics(lab):
    assert "[val]" in lab.fit_output and "[test]" in lab.fit_output and f"model saved to {lab.model}" in lab.fit_output
    metrics = json.loads((lab.model / "metrics.json").read_text())
    assert metrics["test"]["n"] == 16 and metrics["test"]["accuracy"] >= 0.9
    meta = json.loads((lab.model / "model.json").read_text())
    assert meta["backbone"] == "effnet-lite0" and meta["identity"]["preprocess"]["size"] == 64


def test_fit_parameters_config_and_errors(lab):
    config = lab.root / "knn.json"
    config.write_text(json.dumps({"weights": "uniform", "n_neighbors": 7}))
    out = lab.root / "knn-model"
    run("fit", "--data", lab.data, "--cache", lab.cache, "--head", "knn", "--config", config,
        "--param", "n_neighbors=3", "--preprocess", "l2,pca:8", "--cv", "3", "--out", out)
    meta = json.loads((out / "model.json").read_text())
    assert (meta["params"]["n_neighbors"], meta["params"]["weights"], meta["preprocess"]) == (3, "uniform", "l2,pca:8")
    assert json.loads((out / "metrics.json").read_text())["cv"]["folds"] == 3
    assert "no parameter bogus" in run("fit", "--cache", lab.cache, "--param", "bogus=1", code=2)
    assert "unknown head 'forest'" in run("fit", "--cache", lab.cache, "--head", "forest", code=2)
    assert set(HEAD_NAMES.split(", ")) == set(HEADS)


def test_evaluate_on_its_test_split_and_on_another_dataset(lab):
    output = run("evaluate", lab.model, "--cache", lab.cache, "--out", lab.root / "test.csv")
    assert "[data/test] 16 images" in output
    assert len(pd.read_csv(lab.root / "test.csv")) == 16
    output = run("evaluate", lab.model.name, "--data", lab.other, "--cache", lab.cache, *FAST[4:])
    assert (lab.cache / "other.h5").exists()  # extracted with the model's backbone first
    assert "[other/all] 12 images" in output and "left out 1 images" in output
    metrics = json.loads((lab.model / "metrics.json").read_text())
    assert metrics["other/all"]["n"] == 12 and metrics["other/all"]["accuracy"] >= 0.9
    assert metrics["data/test"]["accuracy"] == metrics["test"]["accuracy"]


def test_evaluate_refuses_embeddings_of_another_backbone_setting(lab):
    run("extract", "--preset", "fast", lab.other, "--cache", lab.cache, *FAST[2:], "--resize", "48")
    output = run("evaluate", lab.model, "--data", "other", "--cache", lab.cache, "--key", "effnet-lite0.resize48",
                 code=2)
    assert "was not made by this model's backbone" in output
    assert "fakedet extract DATA --backbone effnet-lite0 --layers final --resize resize:64" in output


def test_two_scale_embeddings_their_model_and_bad_scales(lab, tmp_path):
    cache = tmp_path / "cache"

    def sets() -> set[str]:
        store = Store(cache / "data.h5")
        return set(store.embedding_sets()["key"]) if store.exists else set()

    assert "scales '0': distinct factors" in run("extract", "--preset", "fast", lab.data, "--cache", cache, *FAST, "--scales", "0", code=2)
    assert sets() == set()  # refused before anything was written
    run("extract", "--preset", "fast", lab.data, "--cache", cache, *FAST, "--layers", "blocks", "--scales", "1,0.5")
    run("extract", "--preset", "fast", lab.data, "--cache", cache, *FAST, "--layers", "blocks")
    assert "1,0.5" in run("info", "--cache", cache / "data.h5")
    model = tmp_path / "model"
    run("fit", "--cache", cache, "-b", "effnet-lite0.blocks.resize64.x1-0.5", "--out", model)
    single = next(k for k in sets() if ".x1-0.5" not in k)
    output = run("evaluate", model, "--cache", cache, "--data", "data", "--key", single, code=2)
    assert "was not made by this model's backbone" in output
    assert "--layers blocks --resize resize:64 --interpolation bicubic --scales 1,0.5 --precision fp32" in output
    # --tta flip: its own set, and a model fit on it refuses the unmirrored embeddings, naming the option
    run("extract", "--preset", "fast", lab.data, "--cache", cache, *FAST, "--layers", "blocks", "--scales", "1,0.5",
        "--tta", "flip")
    flipped = next(k for k in sets() if ".flip-" in k)
    run("fit", "--cache", cache, "-b", flipped, "--out", tmp_path / "flipped")
    two_scale = next(k for k in sets() if ".x1-0.5-" in k)
    output = run("evaluate", tmp_path / "flipped", "--cache", cache, "--data", "data", "--key", two_scale, code=2)
    assert "--scales 1,0.5 --tta flip --precision fp32" in output


def test_compare_writes_one_table_best_first(lab):
    output = run("compare", "--data", "data", "--cache", lab.cache, "--head", "knn", "--head", "logreg",
                 "--out", lab.root / "reports")
    table = pd.read_csv(lab.root / "reports" / "compare-data.csv")
    assert sorted(table["head"]) == ["knn", "logreg"] and (table["backbone"] == lab.key).all()
    assert table["balanced_accuracy"].is_monotonic_decreasing and (table["accuracy"] >= 0.9).all()
    assert (lab.root / "reports" / "compare-data.md").read_text().startswith("| backbone | head |")
    assert "written to" in output


def test_predict_mixed_good_and_bad_inputs(lab):
    loose = lab.root / "loose"
    loose.mkdir()
    (loose / "fake.png").write_bytes(encode_image(make_image("checker", 32, seed=7001), "PNG"))
    (loose / "real.jpg").write_bytes(encode_image(make_image("smooth", 32, seed=7002)))
    (loose / "broken.jpg").write_bytes(b"not an image")
    archive = write_zip(lab.root / "batch.zip", {
        "a.png": encode_image(make_image("checker", 32, seed=7003), "PNG"),
        "b.jpg": encode_image(make_image("smooth", 32, seed=7004)),
        "c.jpg": b"\xff\xd8 truncated",
    })
    inputs = [loose / "fake.png", loose / "real.jpg", loose / "broken.jpg", loose / "missing.jpg", lab.other, archive]
    out = lab.root / "predictions.csv"
    run("predict", lab.model, *inputs, "--out", out, "--cache", lab.cache, *FAST[4:])
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert len(table) == 4 + 13 + 3
    labels = table["label"].to_dict()
    assert labels[str(loose / "fake.png")] == "fake" and labels[str(loose / "real.jpg")] == "real"
    assert labels[f"{archive}/a.png"] == "fake" and labels[f"{archive}/b.jpg"] == "real"
    assert table.loc[str(loose / "missing.jpg"), "error"] == "no such file or folder"
    for bad in (loose / "broken.jpg", f"{archive}/c.jpg"):
        assert table.loc[str(bad), "error"] != "" and table.loc[str(bad), "p_fake"] == ""
    other = table[table.index.str.startswith(str(lab.other))]
    truth = ["fake" if "/fake/" in p else "real" for p in other.index]
    assert (other["label"] == truth).mean() >= 0.9 and (other["error"] == "").all()
    assert (lab.cache / "batch.h5").exists()  # the zip's embeddings are cached
    stdout = run("predict", lab.model, loose / "real.jpg", "--cache", lab.cache, *FAST[4:])
    assert pd.read_csv(io.StringIO(stdout.split("1 files")[0]))["label"].tolist() == ["real"]


def test_predict_and_evaluate_on_shards_and_a_manifest(lab):
    from shards import write_shard

    files = sorted(p for p in lab.other.rglob("*") if p.is_file())
    members = {}
    for i, path in enumerate(files):
        members[f"{i:04d}{path.suffix}"] = path.read_bytes()
        members[f"{i:04d}.cls"] = path.parent.name.encode()
    write_shard(lab.root / "shards" / "000000.tar", members)
    pd.DataFrame({"path": [str(p.relative_to(lab.root)) for p in files],
                  "label": [p.parent.name for p in files]}).to_csv(lab.root / "other.csv", index=False)

    def metrics(output: str) -> list[str]:
        return [line for line in output.splitlines() if line.startswith(("accuracy", "roc_auc", "n "))]

    folder = metrics(run("evaluate", lab.model, "--data", lab.other, "--cache", lab.cache, *FAST[4:]))
    assert folder and folder == metrics(run("evaluate", lab.model, "--data", lab.root / "shards", "--cache",
                                            lab.cache, *FAST[4:]))
    assert folder == metrics(run("evaluate", lab.model, "--data", lab.root / "other.csv", "--cache", lab.cache,
                                 *FAST[4:]))
    out = lab.root / "manifest-predictions.csv"
    run("predict", lab.model, lab.root / "other.csv", "--out", out, "--cache", lab.cache, *FAST[4:])
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == len(files) and (table["error"] == "").all()
    assert table["path"].str.startswith(f"{lab.root / 'other.csv'}/other/").all()
