"""The Ray engine of ``extract``: read and decode as Ray tasks on CPUs, embed in an actor pool, write here.

Ray Data streams the images to embed through two stages: ``decode_batch`` tasks (one CPU each)
read, decode and preprocess a batch to uint8 pixels; a pool of ``Embedder`` actors (one model
per actor, loaded once in ``__init__``, ``gpus_per_worker`` GPUs and ``cpus_per_worker`` CPUs
each) turns pixels into embeddings. The driver consumes the stream and appends each batch to the
store through the usual single writer (``StoreWriter`` / ``SetWriter.append``), so everything
``extract`` guarantees holds unchanged: the same store, set key, fingerprint, ids and failure
records as the local engine, a batch committed by the ``count`` attribute, a rerun skipping ids
already embedded. Ray retries a task or restarts an actor whose worker process died (Ray Data
sets ``max_restarts=-1`` and ``max_task_retries=-1`` on the pool); the driver also drops any id
it already wrote, so a retried batch can never be written twice. A killed driver loses only the
batches it had not committed.

Why one writer on the driver, not per-worker shard stores merged at the end (e.g. HDF5 virtual
datasets): the writer is cheap next to the model. Measured on this 2-core machine: appending
batches of 64 float32 1,280-d embeddings to a store takes 4.7 ms a batch (0.07 ms an image,
~13,000 img/s for one writer, while busy with other jobs); the full CIFAKE extraction in
BENCHMARKS.md spent 9.8 s writing against 699 s in the model (1.4%). So one driver-side writer
keeps up with ~100 CPU actors like these or about 5-6 GPUs at ~2,000 img/s each; embeddings
cross the network once either way (5 KB an image). Shard stores would only pay off beyond that,
at the price of a merge step, a second commit protocol for resume, and per-worker files that a
killed run leaves half-written; one writer keeps a single commit point and the exact resume
semantics. Larger clusters than that: run one extraction per part of the data (e.g. a manifest
per part) into separate caches.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from .backbones import Backbone
from .image_input import Preprocess
from .datasets import ImageSource
from .embedding import ImageBatches, run_batches
from .perturb import Perturbation

CONNECT_TIMEOUT = 5.0


class RayEngineError(ValueError):
    """The Ray engine cannot run as asked; the message says what to do."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayEngineError('--engine ray needs Ray: pip install "fakedet[ray]"') from None
    return ray


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds if a ``host:port`` or ``ray://host:port`` address does not answer."""
    if address in (None, "", "local", "auto"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in ("ray", "tcp") or not parsed.hostname or not parsed.port:
        raise RayEngineError(f"Ray address {address!r}: use auto, ray://HOST:PORT or HOST:PORT (or omit --address "
                             "to start a local Ray instance)")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=timeout).close()
    except OSError as err:
        raise RayEngineError(f"cannot reach Ray at {address} ({err}); start the cluster (`ray start --head`), "
                             "check the address, or omit --address to start a local Ray instance") from None


#: this worker process's copy of each source, by (type, root): see ``_opened``
_SOURCES: dict[tuple[str, str], ImageSource] = {}


def _opened(source: ImageSource) -> ImageSource:
    """The first copy of ``source`` this process received. Every decoding task gets a freshly unpickled
    source, which would reopen its archive for each batch (reading the table of contents of CIFAKE's
    100,000-member zip takes 0.6-0.9 s, longer than decoding the batch); Ray runs many tasks in one
    worker process, so keeping the first copy keeps its archive open across them."""
    return _SOURCES.setdefault((type(source).__qualname__, source.root), source)


def decode_batch(batch: dict, source: ImageSource, preprocess: Preprocess, transform: Callable | None,
                 shape: tuple[int, ...]) -> dict:
    """Ray task: the embedding path's reader (``ImageBatches``) over a batch of (id, path), as uint8 pixels;
    failures get a reason."""
    items = ImageBatches(_opened(source), pd.DataFrame({"id": batch["id"], "path": batch["path"]}), preprocess, transform)
    pixels = np.zeros((len(items), *shape), np.uint8)
    reasons = []
    for i in range(len(items)):
        _, tensor, reason = items[i]
        if tensor is not None:
            pixels[i] = tensor.numpy()
        reasons.append(reason)
    return {"id": batch["id"], "pixels": pixels, "reason": np.array(reasons, dtype=object)}


def _spread() -> dict:
    return {"scheduling_strategy": "SPREAD"}


