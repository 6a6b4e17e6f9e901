"""Hostile inputs through extract, scan, predict, fit, compare, project, report and info: every fault gives a
clear message (exit 2, or a failure recorded with its reason), never a traceback, and never costs the cache.

``FILE_FAULTS`` is the table of per-file faults in folders and zips; the other tests cover whole-dataset,
cache, model-file and option faults, atomic rewrites (an injected failure and a real SIGKILL) and the
data-loading workers' exit with their parent.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import encode_image, layout_files, make_image, truncated_jpeg, write_tree

from fakedet.catalog import describe
from fakedet.cli import cli
from fakedet.datasets import discover
from fakedet.store import Store

FAST = ["--resize", "64", "--precision", "fp32", "--device", "cpu", "--workers", "0", "-q"]
LAYOUT = {"train/REAL": 6, "train/FAKE": 6, "test/REAL": 3, "test/FAKE": 3}
GOOD = encode_image(make_image("smooth", 32, seed=99))


def run(*args, code: int = 0) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    if code == 2:  # one clear line, no traceback
        assert "Traceback" not in result.output and result.output.startswith("error: "), result.output
    return result.output


def assert_intact(cache: Path, n_embedded: int | None = None) -> None:
    """The cache opens, passes ``info --check`` and still serves fit."""
    run("info", "--check", "--cache", cache)
    sets = Store(cache).embedding_sets()
    if n_embedded is not None:
        assert sets["count"].tolist() == [n_embedded]
    run("fit", "--cache", cache, "--out", cache.parent / "model")


# --------------------------------------------------------------------------- per-file faults


def folder_fault(make):
    """A folder dataset: the clean layout plus one hostile entry made by ``make(root)``."""
    def build(root: Path) -> Path:
        write_tree(root, layout_files(LAYOUT))
        make(root)
        return root
    return build


def zip_fault(extra: list[tuple[zipfile.ZipInfo | str, bytes]], corrupt: bytes | None = None):
    """A zip dataset: the clean layout plus members ``extra``; ``corrupt`` bytes are overwritten in the
    first member holding them (a bad CRC)."""
    def build(root: Path) -> Path:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, data in layout_files(LAYOUT).items():
                archive.writestr(name, data)
            for name, data in extra:
                archive.writestr(name, data)
        if corrupt is not None:
            raw = path.read_bytes()
            at = raw.index(corrupt) + len(corrupt) // 2
            path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
        return path
    return build


def raw_name_member(raw: bytes) -> zipfile.ZipInfo:
    """A member whose stored name is ``raw`` bytes without the UTF-8 flag (read back as cp437)."""
    return zipfile.ZipInfo(raw.decode("cp437"))


def _symlink_loop(root: Path) -> None:
    os.symlink("loop-b.jpg", root / "train/REAL/loop-a.jpg")
    os.symlink("loop-a.jpg", root / "train/REAL/loop-b.jpg")


# name -> (dataset builder, path of the hostile entry, failure reason substring or None if it must embed)
FILE_FAULTS = {
    "non-UTF-8 file name": (folder_fault(lambda r: (r / "train/REAL").joinpath(os.fsdecode(b"ph\xffoto.jpg"))
                                         .write_bytes(GOOD)), "train/REAL/ph\\xffoto.jpg", None),
    "odd Unicode file name": (folder_fault(lambda r: (r / "train/REAL/e\u0301\u202e\U0001F600 \n.jpg")
                                           .write_bytes(GOOD)), "train/REAL/e\u0301\u202e\U0001F600 \n.jpg", None),
    "broken symlink": (folder_fault(lambda r: os.symlink("nowhere.jpg", r / "train/REAL/dangling.jpg")),
                       "train/REAL/dangling.jpg", "broken symlink"),
    "symlink loop": (folder_fault(_symlink_loop), "train/REAL/loop-a.jpg", "symbolic links"),
    "truncated image": (folder_fault(lambda r: (r / "train/FAKE/cut.jpg").write_bytes(truncated_jpeg())),
                        "train/FAKE/cut.jpg", "cannot decode"),
    "empty file": (folder_fault(lambda r: (r / "train/FAKE/empty.jpg").write_bytes(b"")),
                   "train/FAKE/empty.jpg", "empty file"),
    "zip: bad CRC member": (zip_fault([("train/REAL/crc.jpg", GOOD)], corrupt=GOOD[-100:-60]),
                            "train/REAL/crc.jpg", "bad zip member"),
    "zip: ../ member": (zip_fault([("../escape/train/REAL/up.jpg", GOOD)]),
                        "../escape/train/REAL/up.jpg", "outside the archive"),
    "zip: absolute member": (zip_fault([("/etc/train/REAL/abs.jpg", GOOD)]),
                             "/etc/train/REAL/abs.jpg", "outside the archive"),
    "zip: non-UTF-8 member name": (zip_fault([(raw_name_member(b"train/REAL/\xff\xfe.jpg"), GOOD)]),
                                   b"train/REAL/\xff\xfe.jpg".decode("cp437"), None),
    "zip: odd Unicode member name": (zip_fault([("train/FAKE/\u0645\u0631\u062d\u0628\u0627\u200d.jpg", GOOD)]),
                                     "train/FAKE/\u0645\u0631\u062d\u0628\u0627\u200d.jpg", None),
}


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_per_file_fault_is_recorded_and_the_rest_is_embedded(tmp_path, fault):
    build, hostile, reason = FILE_FAULTS[fault]
    data = build(tmp_path / "data")
    cache = tmp_path / "cache.h5"
    output = run("extract", data, "--cache", cache, *FAST)
    n_good = sum(LAYOUT.values())
    store = Store(cache)
    images = store.images().set_index("path")
    assert hostile in images.index  # never dropped silently
    failures = store.failures().set_index("path")
    if reason is None:  # a strange name is still an image: embedded, and its name round-trips
        assert hostile not in failures.index and store.embedding_sets()["count"].tolist() == [n_good + 1]
    else:
        assert reason in failures.loc[hostile, "reason"], failures
        assert "skipped" in output
    assert_intact(cache, n_good + (reason is None))
    out = tmp_path / "predictions.csv"
    run("predict", tmp_path / "model", data, "--cache", cache, "--out", out, *FAST[4:])
    predicted = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert len(predicted) == len(images)  # one row per file, the hostile ones included
    row = predicted.loc[f"{data}/{hostile}"]
    assert (row["label"] in ("real", "fake")) if reason is None else (reason in row["error"])
    problems = run("scan", data, "-q")
    assert (reason is None) != (hostile.splitlines()[0] in problems)
    run("report", "--cache", cache, "--method", "pca", "--out", tmp_path / "report.html")
    assert "ph" in (tmp_path / "report.html").read_text(encoding="utf-8")  # valid UTF-8 whatever the names


def test_non_utf8_name_added_to_an_existing_cache_keeps_it(tmp_path):
    """The issue's first fault: re-extracting after a file named with byte 0xFF appeared broke the cache."""
    data = write_tree(tmp_path / "data", layout_files(LAYOUT))
    cache = tmp_path / "cache.h5"
    run("extract", data, "--cache", cache, *FAST)
    (data / "train/FAKE").joinpath(os.fsdecode(b"\xff\xfe-\xc3.png")).write_bytes(
        encode_image(make_image("checker", 32, seed=77), "PNG"))
    run("extract", data, "--cache", cache, *FAST)
    assert_intact(cache, sum(LAYOUT.values()) + 1)
    frame = discover(data, progress=False)
    assert Store(cache).images()["path"].tolist() == frame["path"].tolist()


