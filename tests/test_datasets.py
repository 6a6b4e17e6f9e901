"""Tests for fakedet.datasets: discovery in folders and zips, bad files reported, duplicates, scan."""
import hashlib
import multiprocessing
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import (bomb_png, encode_image, layout_files, make_image, truncated_jpeg,
                      write_tree, write_zip)
from fakedet.datasets import LABEL_NAMES, discover, duplicates, open_source, scan

LAYOUTS = {
    "cifake": ({"train/REAL": 2, "train/FAKE": 3},
               {"train/REAL": (0, "train"), "train/FAKE": (1, "train")}),
    "lowercase": ({"real": 2, "fake": 1}, {"real": (0, ""), "fake": (1, "")}),
    "numbered": ({"0_real": 1, "1_FAKE": 2, "Real": 1},
                 {"0_real": (0, ""), "1_FAKE": (1, ""), "Real": (0, "")}),
    "splits": ({"train/real": 1, "val/fake": 1, "Validation/REAL": 1, "TEST/1_fake": 1},
               {"train/real": (0, "train"), "val/fake": (1, "val"),
                "Validation/REAL": (0, "val"), "TEST/1_fake": (1, "test")}),
    "nested": ({"data/train/a/REAL/b": 1, "real/x/fake": 1, "test/sub/train/fake": 1},
               {"data/train/a/REAL/b": (0, "train"), "real/x/fake": (1, ""),
                "test/sub/train/fake": (1, "train")}),
    "unlabelled": ({"": 2, "photos": 1, "train/misc": 1},
                   {"": (-1, ""), "photos": (-1, ""), "train/misc": (-1, "train")}),
}
COLUMNS = ["id", "path", "split", "label", "format", "width", "height", "nbytes", "error"]


def expected_rows(layout, folders):
    files = layout_files(layout, ext=("jpg", "png"), size=(24, 16))
    folder_of = {name: name.rpartition("/")[0] for name in files}
    return files, {name: folders[folder_of[name]] for name in files}


def check_frame(frame, files, expected):
    assert list(frame.columns) == COLUMNS
    assert list(frame["path"]) == sorted(files)
    assert {p: (int(l), s) for p, l, s in zip(frame["path"], frame["label"], frame["split"])} == expected
    assert list(frame["id"]) == [hashlib.blake2b(files[p], digest_size=16).hexdigest()
                                 for p in frame["path"]]
    assert list(frame["nbytes"]) == [len(files[p]) for p in frame["path"]]
    assert list(frame["format"]) == ["PNG" if p.endswith(".png") else "JPEG" for p in frame["path"]]
    assert (frame["width"] == 24).all() and (frame["height"] == 16).all()
    assert (frame["error"] == "").all()
    assert {c: str(frame[c].dtype) for c in ("label", "width", "height", "nbytes")} == {
        "label": "int8", "width": "int32", "height": "int32", "nbytes": "int64"}


@pytest.mark.parametrize("name", LAYOUTS)
def test_discover_folder_layouts(tmp_path, name):
    files, expected = expected_rows(*LAYOUTS[name])
    frame = discover(write_tree(tmp_path / "ds", files), progress=False)
    check_frame(frame, files, expected)


@pytest.mark.parametrize("name", LAYOUTS)
def test_discover_zip_layouts_without_extracting(tmp_path, name):
    files, expected = expected_rows(*LAYOUTS[name])
    archive = write_zip(tmp_path / "ds.zip", files)
    frame = discover(archive, progress=False)
    check_frame(frame, files, expected)
    assert [p.name for p in tmp_path.iterdir()] == ["ds.zip"]


def test_label_names():
    assert LABEL_NAMES == {0: "real", 1: "fake", -1: "unlabelled"}


def test_discover_single_file(tmp_path):
    data = encode_image(make_image("smooth", (20, 10)), "PNG")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "one.png").write_bytes(data)
    frame = discover(tmp_path / "real" / "one.png", progress=False)
    assert frame[["path", "split", "label", "format", "width", "height", "nbytes"]].values.tolist() == [
        ["one.png", "", -1, "PNG", 20, 10, len(data)]]
    source = open_source(tmp_path / "real" / "one.png")
    assert (source.name, source.kind, source.read("one.png")) == ("one", "file", data)


def test_discover_empty_folder(tmp_path):
    frame = discover(tmp_path, progress=False)
    assert frame.empty and list(frame.columns) == COLUMNS
    assert str(frame["label"].dtype) == "int8"
    assert duplicates(frame).empty


def test_discover_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope.zip", progress=False)


