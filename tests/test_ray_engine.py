"""The Ray engine on a local Ray instance (2 CPUs, 127.0.0.1) started inside the tests: the same store
as the local engine, a killed worker retried, a killed driver resumed exactly; bad engine input."""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import encode_image, make_image, write_tree, write_zip
from shards import write_shards
from test_extract import BLOCKING_CLI, wait_for

from fakedet.cli import cli
from fakedet.datasets import ImageSource, discover
from fakedet.extract import extract
from fakedet.store import Store

ray = pytest.importorskip("ray")
from fakedet.ray_engine import RayEngine  # noqa: E402

FAST = {"resize": "64", "precision": "fp32", "device": "cpu", "workers": 0, "progress": False}
CLI_FAST = ["--preset", "fast", "--resize", "64", "--precision", "fp32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for this module; yields its address for drivers in other processes. Its
    workers run at the tests' priority: Ray's default (nice 15) starved them for minutes beside a
    2-thread job at normal priority, which the rows-written timeouts below cannot wait out."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning",
                       _system_config={"worker_niceness": 0})
    yield context.address_info["gcs_address"]
    ray.shutdown()


def same_store(a: Path, b: Path, key: str) -> None:
    """Identical ids and failures, embeddings equal within float tolerance, same fingerprint."""
    sa, sb = Store(a), Store(b)
    ea, eb = sa.load(key), sb.load(key)
    assert ea.fingerprint == eb.fingerprint and eb.frame["id"].is_unique
    assert sorted(ea.frame["id"]) == sorted(eb.frame["id"])
    xa, xb = dict(zip(ea.frame["id"], ea.X)), dict(zip(eb.frame["id"], eb.X))
    np.testing.assert_allclose(np.stack([xb[k] for k in xa]), np.stack(list(xa.values())), atol=1e-4)
    fa, fb = (s.failures().sort_values("id", ignore_index=True) for s in (sa, sb))
    assert fa.equals(fb)


def test_decoding_tasks_reuse_the_open_archive_of_their_process(tmp_path):
    """Each Ray task gets a freshly unpickled source; the worker process keeps the first, so a zip's table
    of contents is read once per process, not once per batch."""
    from fakedet.image_input import Preprocess
    from fakedet.ray_engine import decode_batch

    files = {f"real/{i}.png": encode_image(make_image("smooth", 16, seed=i), "PNG") for i in range(4)}
    zipped = write_zip(tmp_path / "d.zip", files)
    preprocess = Preprocess(size=16, policy="resize")
    first, second = (pickle.loads(pickle.dumps(ImageSource(zipped))) for _ in range(2))
    for source in (first, second):
        out = decode_batch({"id": np.array(["a", "b"]), "path": np.array(["real/0.png", "real/1.png"])}, source,
                           preprocess, None, (3, 16, 16))
        assert list(out["reason"]) == ["", ""] and out["pixels"].any()
    assert first._zip is not None and second._zip is None     # the second task read through the first's archive


@pytest.mark.ray
def test_ray_engine_writes_the_same_store_as_the_local_engine(tmp_path, cluster):
    data = write_shards(tmp_path / "shards")  # bad files, a bad label, an empty and a 0-byte shard
    local = extract(data, "effnet-lite0", cache=tmp_path / "local", batch_size=3, **FAST)
    remote = extract(data, "effnet-lite0", cache=tmp_path / "ray", batch_size=3, engine=RayEngine(), **FAST)
    assert remote.key == local.key and len(local.failures) == 3
    assert (remote.n_embedded, len(remote.failures)) == (local.n_embedded, len(local.failures))
    same_store(local.store, remote.store, local.key)
    again = extract(data, "effnet-lite0", cache=tmp_path / "ray", engine=RayEngine(), **FAST)
    assert (again.n_cached_before, again.n_embedded) == (local.n_embedded, 0)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """400 small images and their store from the local engine, the reference for the kill tests."""
    root = tmp_path_factory.mktemp("ray-kill")
    files = {f"{label}/{i:04d}.png": encode_image(make_image(kind, 32, seed=i), "PNG")
             for label, kind in (("real", "smooth"), ("fake", "checker")) for i in range(200)}
    data = write_tree(root / "d", files)
    local = extract(data, "effnet-lite0", cache=root / "local", batch_size=8, **FAST)
    return SimpleNamespace(root=root, data=data, local=local)