class Embedder:
    """Ray actor: one backbone, loaded once, moved to this actor's GPU when it has one."""

    def __init__(self, backbone: Backbone, threads: int, use_gpu: bool):
        import torch

        torch.set_num_threads(max(1, threads))
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.backbone = replace(backbone, model=backbone.model.to(device), device=device)

    def __call__(self, batch: dict) -> dict:
        import torch

        good = batch["reason"] == ""
        X = np.zeros((len(good), self.backbone.dim), np.float32)
        if good.any():
            X[good] = self.backbone.embed(torch.from_numpy(np.ascontiguousarray(batch["pixels"][good])))
        return {"id": batch["id"], "X": X, "reason": batch["reason"]}


@dataclass
class RayEngine:
    """Where and how wide to run: ``address`` None starts a local Ray instance (``auto`` / ``ray://...`` join one)."""

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise RayEngineError("--num-workers must be >= 1, --gpus-per-worker >= 0, --cpus-per-worker > 0")
        _ray()
        check_address(self.address)

    def _connect(self) -> bool:
        """Start or join Ray unless this process already did; True if this call did (and must shut down)."""
        ray = _ray()
        if ray.is_initialized():
            return False
        quiet = {"include_dashboard": False, "log_to_driver": True, "logging_level": "warning"}
        try:
            if self.address in (None, "", "local"):
                # enough logical CPUs for the actors plus at least one decoding task, so the pipeline cannot stall
                cpus = max(os.cpu_count() or 1, int(np.ceil(self.num_workers * self.cpus_per_worker)) + 1)
                ray.init(num_cpus=cpus, _node_ip_address="127.0.0.1", **quiet)
            else:
                ray.init(address=self.address, **quiet)
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise RayEngineError(f"cannot connect to Ray at {self.address}: {err}; start the cluster "
                                 "(`ray start --head`) or omit --address to start a local Ray instance") from None
        return True

    def run(self, backbone: Backbone, src: ImageSource, todo: pd.DataFrame, out, batch_size: int,
            perturb: Perturbation | None, progress: bool):
        """Embed ``todo`` (id, path) on Ray, appending each batch to ``out`` through the embedding path's
        ``run_batches`` (the stream's batches arrive embedded). Returns (failures, seconds)."""
        if todo.empty:
            return [], {"read": 0.0, "model": 0.0, "write": 0.0}
        tick = time.perf_counter()
        started = self._connect()
        ray = _ray()
        try:
            ds = self._pipeline(ray, backbone, src, todo, batch_size, perturb)
            startup = time.perf_counter() - tick
            # "read" is then the wait on the stream: decoding and embedding overlap on the cluster
            failed, seconds = run_batches(
                _embedded(ds, set(out.ids())), np.asarray,
                lambda ids, X: out.append(ids, X.astype(out.group["X"].dtype, copy=False)),
                total=len(todo), desc=f"extract {backbone.key} (ray)", progress=progress)
        finally:
            if started:
                ray.shutdown()
        return failed, {**seconds, "startup": startup}

    def _pipeline(self, ray, backbone: Backbone, src: ImageSource, todo: pd.DataFrame, batch_size: int,
                  perturb: Perturbation | None):
        """The Ray Data stream: decoding tasks, then the actor pool; batches of id, X, reason."""
        from PIL import Image

        shape = tuple(backbone.preprocess(Image.new("RGB", (64, 64))).shape)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        items = [{"id": i, "path": p} for i, p in zip(todo["id"], todo["path"])]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))
        # decoding tasks spread over the nodes; remote args given by a function keep Ray Data from fusing
        # them into the actors, so CPUs decode the next batches while the actors embed
        with warnings.catch_warnings():  # ray_remote_args_fn: deprecated in Ray 2.60, removed in 2.64
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                                ray_remote_args_fn=_spread,
                                fn_kwargs={"source": src, "preprocess": backbone.preprocess, "transform": perturb,
                                           "shape": shape})
        return ds.map_batches(Embedder, batch_size=batch_size, batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=self.num_workers),
                              num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker or None,
                              fn_constructor_args=(backbone, int(self.cpus_per_worker), self.gpus_per_worker > 0))


def _embedded(ds, written: set) -> Iterator[tuple[list, np.ndarray, list[tuple[str, str]]]]:
    """The stream as the embedding path's batches (ids, X, failures), without ids already written
    (a batch Ray retried after a worker died)."""
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        reasons = batch["reason"]
        good = np.array([not r and i not in written for i, r in zip(batch["id"], reasons)], bool)
        ids = list(batch["id"][good])
        written.update(ids)
        yield ids, batch["X"][good], [(i, r) for i, r in zip(batch["id"], reasons) if r]