def test_hidden_files_and_macosx_ignored(tmp_path):
    files = layout_files({"train/REAL": 1})
    junk = {".DS_Store": b"\0\0\0\1Bud1", "train/REAL/.hidden.jpg": files["train/REAL/0000.jpg"],
            ".cache/real/0000.jpg": files["train/REAL/0000.jpg"],
            "__MACOSX/train/REAL/._0000.jpg": b"\0\5\26\7 mac resource fork",
            "__MACOSX/train/REAL/0000.jpg": files["train/REAL/0000.jpg"]}
    folder = write_tree(tmp_path / "tree", {**files, **junk})
    archive = write_zip(tmp_path / "tree.zip", {**files, **junk})
    for source in (folder, archive):
        assert list(discover(source, progress=False)["path"]) == ["train/REAL/0000.jpg"]


def test_progress_bar_only_when_asked(tmp_path, capsys):
    folder = write_tree(tmp_path / "cifake-train", layout_files({"real": 1}))
    discover(folder, progress=False)
    assert capsys.readouterr().err == ""
    discover(folder, progress=True)
    assert "discover cifake-train" in capsys.readouterr().err


def test_same_bytes_same_id_and_duplicate_groups(tmp_path):
    files = layout_files({"train/REAL": 2, "train/FAKE": 1, "test/real": 1, "extra": 1})
    same = files["train/REAL/0000.jpg"]
    files["train/FAKE/copy.jpg"] = same           # label conflict
    files["test/real/copy.jpg"] = same            # cross-split
    files["train/REAL/0001.jpg"] = files["extra/0000.jpg"]  # unlabelled copy: no conflict
    frame = discover(write_tree(tmp_path / "ds", files), progress=False)
    ids = dict(zip(frame["path"], frame["id"]))
    assert ids["train/FAKE/copy.jpg"] == ids["train/REAL/0000.jpg"] == ids["test/real/copy.jpg"]
    assert ids["train/FAKE/0000.jpg"] != ids["train/REAL/0000.jpg"]
    assert frame["id"].str.fullmatch("[0-9a-f]{32}").all()

    groups = duplicates(frame).set_index("id")
    assert list(groups.columns) == ["n", "paths", "labels", "splits", "conflict", "cross_split"]
    big = groups.loc[ids["train/REAL/0000.jpg"]]
    assert big["n"] == 3
    assert big["paths"] == ["test/real/copy.jpg", "train/FAKE/copy.jpg", "train/REAL/0000.jpg"]
    assert big["labels"] == [0, 1, 0] and big["splits"] == ["test", "train", "train"]
    assert bool(big["conflict"]) and bool(big["cross_split"])
    small = groups.loc[ids["extra/0000.jpg"]]
    assert small["paths"] == ["extra/0000.jpg", "train/REAL/0001.jpg"]
    assert not small["conflict"] and not small["cross_split"]
    assert len(groups) == 2


def test_corrupt_inputs_reported_by_discover(tmp_path):
    files = {"real/empty.jpg": b"", "real/text.jpg": b"this is not an image\n",
             "real/truncated.jpg": truncated_jpeg(size=64),
             "fake/bomb.png": bomb_png(9000, 8000), "fake/huge.png": bomb_png(100_000, 100_000)}
    frame = discover(write_zip(tmp_path / "bad.zip", files), progress=False).set_index("path")
    assert frame.loc["real/empty.jpg", "error"] == "empty file"
    assert frame.loc["real/empty.jpg", "nbytes"] == 0
    assert frame.loc["real/text.jpg", "error"] == "not an image (cannot identify image file)"
    assert frame.loc["real/text.jpg", ["format", "width", "height"]].tolist() == ["", -1, -1]
    # only the header is read: a truncated JPEG looks fine here
    assert frame.loc["real/truncated.jpg", ["format", "width", "error"]].tolist() == ["JPEG", 64, ""]
    assert frame.loc["fake/bomb.png", "error"] == "decompression bomb (9000 x 8000 pixels)"
    assert frame.loc["fake/huge.png", "error"] == "decompression bomb (100000 x 100000 pixels)"
    assert frame.loc["fake/huge.png", ["format", "width", "height"]].tolist() == ["PNG", 100_000, 100_000]


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_image_source_pickles_and_reads_same_bytes(tmp_path, kind):
    files = layout_files({"train/REAL": 2, "train/FAKE": 2})
    root = (write_tree(tmp_path / "cifake-train", files) if kind == "folder"
            else write_zip(tmp_path / "cifake-train.zip", files))
    source = open_source(root)
    assert (source.name, source.kind, source.root) == ("cifake-train", kind, str(root.resolve()))
    assert source.read("train/FAKE/0001.jpg") == files["train/FAKE/0001.jpg"]  # opens the zip
    clone = pickle.loads(pickle.dumps(source))
    assert clone.paths() == sorted(files)
    assert all(clone.read(p) == files[p] for p in files)
    assert open_source(clone) is clone
    with pytest.raises(FileNotFoundError):
        clone.read("train/REAL/missing.jpg")
    (tmp_path / "outside.jpg").write_bytes(files["train/FAKE/0001.jpg"])
    with pytest.raises(FileNotFoundError):
        clone.read("../outside.jpg")