def wait_for_rows(path: Path, minimum: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Until the store at ``path`` has committed ``minimum`` embeddings; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                sets = Store(path).embedding_sets()
            except Exception:  # the writer may be creating the file right now
                sets = None
            if sets is not None and len(sets) and sets.loc[0, "count"] >= minimum:
                return int(sets.loc[0, "count"])
        time.sleep(0.05)
    raise AssertionError("extraction did not start in time")


def ray_driver_running(data: Path, cache: Path, address: str) -> tuple[subprocess.Popen, Path]:
    """`fakedet extract --engine ray` in another process, joined to ``address``, once it has committed a batch."""
    args = ["extract", str(data), "--cache", str(cache), "--engine", "ray", "--address", address,
            "--batch-size", "8", *CLI_FAST]
    proc = subprocess.Popen([sys.executable, "-m", "fakedet.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    store_file = cache / f"{data.name}.h5"
    wait_for_rows(store_file, 8, proc, timeout=240)
    return proc, store_file


def embedder_pids() -> list[int]:
    """Processes of Ray Data actors running the Embedder (Ray names them in their process title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("ray::") and "Embedder" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_ray_worker_is_retried(big, cluster, tmp_path):
    proc, store_file = ray_driver_running(big.data, tmp_path, cluster)
    pids = embedder_pids()
    assert pids and proc.poll() is None, "the embedding actor should be running mid-run"
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "400 embedded now" in out
    same_store(big.local.store, store_file, big.local.key)


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_driver_loses_only_uncommitted_batches(big, cluster, tmp_path):
    """The driver blocks while writing its third batch and is killed there: two batches are kept."""
    marker = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(BLOCKING_CLI), "--writes", str(marker), "2", "extract",
                             str(big.data), "--cache", str(tmp_path), "--engine", "ray", "--address", cluster,
                             "--batch-size", "8", *CLI_FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(marker, proc)
    proc.kill()
    proc.communicate(timeout=60)
    store_file = tmp_path / f"{big.data.name}.h5"
    kept = Store(store_file).load(big.local.key)
    assert len(kept.X) == 16 and kept.frame["id"].is_unique
    rerun = extract(big.data, "effnet-lite0", cache=tmp_path, batch_size=8, engine=RayEngine(), **FAST)
    assert (rerun.n_cached_before, rerun.n_embedded) == (len(kept.X), 400 - len(kept.X))
    final = Store(store_file).load(big.local.key)
    assert sorted(final.frame["id"]) == sorted(discover(big.data, progress=False)["id"])
    same_store(big.local.store, store_file, big.local.key)
    before, after = dict(zip(kept.frame["id"], kept.X)), dict(zip(final.frame["id"], final.X))
    np.testing.assert_array_equal(np.stack(list(before.values())), np.stack([after[k] for k in before]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_unreachable_address_fails_fast_and_writes_nothing(tmp_path, address):
    data = write_tree(tmp_path / "d", {"real/a.png": encode_image(make_image("smooth", 32), "PNG")})
    start = time.monotonic()
    out = CliRunner().invoke(cli, ["extract", str(data), "--cache", str(tmp_path / "c"), "--engine", "ray",
                                   "--address", address.format(port=free_port()), "-q"])
    assert out.exit_code == 2 and "cannot reach Ray at" in out.output and "ray start --head" in out.output
    assert time.monotonic() - start < 30 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "spark"], "'spark' is not one of 'local', 'ray'"),
    (["--address", "auto"], "--address needs --engine ray"),
    (["--engine", "ray", "--num-workers", "0"], "0 is not in the range x>=1"),
    (["--engine", "ray", "--address", "nowhere"], "use auto, ray://HOST:PORT or HOST:PORT"),
])
def test_bad_engine_options_exit_2(tmp_path, args, message):
    data = write_tree(tmp_path / "d", {"real/a.png": encode_image(make_image("smooth", 32), "PNG")})
    out = CliRunner().invoke(cli, ["extract", str(data), "--cache", str(tmp_path / "c"), *args, "-q"])
    assert out.exit_code == 2 and message in out.output, out.output
    assert not (tmp_path / "c").exists()
