"""WebDataset shards, manifest tables and fsspec URLs as datasets: discovery, labels, failures, extraction."""
from __future__ import annotations

import fsspec
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_tree, write_zip
from shards import FILES, write_shards

from fakedet.cli import cli
from fakedet.datasets import discover, open_source
from fakedet.extract import extract
from fakedet.sources import is_dataset
from fakedet.store import Store

FAST = {"resize": "64", "precision": "fp32", "device": "cpu", "workers": 0, "progress": False}


def test_shards_labels_splits_and_failures(tmp_path):
    root = write_shards(tmp_path / "shards")
    src = open_source(root)
    assert src.kind == "shards" and src.name == "shards" and len(src.shards) == 5
    frame = discover(root, progress=False).set_index("path")
    expected = {f"000000.tar/{i:06d}.jpg": 0 for i in range(3)}
    expected |= {"000000.tar/000003.jpg": 1, "000000.tar/000098.jpg": 1}  # 000098: truncated, header parses
    expected |= {"000001.tar/000000.jpg": 1, "000001.tar/000001.jpg": 1, "fake/000002.tar/a/b.png": 1}
    good = frame[frame["error"] == ""]
    assert dict(good["label"]) == expected
    assert set(good.loc[good.index.str.startswith("000001"), "split"]) == {"val"}
    assert "bad label 'cat'" in frame.loc["000000.tar/000097.jpg", "error"]
    # the same bytes in a folder and in a shard get the same content id
    assert frame.loc["000000.tar/000000.jpg", "id"] == discover(write_tree(tmp_path / "f", FILES), False)[
        "id"].iloc[3]
    result = extract(root, "effnet-lite0", cache=tmp_path / "c", batch_size=4, **FAST)
    reasons = dict(zip(result.failures["path"], result.failures["reason"]))
    assert set(reasons) == {"000000.tar/000097.jpg", "000000.tar/000098.jpg", "000000.tar/000099.jpg"}
    assert "truncat" in reasons["000000.tar/000098.jpg"] and "not an image" in reasons["000000.tar/000099.jpg"]
    emb = Store(result.store).load(result.key)
    assert len(emb.X) == 6  # 7 good images, one repeated across shards


def test_shards_from_a_glob_and_a_single_tar(tmp_path):
    root = write_shards(tmp_path / "s", with_problems=False)
    globbed = open_source(str(root / "0*.tar"))
    assert globbed.kind == "shards" and globbed.shards == ["000000.tar", "000001.tar"]
    assert len(globbed.paths()) == 6 and globbed.name == "s"
    single = open_source(root / "000001.tar")
    assert single.paths() == ["000001.tar/000000.jpg", "000001.tar/000001.jpg"] and single.name == "000001"


def test_not_a_tar_is_refused_before_anything_is_written(tmp_path):
    root = write_shards(tmp_path / "s", with_problems=False)
    (root / "000005.tar").write_bytes(b"x" * 2000)
    out = CliRunner().invoke(cli, ["extract", str(root), "--cache", str(tmp_path / "c"), "-q", "--device", "cpu"])
    assert out.exit_code == 2 and "000005.tar is not a tar archive" in out.output
    assert "remove it" in out.output and not (tmp_path / "c" / "s.h5").exists()


