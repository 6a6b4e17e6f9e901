"""Extraction: embeddings for every readable image, corrupt files recorded, resume after a real kill."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import bomb_png, encode_image, layout_files, make_image, truncated_jpeg, write_tree, write_zip

from fakedet.backbones import create_backbone
from fakedet.datasets import discover
from fakedet.extract import extract
from fakedet.store import Store, StoreLocked

FAST = {"resize": "64", "precision": "fp32", "device": "cpu", "workers": 0, "progress": False}


def with_bad_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {
        **files,
        "train/REAL/empty.jpg": b"",
        "train/REAL/text.jpg": b"this is not an image",
        "train/FAKE/truncated.jpg": truncated_jpeg(),
        "train/FAKE/bomb.png": bomb_png(20000, 20000),
        "train/FAKE/copy.jpg": files["train/FAKE/0000.jpg"],  # duplicate content, embedded once
    }


@pytest.mark.parametrize("container", ["folder", "zip"])
def test_extract_embeds_readable_and_records_corrupt(tmp_path, container):
    files = with_bad_files(layout_files({"train/REAL": 4, "train/FAKE": 4}))
    data = write_tree(tmp_path / "data", files) if container == "folder" else write_zip(tmp_path / "data.zip", files)
    result = extract(data, "effnet-lite0", cache=tmp_path / "cache", batch_size=3, **FAST)
    assert result.store == tmp_path / "cache" / "data.h5"
    assert (result.n_images, result.n_unique, result.n_embedded) == (13, 12, 8)
    reasons = dict(zip(result.failures["path"], result.failures["reason"]))
    assert set(reasons) == {"train/REAL/empty.jpg", "train/REAL/text.jpg", "train/FAKE/truncated.jpg",
                            "train/FAKE/bomb.png"}
    assert "empty" in reasons["train/REAL/empty.jpg"] and "bomb" in reasons["train/FAKE/bomb.png"]
    assert "truncat" in reasons["train/FAKE/truncated.jpg"]
    emb = Store(result.store).load(result.key)
    assert emb.X.shape == (8, 1280) and len(set(emb.frame["id"])) == 8
    assert sorted(emb.frame["label"].tolist()) == [0] * 4 + [1] * 4
    assert emb.frame.set_index("path").loc["train/FAKE/0000.jpg", "n_copies"] == 2
    assert "8 embedded now, 4 skipped" in result.summary()
    again = extract(data, "effnet-lite0", cache=tmp_path / "cache", **FAST)
    assert (again.n_cached_before, again.n_embedded) == (8, 0)
    assert len(Store(result.store).load(result.key).X) == 8


def test_embeddings_match_the_backbone_directly(tmp_path):
    data = write_tree(tmp_path / "d", layout_files({"real": 3, "fake": 3}))
    result = extract(data, "effnet-lite0", cache=tmp_path, batch_size=4, **FAST)
    emb = Store(result.store).load(result.key)
    backbone = create_backbone("effnet-lite0", resize="64", precision="fp32", device="cpu")
    from PIL import Image
    images = [Image.open(data / p).convert("RGB") for p in emb.frame["path"]]
    np.testing.assert_allclose(emb.X, backbone.embed_images(images), atol=1e-4)


def test_tiny_clip_extraction_and_float16(tmp_path, tiny_clip):
    torch.manual_seed(0)
    data = write_tree(tmp_path / "d", layout_files({"real": 3, "fake": 3}))
    backbone = create_backbone(f"clip:{tiny_clip}:random", precision="fp32", device="cpu")
    result = extract(data, backbone, cache=tmp_path, dtype="float16", workers=0, progress=False)
    emb = Store(result.store).load(result.key)
    assert emb.X.shape == (6, 32) and Store(result.store).embedding_sets().loc[0, "dtype"] == "float16"
    assert len(np.unique(emb.X.round(3), axis=0)) == 6


def test_worker_processes_give_the_same_numbers(tmp_path):
    data = write_zip(tmp_path / "d.zip", layout_files({"real": 5, "fake": 5}))
    one = extract(data, "effnet-lite0", cache=tmp_path / "a", batch_size=4, **FAST)
    two = extract(data, "effnet-lite0", cache=tmp_path / "b", batch_size=4, **{**FAST, "workers": 2})
    a, b = Store(one.store).load(one.key), Store(two.store).load(two.key)
    assert a.frame["id"].tolist() == b.frame["id"].tolist()
    np.testing.assert_array_equal(a.X, b.X)


def test_concurrent_writer_is_refused(tmp_path):
    data = write_tree(tmp_path / "d", layout_files({"real": 2}))
    with Store(tmp_path / "d.h5").writer():
        with pytest.raises(StoreLocked):
            extract(data, "effnet-lite0", cache=tmp_path, **FAST)


BLOCKING_CLI = Path(__file__).with_name("blocking_cli.py")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``path`` exists (the process reached its stop point); fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "extraction did not reach its stop point in time"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_kill(tmp_path, sig):
    """Stop a running `fakedet extract` for real after two batches; the rerun completes with no
    duplicates or gaps. The process blocks in its third batch until signalled, so timing cannot
    change the outcome."""
    files = {f"{label}/{i:04d}.png": encode_image(make_image(kind, 32, seed=i), "PNG")
             for label, kind in (("real", "smooth"), ("fake", "checker")) for i in range(150)}
    data = write_tree(tmp_path / "d", files)
    store_file = tmp_path / "cache" / "d.h5"
    args = ["extract", str(data), "--cache", str(tmp_path / "cache"), "--preset", "fast", "--batch-size", "8",
            "--precision", "fp32", "--device", "cpu", "--workers", "1", "--quiet"]
    marker = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(BLOCKING_CLI), str(marker), "2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    kept = Store(store_file).load("effnet-lite0")
    assert len(kept.X) == 16 and kept.frame["id"].is_unique  # exactly the two finished batches
    rerun = subprocess.run([sys.executable, "-m", "fakedet.cli", *args], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "16 already cached, 284 embedded now" in rerun.stdout
    final = Store(store_file).load("effnet-lite0")
    assert sorted(final.frame["id"]) == sorted(discover(data, progress=False)["id"])
    assert final.frame["id"].is_unique and len(final.X) == 300
    # rows written before the stop are unchanged by the rerun
    before = dict(zip(kept.frame["id"], kept.X))
    after = dict(zip(final.frame["id"], final.X))
    np.testing.assert_array_equal(np.stack([before[k] for k in before]), np.stack([after[k] for k in before]))


def test_cli_extract_defaults_and_info(tmp_path):
    """No feature options: the best preset, every block at two scales, 32 px images upsampled to 128."""
    data = write_tree(tmp_path / "d", with_bad_files(layout_files({"train/REAL": 2, "train/FAKE": 2})))
    from click.testing import CliRunner

    from fakedet.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["extract", str(data), "--cache", str(tmp_path / "c"), "--device", "cpu",
                              "--workers", "0", "-q"])
    assert out.exit_code == 0, out.output
    assert f"cache: {tmp_path / 'c' / 'd.h5'}" in out.output and "4 skipped" in out.output
    assert "chosen: resize resize:128 (from the images' median short side, 32 px)" in out.output
    [row] = Store(tmp_path / "c" / "d.h5").embedding_sets().to_dict("records")
    assert (row["layers"], row["size"], row["scales"]) == ("blocks", 128, "1,0.5")
    assert f"{row['dim'] * 4:,} bytes per image" in out.output
    info = runner.invoke(cli, ["info", "--cache", str(tmp_path / "c"), "--failures"])
    assert info.exit_code == 0 and "effnet-lite0" in info.output and "failures: 4" in info.output
    assert "train/REAL/empty.jpg" in info.output
    os.chmod(data / "train/REAL/0000.jpg", 0o644)


def test_subset_merges_into_the_image_table(tmp_path):
    data = write_tree(tmp_path / "d", layout_files({"real": 3, "fake": 3}))
    frame = discover(data, progress=False)
    extract(data, "effnet-lite0", cache=tmp_path, **FAST)
    result = extract(data, "effnet-lite0", cache=tmp_path, frame=frame.iloc[:2], **{**FAST, "resize": "32"})
    store = Store(result.store)
    assert len(store.images()) == 6  # the subset did not replace the table
    assert len(store.load(result.key).X) == 2
