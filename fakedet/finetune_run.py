"""A fine-tune run's folder ``<cache>/finetuned/<name>/``: its configuration, checkpoints, history and curve.

    config.json   training configuration (a rerun with another one is refused)
    splits.csv    id, path, split, label of the images trained and validated on
    best.pt       the model with the lowest validation loss, in the ``fakedet.finetuned`` format:
                  the linear probe itself (epoch 0) until an epoch beats it
    last.pt       model, optimizer, scheduler, moving average, epoch and RNG state: an interrupted run resumes
    history.json  per-epoch metrics (epoch 0 = the linear probe; with a moving average of the weights,
                  ``val_*`` are its and ``raw_val_*`` the weights' as trained) and per-step training loss
    curve.png     training curve
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .backbones import Backbone
from .datasets import ImageSource
from .finetune_config import FinetuneConfig
from .finetune_train import Classifier
from .finetuned import checkpoint, save_atomic
from .provenance import versions

RUN_FILES = ("config.json", "splits.csv", "best.pt", "last.pt", "history.json", "curve.png")


def save_best(model: Classifier, backbone: Backbone, base: tuple[str, str | None], epoch: int, metrics: dict,
              run_dir: Path) -> None:
    """``best.pt`` (``fakedet.finetuned`` format): the feature model, the head, the training geometry;
    ``base`` is the (spec, weights file) of the architecture the feature model's weights load into."""
    save_atomic(checkpoint(base_spec=base[0], base_checkpoint=base[1],
                           backbone=model.features.state_dict(), head=model.head.state_dict(),
                           preprocess=asdict(backbone.preprocess), epoch=epoch,
                           metrics={k: v for k, v in metrics.items() if k.startswith("val_")}),
                run_dir / "best.pt")


def save_progress(state: dict, run_dir: Path, **parts) -> None:
    """``last.pt`` (``state`` plus the ``parts``' state dicts and the RNG), ``history.json`` and ``curve.png``."""
    if parts:
        save_atomic({**state, **{k: v.state_dict() for k, v in parts.items()}, "rng": torch.get_rng_state()},
                    run_dir / "last.pt")
    history = {"epochs": state["history"], "steps": state["steps"]}
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_history(state["history"], state["steps"], run_dir / "curve.png")


def plot_history(history: list[dict], steps: list[float], path: Path) -> None:
    """Training loss per step (with the probe's as a line) and validation loss / accuracy per epoch, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    per_epoch = len(steps) / max(1, len(history) - 1)
    if steps:
        x = np.arange(1, len(steps) + 1) / per_epoch
        ax_loss.plot(x, steps, lw=0.5, alpha=0.4, label="train (step)")
        window = max(1, len(steps) // 50)
        ax_loss.plot(x[window - 1:], np.convolve(steps, np.ones(window) / window, "valid"), label="train (mean)")
    if "train_loss" in history[0]:
        ax_loss.axhline(history[0]["train_loss"], color="gray", ls=":", label="train (linear probe)")
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    ax_acc.plot(epochs, [h["val_balanced_accuracy"] for h in history], "s--", label="val balanced accuracy")
    if "raw_val_accuracy" in history[-1]:
        ax_acc.plot(epochs[1:], [h["raw_val_accuracy"] for h in history[1:]], "x:", label="val accuracy as trained")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "validation (epoch 0 = linear probe)")):
        ax.set(xlabel="epoch", title=title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


def run_config(cfg: FinetuneConfig, src: ImageSource, backbone: Backbone, train_runtime: str) -> dict:
    """The configuration as JSON reads it back (tuples become lists), with data and resolved settings."""
    config = {**asdict(cfg), "data": src.root, "precision": backbone.precision, "train_runtime": train_runtime,
              "preprocess": asdict(backbone.preprocess)}
    return json.loads(json.dumps(config))


def with_new_fields(old: dict) -> dict:
    """A config written before some fields existed (``ema``, ``train_seed``), those fields at the
    ``FinetuneConfig`` defaults its run trained with."""
    return {**asdict(FinetuneConfig(random_state=old.get("random_state", 0))), **old}


def prepare_run(run_dir: Path, config: dict, resume: bool) -> dict | None:
    """Check or start the run folder; returns the ``last.pt`` state to resume from, or None."""
    config_path = run_dir / "config.json"
    if resume and config_path.is_file():
        old = with_new_fields(json.loads(config_path.read_text()))
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k) and k != "versions")
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise ValueError(f"{run_dir} holds a run with another configuration ({changes}); "
                             "choose another --name, or --restart to discard it")
        if (run_dir / "last.pt").is_file():
            return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps({**config, "versions": versions()}, indent=2))
    return None