def test_unreadable_file_and_folder_are_recorded(tmp_path, monkeypatch):
    """Permission errors (simulated: the tests may run as root, who reads everything)."""
    data = write_tree(tmp_path / "data", layout_files(LAYOUT))
    (data / "train/REAL/locked.jpg").write_bytes(GOOD)
    (data / "secret").mkdir()
    real_read, real_scandir = Path.read_bytes, os.scandir

    def read_bytes(self):
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    def scandir(path="."):
        if os.path.basename(path) == "secret":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(os, "scandir", scandir)
    cache = tmp_path / "cache.h5"
    run("extract", data, "--cache", cache, *FAST)
    failures = Store(cache).failures().set_index("path")["reason"]
    assert failures["train/REAL/locked.jpg"] == "read error: Permission denied"
    assert failures["secret/"] == "cannot list folder: Permission denied"
    assert_intact(cache, sum(LAYOUT.values()))


# --------------------------------------------------------------------------- whole-dataset and cache faults


def test_truncated_zip_is_one_clear_error(tmp_path):
    path = zip_fault([])(tmp_path / "data")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for command in (["extract", path, "--cache", tmp_path / "c.h5", *FAST], ["scan", path, "-q"]):
        assert "not a readable zip archive" in run(*command, code=2)
    assert not (tmp_path / "c.h5").exists()


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = write_tree(root / "data", layout_files(LAYOUT))
    run("extract", data, "--cache", root / "cache", *FAST)
    run("fit", "--cache", root / "cache")
    return root / "cache" / "data.h5"


CACHE_FAULTS = {
    "garbage": lambda good: b"this is not HDF5 at all\n" * 40,
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
}


