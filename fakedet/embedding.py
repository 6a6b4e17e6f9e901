"""The one embedding path: reader -> model -> writer, with timings.

DataLoader workers read and decode images (``ImageBatches``) and apply the backbone's
preprocessing; the model maps each uint8 batch to features on its device; a writer receives
``(ids, X)`` per batch: the store (``extract``), or memory (``embed_in_memory``: loose files,
the fine-tuning probe and validation). Time waiting for data, in the model and in writing are
measured apart. ``LooseFiles`` lets single image files take the same path.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .datasets import ImageSource
from .decoding import ImageDecodeError, decode_image

Forward = Callable[[torch.Tensor], np.ndarray]  # uint8 batch (B, 3, H, W) -> float32 (B, D)
Writer = Callable[[np.ndarray, np.ndarray], None]  # (ids, X) of one batch
PR_SET_PDEATHSIG = 1


class LooseFiles:
    """A source of single image files: ``read(path)`` reads the file itself (ids = paths)."""

    name = root = "loose files"

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()


class ImageBatches(Dataset):
    """Reads, decodes, transforms (perturbation / augmentation) and preprocesses images by (id, path);
    failures become reasons. ``transform(image, image_id)`` may draw per image from the id."""

    def __init__(self, source: ImageSource | LooseFiles, items: pd.DataFrame, preprocess: Callable,
                 transform: Callable | None = None):
        self.source, self.preprocess, self.transform = source, preprocess, transform
        self.ids = items["id"].to_numpy()
        self.paths = items["path"].to_numpy()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        try:
            image = decode_image(self.source.read(self.paths[i]))
            if self.transform is not None:
                image = self.transform(image, self.ids[i])
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


def image_loader(source, items: pd.DataFrame, preprocess: Callable, *, batch_size: int = 64,
                 workers: int | None = None, transform: Callable | None = None, seed: int | None = None,
                 pin_memory: bool = False) -> DataLoader:
    """Batches ``(ids, uint8 tensor or None, [(id, reason)])`` of ``items``; shuffled, dropping the
    last partial batch, when ``seed`` is given (training)."""
    workers = default_workers() if workers is None else workers
    shuffle = seed is not None
    return DataLoader(
        ImageBatches(source, items, preprocess, transform), batch_size=batch_size, shuffle=shuffle,
        drop_last=shuffle and len(items) > batch_size, collate_fn=collate, num_workers=workers,
        generator=torch.Generator().manual_seed(seed) if shuffle else None, pin_memory=pin_memory,
        worker_init_fn=worker_init if workers else None, prefetch_factor=4 if workers else None,
    )


def run_batches(loader: DataLoader, forward: Forward, write: Writer, *, total: int, desc: str = "embed",
                progress: bool = True) -> tuple[list[tuple[str, str]], dict]:
    """Every batch of ``loader`` through ``forward`` into ``write``. Returns (failures, seconds)."""
    seconds = {"read": 0.0, "model": 0.0, "write": 0.0}
    failed: list[tuple[str, str]] = []
    if total == 0:
        return failed, seconds
    bar = tqdm(total=total, unit="img", desc=desc, disable=not progress, smoothing=0.1, leave=False)
    tick = time.perf_counter()
    for ids, tensor, bad in loader:
        t0 = time.perf_counter()
        seconds["read"] += t0 - tick
        failed.extend(bad)
        if ids:
            X = forward(tensor)
            t1 = time.perf_counter()
            seconds["model"] += t1 - t0
            write(np.asarray(ids), X)
            seconds["write"] += time.perf_counter() - t1
        bar.update(len(ids) + len(bad))
        tick = time.perf_counter()
    bar.close()
    return failed, seconds


def embed_in_memory(source, items: pd.DataFrame, preprocess: Callable, forward: Forward, *,
                    batch_size: int = 64, workers: int | None = None, progress: bool = True,
                    desc: str = "embed") -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """(ids, float32 outputs, failures) of ``forward`` over ``items``; unreadable images are left out."""
    ids: list[np.ndarray] = []
    out: list[np.ndarray] = []

    def keep(batch_ids: np.ndarray, X: np.ndarray) -> None:
        ids.append(batch_ids)
        out.append(np.asarray(X, dtype=np.float32))

    loader = image_loader(source, items, preprocess, batch_size=batch_size, workers=workers)
    failed, _ = run_batches(loader, forward, keep, total=len(items), desc=desc, progress=progress)
    if not out:
        return np.zeros(0, dtype=str), np.zeros((0, 0), np.float32), failed
    return np.concatenate(ids), np.concatenate(out), failed
