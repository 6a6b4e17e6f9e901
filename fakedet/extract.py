"""``extract``: run a backbone over a dataset once, writing embeddings to the store batch by batch.

Data flows one way, as in a reader -> mapper -> writer pipeline: DataLoader workers read and
decode images (``ImageBatches``), the backbone embeds them, the store appends them. Time spent
waiting for data, in the model and in writing is measured separately and reported. Re-running
skips content ids that are already embedded, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .backbones import Backbone, Preprocess, create_backbone
from .datasets import ImageDecodeError, ImageSource, decode_image, discover, open_source, printable
from .perturb import Perturbation
from .store import Store, store_path

PR_SET_PDEATHSIG = 1


@dataclass
class ExtractResult:
    """What an extraction did: where, which set, how many, how long, what failed."""

    store: Path
    key: str
    n_images: int
    n_unique: int
    n_cached_before: int
    n_embedded: int
    failures: pd.DataFrame
    seconds: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.n_embedded / max(self.seconds.get("total", 0.0), 1e-9)

    def summary(self) -> str:
        s = self.seconds
        lines = [
            f"cache: {self.store}  (set {self.key})",
            f"images: {self.n_images} files, {self.n_unique} distinct, "
            f"{self.n_cached_before} already cached, {self.n_embedded} embedded now, {len(self.failures)} skipped",
        ]
        if self.n_embedded:
            lines.append(
                f"time: {s['total']:.1f}s ({self.images_per_second:.0f} img/s): waiting for data {s['read']:.1f}s, "
                f"model {s['model']:.1f}s, writing {s['write']:.1f}s"
            )
        if len(self.failures):
            for reason, n in Counter(self.failures["reason"]).most_common(5):
                lines.append(f"  skipped {n}: {reason}")
            lines.append("  (list them with `fakedet info --failures`)")
        return "\n".join(lines)


class ImageBatches(Dataset):
    """Reads, decodes, perturbs and preprocesses images by (id, path); failures become reasons."""

    def __init__(self, source: ImageSource, items: pd.DataFrame, preprocess: Preprocess,
                 perturb: Perturbation | None = None):
        self.source, self.preprocess, self.perturb = source, preprocess, perturb
        self.ids = items["id"].to_numpy()
        self.paths = items["path"].to_numpy()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        try:
            image = decode_image(self.source.read(self.paths[i]))
            if self.perturb is not None:
                image = self.perturb(image)
            return self.ids[i], self.preprocess(image), ""
        except ImageDecodeError as err:
            return self.ids[i], None, str(err)
        except OSError as err:
            return self.ids[i], None, f"read error: {err}"


def collate(items):
    """Stack the decodable images; keep (id, reason) for the rest."""
    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, r) for i, _, r in items if r]
    tensor = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensor, bad


def worker_init(_: int) -> None:
    """DataLoader workers decode images; one torch thread each keeps them off the model's cores. On Linux
    the kernel kills a worker as soon as its parent dies (torch's own check takes up to 5 s)."""
    torch.set_num_threads(1)
    exit_with_parent()


def exit_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); no-op elsewhere."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def default_workers() -> int:
    """One decoding worker per spare core, at least one, at most four."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def extract(
    source: str | Path,
    backbone: str | Backbone = "effnet-lite0",
    *,
    cache: str | Path | None = None,
    checkpoint: str | Path | None = None,
    layers: str = "final",
    resize: str | int | None = "backbone",
    interpolation: str | None = None,
    scales: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    dtype: str = "float32",
    perturb: Perturbation | None = None,
    frame: pd.DataFrame | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Embed every readable image of ``source`` (folder, zip or file) into the cache; resumable.

    ``frame``: embed only these rows of ``source`` (as from ``discover``), merged into the store's
    image table; by default the whole source is discovered and its table replaces the stored one.
    """
    start = time.perf_counter()
    src = open_source(source)
    if not isinstance(backbone, Backbone):  # first: bad options fail before any file is read
        backbone = create_backbone(
            backbone, checkpoint=checkpoint, layers=layers, resize=resize,
            interpolation=interpolation, scales=scales, precision=precision, device=device,
        )
    full = frame is None
    if full:
        frame = discover(source, progress=progress)
    key = backbone.key + (f"+{perturb.name}" if perturb else "")
    store = Store(store_path(src.name, cache))
    attrs = {
        "spec": backbone.spec,
        "fingerprint": backbone.fingerprint,
        "identity": backbone.identity,
        "preprocess": str(backbone.preprocess),
        "perturb": perturb.name if perturb else "",
    }
    with store.writer(source=printable(src.root)) as writer:
        writer.write_images(frame, replace=full)
        header_failures = frame.loc[frame["error"] != "", ["id", "path", "error"]].rename(columns={"error": "reason"})
        if len(header_failures):
            writer.add_failures(header_failures)
        out = writer.open_set(key, attrs, backbone.dim, dtype)
        done = set(out.ids())
        readable = frame[frame["error"] == ""].drop_duplicates("id").sort_values("path")
        todo = readable[~readable["id"].isin(done)]
        n_cached = len(readable) - len(todo)
        failed, seconds = _run(backbone, src, todo, out, batch_size, workers, perturb, progress)
        if failed:
            failures = pd.DataFrame(failed, columns=["id", "reason"])
            failures["path"] = failures["id"].map(todo.set_index("id")["path"])
            writer.add_failures(failures)
    all_failures = store.failures()
    all_failures = all_failures[all_failures["id"].isin(frame["id"])].reset_index(drop=True)
    seconds["total"] = time.perf_counter() - start
    return ExtractResult(
        store=store.path, key=key, n_images=len(frame), n_unique=frame["id"].nunique(),
        n_cached_before=n_cached, n_embedded=len(todo) - len(failed), failures=all_failures, seconds=seconds,
    )


def _run(backbone: Backbone, src: ImageSource, todo: pd.DataFrame, out, batch_size: int,
         workers: int | None, perturb: Perturbation | None, progress: bool):
    """The loop: batches from workers -> model -> committed appends. Returns (failures, seconds)."""
    seconds = {"read": 0.0, "model": 0.0, "write": 0.0}
    failed: list[tuple[str, str]] = []
    if todo.empty:
        return failed, seconds
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        ImageBatches(src, todo, backbone.preprocess, perturb),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=backbone.device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    bar = tqdm(total=len(todo), unit="img", desc=f"extract {backbone.key}", disable=not progress, smoothing=0.1)
    tick = time.perf_counter()
    for ids, tensor, bad in loader:
        t0 = time.perf_counter()
        seconds["read"] += t0 - tick
        failed.extend(bad)
        if ids:
            X = backbone.embed(tensor)
            t1 = time.perf_counter()
            seconds["model"] += t1 - t0
            out.append(np.asarray(ids), X.astype(out.group["X"].dtype, copy=False))
            seconds["write"] += time.perf_counter() - t1
        bar.update(len(ids) + len(bad))
        tick = time.perf_counter()
    bar.close()
    return failed, seconds