def write_manifest(tmp_path, fmt: str):
    data = write_tree(tmp_path / "imgs", FILES)
    rows = [{"path": f"imgs/{p}", "label": p.split("/")[0].upper(), "split": "train"} for p in FILES]
    rows[1]["label"] = "maybe"  # bad label
    rows[2]["split"] = "holdout"  # bad split
    rows[3]["label"] = ""  # missing: from the folder name
    rows.append({"path": str(data / "real" / "0000.jpg"), "label": "1", "split": "test"})  # absolute
    rows.append({"path": "imgs/gone.jpg", "label": "0", "split": ""})  # missing file
    table = pd.DataFrame(rows)
    path = tmp_path / f"list.{fmt}"
    table.to_csv(path, index=False) if fmt == "csv" else table.to_parquet(path)
    return path, data


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_records_missing_files_and_bad_labels(tmp_path, fmt):
    path, data = write_manifest(tmp_path, fmt)
    frame = discover(path, progress=False).set_index("path")
    assert len(frame) == 8 and open_source(path).name == "list"
    errors = frame.loc[frame["error"] != "", "error"]
    assert set(errors.index) == {"imgs/real/0001.jpg", "imgs/real/0002.jpg", "imgs/gone.jpg"}
    assert "bad label 'maybe'" in errors["imgs/real/0001.jpg"] and "bad split" in errors["imgs/real/0002.jpg"]
    assert "No such file" in errors["imgs/gone.jpg"]
    assert frame.loc["imgs/fake/0000.jpg", "label"] == 1 and frame.loc["imgs/fake/0000.jpg", "split"] == "train"
    assert frame.loc[str(data / "real" / "0000.jpg"), ["label", "split"]].tolist() == [1, "test"]
    result = extract(path, "effnet-lite0", cache=tmp_path / "c", batch_size=4, **FAST)
    assert sorted(result.failures["path"]) == sorted(errors.index)
    assert len(Store(result.store).load(result.key).X) == 4  # 5 usable rows, two of them the same bytes


def test_manifest_without_a_location_column_exits_2(tmp_path):
    pd.DataFrame({"file": ["a.jpg"], "label": [0]}).to_csv(tmp_path / "m.csv", index=False)
    out = CliRunner().invoke(cli, ["extract", str(tmp_path / "m.csv"), "--cache", str(tmp_path / "c"), "-q"])
    assert out.exit_code == 2 and "no 'path' or 'url' column (columns: file, label)" in out.output
    assert not (tmp_path / "c").exists()


def test_memory_filesystem_folder_zip_shards_and_manifest(tmp_path):
    fs = fsspec.filesystem("memory")
    local = discover(write_tree(tmp_path / "d", FILES), progress=False)
    for path, data in FILES.items():
        fs.pipe_file(f"/fk/d/{path}", data)
    fs.pipe_file("/fk/d.zip", write_zip(tmp_path / "d.zip", FILES).read_bytes())
    write_shards(tmp_path / "s", with_problems=False)
    for name in ("000000.tar", "000001.tar"):
        fs.pipe_file(f"/fk/shards/{name}", (tmp_path / "s" / name).read_bytes())
    pd.DataFrame({"url": [f"memory://fk/d/{p}" for p in FILES], "label": [p[:4] for p in FILES]}).to_csv(
        "memory://fk/m.csv", index=False)
    try:
        for url in ("memory://fk/d", "memory://fk/d.zip"):
            remote = discover(url, progress=False)
            assert remote[["id", "path", "label"]].equals(local[["id", "path", "label"]]), url
            assert is_dataset(url)
        shards = discover("memory://fk/shards", progress=False)
        assert len(shards) == 6 and set(shards["id"]) == set(local["id"])
        manifest = discover("memory://fk/m.csv", progress=False)
        assert sorted(manifest["id"]) == sorted(local["id"]) and (manifest["error"] == "").all()
        result = extract("memory://fk/shards", "effnet-lite0", cache=tmp_path / "c", **FAST)
        assert result.n_embedded == 6 and Store(result.store).attrs()["source"] == "memory:///fk/shards"
    finally:
        fs.rm("/fk", recursive=True)


def test_file_url_matches_the_local_path(tmp_path):
    data = write_tree(tmp_path / "d", FILES)
    a = extract(data, "effnet-lite0", cache=tmp_path / "a", **FAST)
    b = extract(f"file://{data}", "effnet-lite0", cache=tmp_path / "b", **FAST)
    ea, eb = Store(a.store).load(a.key), Store(b.store).load(b.key)
    assert ea.frame["id"].tolist() == eb.frame["id"].tolist() and ea.frame["path"].tolist() == eb.frame["path"].tolist()
    np.testing.assert_array_equal(ea.X, eb.X)


def test_unknown_url_scheme_and_missing_location(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_source("memory://nothing/here")
    with pytest.raises(ValueError, match="cannot read"):
        open_source("nosuchproto://x/y")
