"""How the fine-tuning step runs on this machine: engine ``eager`` or ``compile`` (torch.compile), at
fp32 or bf16 autocast, chosen by measuring (the training counterpart of ``fakedet.runtimes``).

``choose_training`` with ``auto`` times a few training steps (forward, backward, AdamW on a copy
of the model; random images at the run's size and batch size) of eager torch at fp32 and, when
the precision asked for is ``auto``, at the device's low precision (bf16 on a CPU: about twice
as fast with bf16 units, many times slower without), and caches the rates per machine and
backbone in ``<cache>/train_runtimes.json``. ``compile`` is not a candidate of ``auto``: compiling
forward and backward costs minutes per process on a small CPU, more than a short run saves
(``bench/train_step.py`` measures both); ask for it by name for long runs. Channels-last
memory format is always on (``Backbone.to_input``). The choice is recorded in the run's
``config.json`` (``train_runtime``, ``precision``).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from .backbone_config import BackboneError
from .backbones import Backbone
from .devices import resolve_precision
from .finetune_train import Classifier, TrainStep, freeze_norms
from .runtimes import cached_rates, compiler_missing, fastest, measure_key

MEASURE_FILE = "train_runtimes.json"


def training_step(backbone: Backbone, compiled: bool = False, channels_last: bool = True) -> TrainStep:
    """A ``TrainStep`` (AdamW, lr 1e-5) on a fresh copy of ``backbone``'s model in training mode with
    frozen batch-norm statistics, as ``finetune`` trains; ``backbone`` itself is left untouched."""
    features = copy.deepcopy(backbone.model)
    if not channels_last:
        features = features.to(memory_format=torch.contiguous_format)
    model = Classifier(features, backbone.dim).to(backbone.device).train()
    freeze_norms(model, True)
    return TrainStep(model, backbone, torch.optim.AdamW(model.parameters(), lr=1e-5), compiled=compiled,
                     channels_last=channels_last)


def random_batch(backbone: Backbone, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images at the backbone's input size and random labels on its device."""
    size = backbone.preprocess.size
    x = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)
    return x, torch.randint(0, 2, (batch_size,), device=backbone.device).float()


def measure(backbone: Backbone, pairs: list[tuple[str, str]], batch_size: int, steps: int = 3,
            seconds: float = 10.0) -> dict[str, float]:
    """Images per second of the training step for each (runtime, precision), on the same random batch.

    One warm-up step, then up to ``steps`` timed ones (stopping after ``seconds``); a candidate whose
    warm-up alone is 3x slower than the best rate so far keeps its warm-up rate."""
    x, y = random_batch(backbone, batch_size)
    saved, rates = backbone.precision, {}
    try:
        for runtime, precision in pairs:
            backbone.precision = precision
            step = training_step(backbone, compiled=runtime == "compile")
            start = time.perf_counter()
            step(x, y)
            warm = time.perf_counter() - start
            if rates and batch_size / warm < max(rates.values()) / 3:
                rates[f"{runtime}/{precision}"] = batch_size / warm
                continue
            start, n = time.perf_counter(), 0
            while n < steps and (n == 0 or time.perf_counter() - start < seconds):
                step(x, y)
                n += 1
            rates[f"{runtime}/{precision}"] = n * batch_size / (time.perf_counter() - start)
    finally:
        backbone.precision = saved
    return rates


def candidates(backbone: Backbone, runtime: str, free: bool) -> list[tuple[str, str]]:
    """(runtime, precision) pairs for ``runtime`` (``auto``: eager at fp32 and the low precision when ``free``)."""
    if runtime != "auto" or not free:
        return [("eager" if runtime == "auto" else runtime, backbone.precision)]
    low = "bf16" if backbone.device.type == "cpu" else resolve_precision("auto", backbone.device)
    return [("eager", p) for p in dict.fromkeys(["fp32", low])]


def choose_training(backbone: Backbone, runtime: str, folder: str | Path, *, free: bool,
                    batch_size: int) -> tuple[str, str, str]:
    """(runtime, precision, description) of the training step: the fastest candidate, measured or cached.

    ``free``: the precision asked for was ``auto`` (only then is it chosen here)."""
    if runtime == "compile" and (reason := compiler_missing(backbone.device)):
        raise BackboneError(reason)
    pairs = candidates(backbone, runtime, free)
    if len(pairs) == 1:
        chosen = "/".join(pairs[0])
        return (*pairs[0], f"{chosen} ({'asked for' if runtime != 'auto' or not free else 'only candidate here'})")
    labels = [f"{r}/{p}" for r, p in pairs]
    entry = cached_rates(Path(folder) / MEASURE_FILE, f"{measure_key(backbone, batch_size)} training", labels,
                         lambda: measure(backbone, pairs, batch_size))
    best, reason = fastest(entry, labels)
    return (*best.split("/"), reason)