@pytest.mark.parametrize("fault", list(CACHE_FAULTS))
def test_unopenable_cache_is_one_message_naming_it(tmp_path, good_cache, fault):
    cache = tmp_path / "data.h5"
    cache.write_bytes(CACHE_FAULTS[fault](good_cache.read_bytes()))
    data = good_cache.parent.parent / "data"
    for command in (["info", "--cache", cache], ["info", "--check", "--cache", cache], ["fit", "--cache", cache],
                    ["compare", "--cache", cache], ["project", "--cache", cache, "--method", "pca"],
                    ["report", "--cache", cache], ["extract", data, "--cache", cache, *FAST]):
        if fault == "empty" and command[0] == "extract":  # an empty file is no cache yet: extract starts one
            continue
        message = run(*command, code=2)
        assert str(cache) in message and "move it aside" in message.lower(), (command, message)


def test_info_check_names_what_is_wrong(tmp_path, good_cache):
    cache = tmp_path / "data.h5"
    cache.write_bytes(good_cache.read_bytes())
    assert "check: ok" in run("info", "--check", "--cache", cache)
    with h5py.File(cache, "a") as f:
        group = next(iter(f["embeddings"].values()))
        group["X"][2, 5] = float("nan")
        group.attrs["count"] = group["X"].shape[0] + 3
    output = run("info", "--check", "--cache", cache, code=1)
    assert "1 rows hold NaN or inf" in output and "count says" in output
    (found,) = describe(cache, check=True)
    assert any("1 rows hold NaN or inf" in p for p in found["problems"]) and "problems" not in describe(cache)[0]


# --------------------------------------------------------------------------- incomplete embedding sets


def test_fit_compare_project_report_refuse_an_incomplete_set(tmp_path):
    data = write_tree(tmp_path / "data", layout_files(LAYOUT))
    cache = tmp_path / "data.h5"
    run("extract", data, "--cache", cache, *FAST)
    write_tree(data / "train/FAKE/more", {f"{i}.png": encode_image(make_image("checker", 32, seed=300 + i), "PNG")
                                         for i in range(4)})
    with Store(cache).writer() as writer:  # an extraction killed after writing the new image table
        writer.write_images(discover(data, progress=False))
    commands = {"fit": ["fit"], "compare": ["compare", "--head", "logreg", "--out", tmp_path],
                "project": ["project", "--method", "pca"], "report": ["report", "--method", "pca",
                                                                      "--out", tmp_path / "r.html"]}
    for args in commands.values():
        message = run(*args, "--cache", cache, code=2)
        assert "incomplete: 4 of the images" in message and "--allow-partial" in message
    for args in commands.values():
        run(*args, "--cache", cache, "--allow-partial")
    run("extract", data, "--cache", cache, *FAST)  # finishing the extraction lifts the refusal
    run("fit", "--cache", cache)


# --------------------------------------------------------------------------- model files and checkpoints


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _model_faults(tmp_path: Path) -> dict:
    torch_file = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, torch_file)
    return {
        "pickle as model.skops": ("model.skops", pickle.dumps({"a": 1})),
        "torch file as model.skops": ("model.skops", torch_file.read_bytes()),
        "empty model.skops": ("model.skops", b""),
        "truncated model.skops": ("model.skops", None),
        "model.json not JSON": ("model.json", b"{not json"),
        "model.json without identity": ("model.json", "identity"),
        "model.json with a text threshold": ("model.json", "threshold"),
    }


def test_malformed_model_folders_give_one_line(tmp_path, good_cache):
    model = good_cache.parent / "models" / next(p.name for p in (good_cache.parent / "models").iterdir())
    import json
    import shutil

    for fault, (name, content) in _model_faults(tmp_path).items():
        broken = tmp_path / fault.replace(" ", "-")
        shutil.copytree(model, broken)
        target = broken / name
        if content is None:
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        elif content == "identity":
            meta = json.loads(target.read_text())
            del meta["identity"]
            target.write_text(json.dumps(meta))
        elif content == "threshold":
            meta = json.loads(target.read_text())
            meta["threshold"] = "high"
            target.write_text(json.dumps(meta))
        else:
            target.write_bytes(content)
        for command in (["predict", broken, good_cache.parent.parent / "data", *FAST[4:]],
                        ["evaluate", broken, "--cache", good_cache.parent],
                        ["report", "--model", broken, "--cache", good_cache.parent]):
            message = run(*command, code=2)
            assert str(broken) in message and "not a fakedet model file" in message, (fault, message)


