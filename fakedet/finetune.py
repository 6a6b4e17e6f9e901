"""``finetune``: train a whole backbone plus a linear head, and register the result as a backbone.

Linear probe, then fine-tune: the head starts as a logistic regression on frozen embeddings
(``finetune_probe``; from the cache when it holds the matching set), then backbone and head train
together (``finetune_train``) with AdamW, learning rates rising from 0 over a warm-up of at least
``MIN_WARMUP`` steps then cosine decay, batch-norm statistics frozen, gradient clipping, optionally
a moving average of the weights (``ema``: then validated and saved), in the training runtime and
precision measured fastest here (``train_speed``). Data are the heads' splits with flips, random
resized crops, blur + JPEG, optionally downscales and mixup / CutMix (``finetune_data``). The probe
is epoch 0 and the first ``best.pt``: an epoch replaces it only with a lower validation loss, so a
run never ends worse than its probe. The run folder is described in ``finetune_run``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from timm.utils import ModelEmaV3

from .backbone_config import BackboneConfig
from .backbones import create_backbone, resolve_spec
from .catalog import cache_root, finetune_dir, run_name
from .datasets import open_source
from .embedding import default_workers, image_loader
from .finetune_config import FinetuneConfig
from .finetune_data import Augment, BatchMix, training_items
from .finetune_probe import probe_embeddings, probe_head, probe_loss
from .finetune_run import prepare_run, run_config, save_best, save_progress
from .finetuned import base_of
from .finetune_train import Classifier, TrainStep, param_groups, train_epoch, validate, warmup_cosine, warmup_steps
from .train_speed import choose_training


@dataclass
class FinetuneResult:
    """A finished (or already complete) run: where it is, its backbone spec and its history."""

    name: str
    run_dir: Path
    spec: str
    best_epoch: int
    history: list[dict]
    resumed_from: int = 0
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    settings: str = ""

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    def summary(self) -> str:
        probe, best = self.history[0], self.history[self.best_epoch]
        lines = [f"run: {self.run_dir}  ({', '.join(f'{k} {v}' for k, v in self.counts.items())})"]
        if self.settings:
            lines.append(f"training step: {self.settings}")
        for h in self.history:
            what = (f"train loss {h['train_loss']:.4f}, {h['images_per_second']:.0f} img/s, " if h["epoch"]
                    else f"linear probe: train loss {h['train_loss']:.4f}, " if "train_loss" in h
                    else "linear probe: ")
            raw = (f" (weights as trained: {h['raw_val_accuracy']:.2%}, loss {h['raw_val_loss']:.4f})"
                   if "raw_val_accuracy" in h else "")
            lines.append(f"  epoch {h['epoch']}: {what}val loss {h['val_loss']:.4f}, "
                         f"accuracy {h['val_accuracy']:.2%}, AUC {h['val_roc_auc']:.4f}{raw}")
        if self.best_epoch == 0:
            lines.append(f"no epoch beat the linear probe's val loss: best.pt is the probe (the unchanged backbone "
                         f"+ logistic-regression head), val accuracy {probe['val_accuracy']:.2%}; {self.seconds:.0f}s")
        else:
            lines.append(f"best epoch {self.best_epoch}: val accuracy {best['val_accuracy']:.2%} "
                         f"(linear probe {probe['val_accuracy']:.2%}); {self.seconds:.0f}s")
        lines.append(f"backbone: {self.spec}   e.g. fakedet extract DATA --backbone {self.spec}")
        return "\n".join(lines)


def finetune(
    data: str | Path,
    config: FinetuneConfig | None = None,
    *,
    name: str | None = None,
    cache: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    resume: bool = True,
    progress: bool = True,
    **options,
) -> FinetuneResult:
    """Fine-tune ``config.backbone`` (fields overridable by ``options``) on ``data``; see the module doc.

    The run folder is ``out_dir`` (default ``<cache>/finetuned/<name>``). With ``resume`` an
    interrupted run with the same configuration continues after its last finished epoch (a
    finished one is returned as is); ``resume=False`` discards it. Probe embeddings come from
    the cache of ``data`` in ``cache`` when it holds them; the training-step measurement is
    cached there too.
    """
    cfg = FinetuneConfig(**{**asdict(config or FinetuneConfig()), **options})
    start = time.perf_counter()
    src = open_source(data)
    name = name or run_name(cfg.backbone, src.name)
    run_dir = Path(out_dir) if out_dir is not None else finetune_dir(name, cache)
    by_name = run_dir.resolve() == finetune_dir(name, cache).resolve()
    spec = f"finetuned:{name}" if by_name else str(run_dir / "best.pt")
    torch.manual_seed(cfg.train_seed)
    backbone = create_backbone(cfg.backbone, checkpoint=cfg.checkpoint, precision=cfg.precision, device=device,
                               resize=str(cfg.image_size) if cfg.image_size else "backbone", cache=cache)
    base = (cfg.backbone, cfg.checkpoint)
    if backbone.family == "finetuned":  # tuning a fine-tune: record its architecture, so best.pt stands alone
        base = base_of(resolve_spec(BackboneConfig(spec=cfg.backbone), cache)[2])
    runtime, backbone.precision, settings = choose_training(backbone, cfg.train_runtime, cache_root(cache),
                                                            free=cfg.precision == "auto", batch_size=cfg.batch_size)
    state = prepare_run(run_dir, run_config(cfg, src, backbone, runtime), resume)
    items = training_items(src, limit=cfg.limit, val_size=cfg.val_size, test_size=cfg.test_size,
                           random_state=cfg.random_state, progress=progress)
    items.to_csv(run_dir / "splits.csv", index=False)
    train, val = items[items["split"] == "train"], items[items["split"] == "val"]
    counts = {"train": len(train), "val": len(val)}
    resumed_from = state["epoch"] if state else 0
    if state and state["epoch"] >= cfg.epochs:
        return FinetuneResult(name, run_dir, spec, state["best_epoch"], state["history"], resumed_from,
                              time.perf_counter() - start, counts, settings)

    labels = pd.Series(items["label"].to_numpy(), index=items["id"].to_numpy())
    workers = default_workers() if workers is None else workers
    validation = dict(src=src, items=val, labels=labels, batch_size=cfg.batch_size, workers=workers,
                      progress=progress)
    model = Classifier(backbone.model, backbone.dim).to(backbone.device)
    n_steps = max(1, len(train) // cfg.batch_size)  # batches per epoch: the last partial one is dropped
    if state is None:
        X, ok, from_cache = probe_embeddings(backbone, src, train, cache, cfg.batch_size, workers, progress)
        y = train["label"].to_numpy()[ok]
        model.head = probe_head(X[ok], y, cfg.random_state).to(backbone.device)
        probe = {"epoch": 0, "probe_from_cache": from_cache, "train_loss": probe_loss(model.head, X[ok], y),
                 "warmup_steps": warmup_steps(n_steps * cfg.epochs, cfg.warmup),
                 **validate(model, backbone, **validation)}
        state = {"epoch": 0, "best_epoch": 0, "best_loss": probe["val_loss"], "steps": [], "history": [probe]}
        save_best(model, backbone, base, 0, probe, run_dir)  # the fallback until an epoch beats it
        save_progress(state, run_dir)
    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(n_steps * cfg.epochs, cfg.warmup))
    ema = ModelEmaV3(model, decay=cfg.ema) if cfg.ema else None  # starts at the probe
    mix = BatchMix(cfg.mixup, cfg.cutmix, cfg.mix_prob) if cfg.mixup or cfg.cutmix else None
    step = TrainStep(model, backbone, optimizer, scheduler, clip_grad=cfg.clip_grad, compiled=runtime == "compile",
                     ema=ema, mix=mix)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": step.scaler,
             **({"ema": ema} if ema else {})}
    if resumed_from:
        for key, part in parts.items():
            part.load_state_dict(state[key])
        torch.set_rng_state(state["rng"])
    kept = ema.module if ema else model  # the weights validated and saved
    augment = Augment(cfg.blur_jpeg, cfg.crop_scale, cfg.flip, cfg.downscale)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        seed = cfg.train_seed * 1000 + epoch  # the epoch's shuffle, augmentation and mixing draws
        loader = image_loader(src, train, backbone.preprocess, batch_size=cfg.batch_size, workers=workers,
                              transform=augment, seed=seed)
        if mix is not None:
            mix.seed(seed)
        stats = train_epoch(step, loader, labels, cfg.bn_stats, progress)
        state["steps"] += stats.pop("steps")
        if ema:  # the weights as trained, for comparison
            stats.update({f"raw_{k}": v for k, v in validate(model, backbone, **validation).items()})
        state["history"].append({"epoch": epoch, **stats, **validate(kept, backbone, **validation)})
        state["epoch"] = epoch
        if state["history"][-1]["val_loss"] < state["best_loss"]:
            state.update(best_epoch=epoch, best_loss=state["history"][-1]["val_loss"])
            save_best(kept, backbone, base, epoch, state["history"][-1], run_dir)
        save_progress(state, run_dir, **parts)
    model.eval()
    return FinetuneResult(name, run_dir, spec, state["best_epoch"], state["history"], resumed_from,
                          time.perf_counter() - start, counts, settings)
