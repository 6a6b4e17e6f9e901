"""``extract``: run a backbone over a dataset once, writing embeddings to the store batch by batch.

The embedding path of ``fakedet.embedding`` (workers read and decode, the backbone embeds, the
store appends each batch, with timings). Re-running skips content ids that are already
embedded, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .backbone_config import BackboneConfig
from .backbones import Backbone, create_backbone, resolve_spec
from .datasets import discover, open_source, printable
from .embedding import image_loader, run_batches
from .perturb import Perturbation
from .runtimes import describe, use_runtime
from .store import Store, store_path

if TYPE_CHECKING:
    from .ray_engine import RayEngine


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
    note: str = ""  # settings chosen from the data, e.g. the resize
    bytes_per_image: int = 0
    runtime: str = "torch"  # engine, precision and why (``runtimes.describe``)

    @property
    def images_per_second(self) -> float:
        return self.n_embedded / max(self.seconds.get("total", 0.0), 1e-9)

    def summary(self) -> str:
        s = self.seconds
        lines = [
            f"cache: {self.store}  (set {self.key}, {self.bytes_per_image:,} bytes per image)",
            *([f"chosen: {self.note}"] if self.note else []),
            f"images: {self.n_images} files, {self.n_unique} distinct, "
            f"{self.n_cached_before} already cached, {self.n_embedded} embedded now, {len(self.failures)} skipped",
        ]
        if self.n_embedded:
            lines.append(f"runtime: {self.runtime}")
            lines.append(
                f"time: {s['total']:.1f}s ({self.images_per_second:.0f} img/s): waiting for data {s['read']:.1f}s, "
                f"model {s['model']:.1f}s, writing {s['write']:.1f}s"
                + (f", Ray start-up {s['startup']:.1f}s" if "startup" in s else "")
            )
        if len(self.failures):
            for reason, n in Counter(self.failures["reason"]).most_common(5):
                lines.append(f"  skipped {n}: {reason}")
            lines.append("  (list them with `fakedet info --failures`)")
        return "\n".join(lines)


def extract(
    source: str | Path,
    backbone: str | BackboneConfig | Backbone = "effnet-lite0",
    *,
    cache: str | Path | None = None,
    checkpoint: str | Path | None = None,
    layers: str = "final",
    resize: str | int | None = "backbone",
    interpolation: str | None = None,
    scales: str | None = None,
    precision: str = "auto",
    tta: str = "none",
    device: str = "auto",
    runtime: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    dtype: str = "float32",
    perturb: Perturbation | None = None,
    frame: pd.DataFrame | None = None,
    engine: "RayEngine | None" = None,
    progress: bool = True,
) -> ExtractResult:
    """Embed every readable image of ``source`` (any ``open_source`` location) into the cache; resumable.

    ``backbone``: a ready ``Backbone``, a ``BackboneConfig``, or a spec with the settings as
    keywords (``checkpoint`` ... ``precision``, as for ``create_backbone``).

    ``frame``: embed only these rows of ``source`` (as from ``discover``), merged into the store's
    image table; by default the whole source is discovered and its table replaces the stored one.
    ``runtime``: see ``fakedet.runtimes`` (default ``$FAKEDET_RUNTIME`` or ``auto``); the ONNX file and
    the measurements are cached next to the store.
    ``engine``: None embeds here (DataLoader workers); a ``fakedet.ray_engine.RayEngine`` embeds on Ray
    (torch in each actor), with the same store, ids, failures and resume semantics.
    """
    start = time.perf_counter()
    src = open_source(source)
    note = ""
    if isinstance(backbone, Backbone):
        precision = backbone.precision  # a built backbone keeps its precision whatever the runtime
    else:  # options are checked (BackboneConfig) before any file is read
        config = backbone if isinstance(backbone, BackboneConfig) else BackboneConfig(
            spec=backbone, checkpoint=checkpoint, layers=layers, resize="backbone" if resize is None else str(resize),
            interpolation=interpolation, scales=scales, precision=precision, tta=tta)
        precision = config.precision  # "auto" lets the runtime choice pick it
        tuned = config.resize == "auto" and resolve_spec(config, cache)[1] == "finetuned"
        if tuned:  # a fine-tuned backbone is embedded at the size it was trained at, not one chosen from the images
            config = config.replace(resize="backbone")
        if config.resize != "auto":  # the backbone too: a bad spec or checkpoint fails before the files are read
            backbone = create_backbone(config, device=device, cache=cache)
        if tuned:
            note = f"resize {backbone.preprocess.size} (the size {config.spec} was fine-tuned at)"
    full = frame is None
    if full:
        frame = discover(src, progress=progress)
    if not isinstance(backbone, Backbone):  # resize 'auto' is chosen from the images' sizes
        readable = frame[frame["error"] == ""]
        config, note = config.for_images(readable["width"], readable["height"])
        backbone = create_backbone(config, device=device, cache=cache)
    store = Store(store_path(src.name, cache))
    if engine is not None and runtime not in (None, "auto", "torch"):
        raise ValueError(f"--engine ray runs torch in its actors; --runtime {runtime} works with the local engine")
    use_runtime(backbone, "torch" if engine is not None else runtime, store.path.parent, precision=precision,
                batch_size=batch_size)
    key = backbone.key + (f"+{perturb.name}" if perturb else "")
    attrs = {
        "spec": backbone.spec,
        "fingerprint": backbone.fingerprint,
        "identity": backbone.identity,
        "config": backbone.config.to_dict(),
        "preprocess": str(backbone.preprocess),
        "perturb": perturb.name if perturb else "",
        "runtime": backbone.runtime,
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
        if engine is None:
            loader = image_loader(src, todo, backbone.preprocess, batch_size=batch_size, workers=workers,
                                  transform=perturb, pin_memory=backbone.device.type == "cuda")
            failed, seconds = run_batches(
                loader, backbone.embed, lambda ids, X: out.append(ids, X.astype(out.group["X"].dtype, copy=False)),
                total=len(todo), desc=f"extract {backbone.key}", progress=progress)
        else:
            failed, seconds = engine.run(backbone, src, todo, out, batch_size, perturb, progress)
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
        note=note, bytes_per_image=backbone.dim * np.dtype(dtype).itemsize, runtime=describe(backbone),
    )
