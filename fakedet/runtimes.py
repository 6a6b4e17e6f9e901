"""Which engine runs a backbone's forward pass: ``torch`` (eager), ``compile`` (torch.compile),
``onnx`` (ONNX Runtime, see ``onnx_runtime``) or ``auto`` (the fastest, measured on this machine).

``use_runtime(backbone, runtime, folder)`` gives the backbone a runner with the same contract as
``Backbone.embed`` (uint8 batch -> float32 numpy features). The runtime is not part of the
fingerprint: every runner computes the same numbers as torch at the same precision within
``onnx_runtime.TOLERANCE`` (checked on a probe batch before an ONNX file is used), far below what
tells images apart, so sets and models stay valid whichever engine made them. Precision does
change the numbers and stays in the fingerprint; ``auto`` may pick it only when the precision
asked for is ``auto`` too.

``auto`` times a few batches of each candidate (torch at each precision, onnx at fp32) at the
real input size and batch size, taking turns and keeping each one's fastest batch
(``timing.fastest_rates``: other work on the machine only slows a batch down), and caches the
rates per machine and backbone in ``<cache folder>/runtimes.json`` (shown by ``fakedet info
--runtimes``). ``compile`` is not a candidate: compiling takes about a minute per process on a
2-core CPU, more than it saves on most runs; ask for it by name.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shutil
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .backbone_config import BackboneError
from .backbones import Backbone
from .devices import resolve_precision
from .onnx_runtime import ExportError, load_onnx, onnx_available, require_onnx
from .timing import fastest_rates

RUNTIMES = ("auto", "torch", "compile", "onnx")
MEASURE_FILE = "runtimes.json"


def default_runtime() -> str:
    """``$FAKEDET_RUNTIME`` when set (e.g. ``torch`` in the test suite), else ``auto``."""
    return os.environ.get("FAKEDET_RUNTIME", "auto")


class CompiledRunner:
    """``torch.compile`` of the feature model; a short last batch is padded to the compiled size."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.compiled = torch.compile(backbone.model)
        self.size = 0

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        n = len(batch)
        self.size = max(self.size, n)
        if n < self.size:
            batch = torch.cat([batch, batch.new_zeros((self.size - n, *batch.shape[1:]))])
        with self.backbone.autocast():
            return self.compiled(self.backbone.to_input(batch)).float().cpu().numpy()[:n]


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot run here (inductor needs a C++ compiler on CPU), or None."""
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        return "torch.compile needs a C++ compiler on CPU: apt-get install g++ (or use --runtime onnx / torch)"
    return None


def use_runtime(backbone: Backbone, runtime: str | None = None, folder: str | Path = ".", *,
                precision: str | None = None, batch_size: int = 64) -> Backbone:
    """Give ``backbone`` the runner for ``runtime`` (see module docstring); returns it, changed in place.

    ``precision``: what the user asked for; only ``auto`` lets the runtime choose it (the
    backbone's resolved precision is kept otherwise). A backbone that already has a runtime is
    returned as is. An unavailable runtime named explicitly raises ``BackboneError`` with the
    install command; a model ONNX cannot export falls back to torch, with the reason in
    ``backbone.runtime_reason``.
    """
    if backbone.runtime is not None:
        return backbone
    runtime = runtime or default_runtime()
    if runtime not in RUNTIMES:
        raise BackboneError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    free = precision == "auto"
    if runtime == "auto":
        runtime, chosen, backbone.runtime_reason = choose(backbone, folder, free, batch_size)
        backbone.precision = chosen
    if runtime == "onnx":
        require_onnx()
        if free:
            backbone.precision = "fp32"
        try:
            backbone.runner = load_onnx(backbone, folder)
        except ExportError as err:
            runtime, backbone.runtime_reason = "torch", f"onnx refused, ran torch: {err}"
    elif runtime == "compile":
        reason = compiler_missing(backbone.device)
        if reason:
            raise BackboneError(reason)
        backbone.runner = CompiledRunner(backbone)
    backbone.runtime = runtime
    return backbone


def describe(backbone: Backbone) -> str:
    """``'onnx fp32 (why)'``: the engine, precision and reason of the choice, for summaries."""
    reason = f" ({backbone.runtime_reason})" if backbone.runtime_reason else ""
    return f"{backbone.runtime or 'torch'} {backbone.precision}{reason}"


# --------------------------------------------------------------------------- measurement


def machine() -> str:
    """This machine as the measurements see it: CPU model, usable cores, GPU, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    try:
        import onnxruntime

        ort = f"onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = "no onnxruntime"
    return f"{cpu}, {cores} cores, {gpu}, torch {torch.__version__}, {ort}"


def candidates(backbone: Backbone, free: bool) -> list[tuple[str, str]]:
    """(runtime, precision) pairs ``auto`` times for this backbone."""
    device = backbone.device
    precisions = [backbone.precision]
    if free:
        low = {"cuda": [resolve_precision("auto", device)], "cpu": ["bf16"]}.get(device.type, [])
        precisions = ["fp32", *low]
    pairs = [("torch", p) for p in dict.fromkeys(precisions)]
    if "fp32" in precisions and onnx_available() is None:
        pairs.append(("onnx", "fp32"))
    return pairs


def measure_key(backbone: Backbone, batch_size: int) -> str:
    """The backbone's identity without precision (the candidates share it), plus the batch size."""
    identity = {k: v for k, v in backbone.identity.items() if k != "precision"}
    digest = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()
    return f"{backbone.key.rsplit('-', 1)[0]}-{digest} batch {batch_size}"


def choose(backbone: Backbone, folder: str | Path, free: bool, batch_size: int) -> tuple[str, str, str]:
    """(runtime, precision, reason) of the fastest candidate, from the cache or measured now."""
    pairs = candidates(backbone, free)
    if len(pairs) == 1:
        return (*pairs[0], f"auto: {'/'.join(pairs[0])} is the only candidate here")
    labels = [f"{r}/{p}" for r, p in pairs]
    entry = cached_rates(Path(folder) / MEASURE_FILE, measure_key(backbone, batch_size), labels,
                         lambda: measure(backbone, pairs, batch_size, Path(folder)))
    best, reason = fastest(entry, labels)
    return (*best.split("/"), reason)


def fastest(entry: dict, labels: list[str]) -> tuple[str, str]:
    """The label of ``labels`` with the highest rate in a ``cached_rates`` entry, and the reason to show."""
    rates = {label: entry["rates"][label] for label in labels}
    best = max(rates, key=rates.get)
    others = ", ".join(f"{k} {v:.0f}" for k, v in rates.items() if k != best)
    return best, f"auto: {best} {rates[best]:.0f} img/s (measured {entry['measured']}; {others})"


def cached_rates(path: Path, key: str, labels: list[str], measure_now: Callable[[], dict]) -> dict:
    """This machine's entry ``{measured, threads, rates}`` for ``key`` in the JSON book ``path``;
    ``measure_now()`` (label -> rate) runs and is saved when the entry lacks one of ``labels``."""
    entry = _read(path).get(machine(), {}).get(key)
    if entry is None or not set(labels) <= set(entry["rates"]):
        entry = {"measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "threads": torch.get_num_threads(), "rates": measure_now()}
        book = _read(path)  # another process may have written meanwhile
        book.setdefault(machine(), {})[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(book, indent=1, sort_keys=True))
        os.replace(partial, path)
    return entry


def measure(backbone: Backbone, pairs: list[tuple[str, str]], batch_size: int, folder: Path,
            batches: int = 3, seconds: float = 3.0) -> dict[str, float]:
    """Images per second of the bare forward pass for each (runtime, precision), same random batch:
    ``timing.fastest_rates`` (a warm-up each, then up to ``batches`` turns, each rated by its fastest
    batch). One that cannot run here gets rate 0 and says why in ``backbone.runtime_reason``."""
    size = backbone.preprocess.size
    batch = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)
    saved = backbone.precision, backbone.runner
    rates: dict[str, float] = {}
    calls = {}

    def failed(label: str, err: Exception) -> None:
        rates[label] = 0.0
        backbone.runtime_reason = f"{label} cannot run: {err}"

    for runtime, precision in pairs:
        label = f"{runtime}/{precision}"
        backbone.precision = precision
        try:
            runner = load_onnx(backbone, folder) if runtime == "onnx" else None
        except RuntimeError as err:  # ExportError, or a runtime that cannot run this model here
            failed(label, err)
            continue
        calls[label] = partial(_embed_with, backbone, precision, runner, batch)
    try:
        rates.update(fastest_rates(calls, batch_size, rounds=batches, seconds=seconds, failed=failed))
    finally:
        backbone.precision, backbone.runner = saved
    return {f"{r}/{p}": rates[f"{r}/{p}"] for r, p in pairs}


def _embed_with(backbone: Backbone, precision: str, runner, batch: torch.Tensor) -> None:
    backbone.precision, backbone.runner = precision, runner
    backbone.embed(batch)


def _read(path: Path) -> dict:
    try:
        book = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return book if isinstance(book, dict) else {}


def measurements(folder: str | Path) -> pd.DataFrame:
    """The cached ``auto`` measurements under ``folder``: machine, backbone, when, rates, choice."""
    rows = []
    for name, entries in _read(Path(folder) / MEASURE_FILE).items():
        for key, entry in entries.items():
            rates = entry.get("rates", {})
            rows.append({"machine": name, "this": name == machine(), "backbone": key,
                         "measured": entry.get("measured"), "threads": entry.get("threads"),
                         **{label: round(rate, 1) for label, rate in rates.items()},
                         "choice": max(rates, key=rates.get) if rates else ""})
    return pd.DataFrame(rows)


def measurements_by_machine(folder: str | Path) -> dict[str, pd.DataFrame]:
    """``measurements`` as one table per machine, this machine's first (titled ``this machine``)."""
    table = measurements(folder)
    if table.empty:
        return {}
    return {("this machine" if this else name): rows.drop(columns=["machine", "this"]).dropna(axis=1, how="all")
            for (name, this), rows in table.sort_values("this", ascending=False).groupby(["machine", "this"],
                                                                                        sort=False)}