@pytest.mark.parametrize("how", ["--checkpoint", "finetuned"])
def test_checkpoint_with_python_objects_is_refused_without_torch_advice(tmp_path, how):
    evil = tmp_path / "best.pt"
    torch.save({"format": "fakedet-finetuned/1", "payload": Evil()}, evil)
    data = write_tree(tmp_path / "data", layout_files(LAYOUT))
    backbone = ["--checkpoint", evil] if how == "--checkpoint" else ["--backbone", f"finetuned:{evil}"]
    args = ["extract", data, *backbone, "--cache", tmp_path / "c.h5", *FAST]
    if how == "--checkpoint":
        args[args.index("--checkpoint") + 2:args.index("--checkpoint") + 2] = ["--backbone", "timm:resnet18"]
    message = run(*args, code=2)
    assert "refusing checkpoint" in message and "weights_only" not in message
    for junk in (b"", b"\x00" * 100):
        evil.write_bytes(junk)
        message = run(*args, code=2)
        assert "not a torch checkpoint" in message and "weights_only" not in message


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("resize", ["0", "100000", "pad:0"])
def test_bad_resize_is_refused_before_any_file_is_read(tmp_path, resize):
    broken_zip = tmp_path / "data.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")  # reading it would give another error
    message = run("extract", broken_zip, "--resize", resize, "--cache", tmp_path / "c.h5", *FAST[2:], code=2)
    assert "from 8 to 2048 pixels" in message


@pytest.mark.parametrize("resize", ["auto", "64"])
def test_unknown_backbone_is_refused_before_any_file_is_read(tmp_path, resize):
    broken_zip = tmp_path / "data.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")  # reading it would give another error
    message = run("extract", broken_zip, "--backbone", "nosuch:net", "--resize", resize,
                  "--cache", tmp_path / "c.h5", *FAST[2:], code=2)
    assert "unknown backbone 'nosuch:net'" in message


# --------------------------------------------------------------------------- atomic rewrites


def test_injected_failure_mid_rewrite_leaves_the_previous_table(tmp_path, monkeypatch):
    data = write_tree(tmp_path / "data", layout_files(LAYOUT))
    cache = tmp_path / "data.h5"
    run("extract", data, "--cache", cache, *FAST)
    before = Store(cache).images()
    real_create = h5py.Group.create_dataset
    calls = []

    def failing_create(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full (injected)")
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    (data / "train/REAL/new.jpg").write_bytes(GOOD)
    with pytest.raises(OSError, match="injected"):
        with Store(cache).writer() as writer:
            writer.write_images(discover(data, progress=False))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(Store(cache).images(), before)
    assert_intact(cache, sum(LAYOUT.values()))


KILL_LOOP = textwrap.dedent("""
    import sys
    import pandas as pd
    from fakedet.store import Store
    frames = [pd.read_pickle(sys.argv[2]), pd.read_pickle(sys.argv[3])]
    with Store(sys.argv[1]).writer() as writer:
        for i in range(100000):
            writer.write_images(frames[i % 2])
            writer.add_failures(frames[i % 2].assign(reason="r%d" % i).head(1 + i % 3))
            print(i, flush=True)
""")


def test_killed_table_rewrites_leave_a_readable_store(tmp_path):
    """SIGKILL a process that rewrites the image and failure tables in a loop, at several points."""
    small = discover(write_tree(tmp_path / "a", layout_files({"real": 3, "fake": 2})), progress=False)
    big = discover(write_tree(tmp_path / "b", layout_files(LAYOUT)), progress=False)
    small.to_pickle(tmp_path / "small.pkl")
    big.to_pickle(tmp_path / "big.pkl")
    cache = tmp_path / "kill.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    for kill_after in (1, 7, 20, 33):
        child = subprocess.Popen([sys.executable, "-c", KILL_LOOP, cache, tmp_path / "small.pkl", tmp_path / "big.pkl"],
                                 stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(kill_after):  # wait on the condition: this many committed rewrites
            assert child.stdout.readline(), "the writer stopped early"
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        images = Store(cache).images()
        assert any(images.equals(frame) for frame in (small, big))
        assert len(Store(cache).failures()) >= 1
        with Store(cache).writer():  # a writer finishes or drops a half-done swap
            pass
        assert Store(cache).images().equals(images)


# --------------------------------------------------------------------------- workers


WORKER = textwrap.dedent("""
    import multiprocessing, os, threading
    from fakedet.embedding import worker_init

    def child():
        worker_init(0)
        print(os.getpid(), flush=True)  # only once the worker is set up: the test kills the parent then
        threading.Event().wait()  # blocks until killed

    if __name__ == "__main__":
        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        threading.Event().wait()
""")


def test_a_worker_exits_with_its_parent(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True, env=env)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    parent.stdout.close()

    def alive() -> bool:
        try:
            state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")

    deadline = time.monotonic() + 30  # bounded poll of the condition "the worker is gone"
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    alive_after = alive()
    if alive_after:
        os.kill(worker, signal.SIGKILL)
    assert not alive_after