def descriptors_on(path):
    """Numbers of this process's file descriptors open on ``path`` (Linux /proc)."""
    return {int(fd.name) for fd in Path("/proc/self/fd").iterdir() if os.path.realpath(fd) == path}


def read_in_child(source, paths, queue):
    queue.put(([source.read(p) for p in paths], descriptors_on(source.root)))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_zip_source_reopens_archive_after_fork(tmp_path):
    """A forked worker inherits the source object (as in a DataLoader) but not its open archive."""
    files = layout_files({"real": 20, "fake": 20}, size=8)
    source = open_source(write_zip(tmp_path / "data.zip", files))
    paths = sorted(files)
    assert source.read(paths[0]) == files[paths[0]]  # the parent has the archive open
    inherited = descriptors_on(source.root)
    assert len(inherited) == 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=read_in_child, args=(source, paths, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    parent = [source.read(p) for p in paths]
    children = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert parent == [files[p] for p in paths]
    for data, descriptors in children:
        assert data == parent
        assert len(descriptors) == 1 and not descriptors & inherited


def test_scan_reports_problems(tmp_path):
    files = layout_files({"train/REAL": 2, "train/FAKE": 1, "val/fake": 1})
    files["train/REAL/0001.jpg"] = files["train/REAL/0000.jpg"]
    files["train/FAKE/same.jpg"] = files["train/REAL/0000.jpg"]
    files["val/fake/leak.jpg"] = files["train/FAKE/0000.jpg"]
    files["train/FAKE/twin.jpg"] = files["train/FAKE/0000.jpg"]
    files.update({"train/REAL/empty.jpg": b"", "train/REAL/text.jpg": b"hello",
                  "train/FAKE/truncated.jpg": truncated_jpeg(),
                  "train/FAKE/bomb.png": bomb_png(100_000, 100_000),
                  "val/fake/tiny.png": encode_image(make_image("noise", (7, 30)), "PNG")})
    problems = scan(write_zip(tmp_path / "data.zip", files), progress=False)
    assert list(problems.columns) == ["path", "id", "problem", "detail"]
    assert sorted(zip(problems["path"], problems["problem"])) == sorted([
        ("train/FAKE/bomb.png", "unreadable"),
        ("train/FAKE/truncated.jpg", "unreadable"),
        ("train/REAL/empty.jpg", "unreadable"),
        ("train/REAL/text.jpg", "unreadable"),
        ("val/fake/tiny.png", "tiny image"),
        ("train/REAL/0000.jpg", "duplicate"),
        ("train/REAL/0000.jpg", "label conflict"),
        ("train/REAL/0001.jpg", "duplicate"),
        ("train/REAL/0001.jpg", "label conflict"),
        ("val/fake/leak.jpg", "duplicate"),
        ("train/FAKE/twin.jpg", "duplicate"),
        ("val/fake/leak.jpg", "cross-split duplicate"),
    ])
    detail = {(p, k): d for p, k, d in zip(problems["path"], problems["problem"], problems["detail"])}
    assert "truncated" in detail["train/FAKE/truncated.jpg", "unreadable"]
    assert detail["train/FAKE/bomb.png", "unreadable"] == "decompression bomb (100000 x 100000 pixels)"
    assert detail["train/REAL/0000.jpg", "duplicate"] == "same bytes as train/FAKE/same.jpg"
    assert detail["train/REAL/0001.jpg", "label conflict"] == "real here, fake as train/FAKE/same.jpg"
    assert detail["val/fake/leak.jpg", "cross-split duplicate"] == (
        "in val here, in train as train/FAKE/0000.jpg")
    assert detail["val/fake/tiny.png", "tiny image"] == "7 x 30 pixels"
    ids = discover(tmp_path / "data.zip", progress=False).set_index("path")["id"]
    assert all(ids[p] == i for p, i in zip(problems["path"], problems["id"]))


def test_scan_clean_dataset_has_no_problems(image_zip):
    assert scan(image_zip(), progress=False).empty


def test_zip_directory_entries_and_stored_members(image_zip):
    archive = image_zip({"train/REAL": 1, "train/FAKE": 1}, name="cifake-train")
    with zipfile.ZipFile(archive) as z:
        assert "train/REAL/" in z.namelist()
    assert list(discover(archive, progress=False)["path"]) == ["train/FAKE/0000.jpg", "train/REAL/0000.jpg"]
    assert open_source(archive).name == "cifake-train"


def test_conftest_images_are_deterministic_and_distinct():
    assert np.array_equal(np.asarray(make_image("smooth", 16, seed=1)), np.asarray(make_image("smooth", 16, seed=1)))
    files = layout_files({"real": 3, "fake": 3})
    assert len(set(files.values())) == 6
