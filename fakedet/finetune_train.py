"""The fine-tuning model and its optimisation: the classifier (features -> linear head), AdamW
parameter groups (per-group learning rates, layer-wise decay, frozen first groups), the warm-up +
cosine schedule, one training epoch and validation."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .backbones import Backbone
from .feature_models import FeatureModel
from .datasets import ImageSource
from .embedding import embed_in_memory
from .finetune_config import FinetuneConfig
from .metrics import binary_metrics

MIN_WARMUP = 20  # steps
CLIP_VIT_GROUPS = {  # open_clip VisionTransformer, in the form of timm's group_matcher
    "stem": r"^(?:class_embedding|positional_embedding|conv1|ln_pre)",
    "blocks": [(r"^transformer\.resblocks\.(\d+)", None), (r"^(?:ln_post|proj)", (99999,))],
}


class Classifier(nn.Module):
    """Backbone features -> linear head -> logit of P(fake); the head runs in fp32."""

    def __init__(self, features: FeatureModel, dim: int):
        super().__init__()
        self.features, self.head = features, nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.head(features.float()).squeeze(1)


def _forward(model: nn.Module, backbone: Backbone):
    """``model`` (in eval mode) as a batch function of the embedding path: uint8 batch -> float32 numpy."""
    @torch.inference_mode()
    def forward(x: torch.Tensor) -> np.ndarray:
        model.eval()
        with backbone.autocast():
            return model(backbone.to_input(x)).float().cpu().numpy()

    return forward


def layer_ids(model: FeatureModel) -> dict[str, int]:
    """Depth group per trunk parameter: 0 = stem, then one per stage (CNN) or block (ViT), the neck
    (final conv / norm / projection) joining the last one.

    Uses timm's ``group_matcher``; open_clip ViTs get the equivalent; other trunks are one group.
    """
    from timm.models import group_parameters

    trunk = model.trunk
    if hasattr(trunk, "group_matcher"):
        matcher = trunk.group_matcher(coarse=True)
    elif hasattr(trunk, "transformer") and hasattr(trunk, "conv1"):
        matcher = CLIP_VIT_GROUPS
    else:
        return {name: 0 for name, _ in trunk.named_parameters()}
    return group_parameters(trunk, matcher, reverse=True)


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict]:
    """AdamW groups: backbone lr scaled by ``layer_decay`` per group below the top, ``head_lr`` for the
    head, no weight decay on biases and norms; the first ``cfg.freeze`` groups are frozen."""
    ids = layer_ids(model.features)
    n_groups = max(ids.values()) + 1
    if cfg.freeze >= n_groups:
        raise ValueError(f"--freeze {cfg.freeze}: this backbone has {n_groups} parameter groups, freeze fewer")
    skip = set(getattr(model.features.trunk, "no_weight_decay", set)())
    groups: dict[tuple, dict] = {}
    for name, param in model.features.trunk.named_parameters():
        layer = ids[name]
        if layer < cfg.freeze:
            param.requires_grad_(False)
            continue
        decay = param.ndim > 1 and name not in skip
        group = groups.setdefault((layer, decay), {
            "params": [], "lr": cfg.lr * cfg.layer_decay ** (n_groups - 1 - layer),
            "weight_decay": cfg.weight_decay if decay else 0.0})
        group["params"].append(param)
    head = [{"params": [model.head.weight], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
            {"params": [model.head.bias], "lr": cfg.head_lr, "weight_decay": 0.0}]
    return [groups[k] for k in sorted(groups)] + head


def warmup_steps(total: int, warmup: float) -> int:
    """Warm-up length: ``warmup`` of the ``total`` steps, at least ``MIN_WARMUP`` and at most half of them
    (0 when ``warmup`` is 0). A fraction alone gives a 12-step run a 1-step warm-up, i.e. none."""
    return min(max(round(total * warmup), MIN_WARMUP), total // 2) if warmup else 0


def warmup_cosine(total: int, warmup: float):
    """LR multiplier per step: linear from 0 over ``warmup_steps`` (AdamW's first updates are
    sign-like, a full-size step at any learning rate), then cosine to zero."""
    n_warm = warmup_steps(total, warmup)

    def factor(step: int) -> float:
        if step < n_warm:
            return step / n_warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))

    return factor


def freeze_norms(model: nn.Module, all_norms: bool) -> None:
    """Keep batch-norm layers in eval mode (fixed statistics): all of them, or those whose parameters are frozen."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if all_norms or not any(p.requires_grad for p in module.parameters()):
                module.eval()


class TrainStep:
    """One optimisation step on a uint8 batch: forward under the backbone's autocast (through
    ``torch.compile`` when ``compiled``), log loss, backward, gradient clipping, optimizer and
    scheduler steps, then the moving average ``ema`` (a timm ``ModelEmaV3``) when given. ``mix``
    (a ``finetune_data.BatchMix``) mixes the batch and its targets before the forward pass.
    ``channels_last=False`` feeds contiguous batches (for ``bench/train_step.py``)."""

    def __init__(self, model: Classifier, backbone: Backbone, optimizer, scheduler=None, scaler=None,
                 clip_grad: float = 1.0, compiled: bool = False, channels_last: bool = True, ema=None, mix=None):
        self.model, self.backbone, self.optimizer, self.scheduler = model, backbone, optimizer, scheduler
        self.ema, self.mix = ema, mix
        self.scaler = scaler or torch.amp.GradScaler(backbone.device.type, enabled=backbone.precision == "fp16")
        self.forward = torch.compile(model) if compiled else model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.clip_grad, self.channels_last = clip_grad, channels_last

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, targets) of the batch before the update, detached; the targets are ``y``,
        mixed when mixing."""
        x = self.backbone.to_input(x)
        if self.mix is not None:
            x, y = self.mix(x, y)
        with self.backbone.autocast():
            logits = self.forward(x if self.channels_last else x.contiguous())
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.clip_grad:
            nn.utils.clip_grad_norm_(self.trainable, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach(), logits.detach(), y


def train_epoch(step: TrainStep, loader: DataLoader, labels: pd.Series, bn_stats: str = "frozen",
                progress: bool = True) -> dict:
    """One pass over the training loader; returns loss, accuracy (against the targets trained on: with
    mixing, the larger share of each image), images, seconds and per-step losses."""
    step.model.train()
    freeze_norms(step.model, bn_stats == "frozen")
    losses, correct, seen, start = [], 0, 0, time.perf_counter()
    bar = tqdm(loader, desc="train", unit="batch", disable=not progress, leave=False)
    for ids, x, _ in bar:
        if not ids:
            continue
        y = torch.tensor(labels.loc[ids].to_numpy(), dtype=torch.float32, device=step.backbone.device)
        loss, logits, y = step(x, y)
        losses.append(loss.item())
        correct += int(((logits > 0) == (y > 0.5)).sum())
        seen += len(ids)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.perf_counter() - start
    return {"train_loss": float(np.mean(losses)), "train_accuracy": correct / max(seen, 1),
            "images": seen, "seconds": seconds, "images_per_second": seen / max(seconds, 1e-9), "steps": losses}


def validate(model: Classifier, backbone: Backbone, src: ImageSource, items: pd.DataFrame, labels: pd.Series,
             batch_size: int = 64, workers: int | None = None, progress: bool = True) -> dict:
    """Validation loss (log loss), accuracy at 0.5, balanced accuracy and ROC AUC of ``items``."""
    ids, logits, _ = embed_in_memory(src, items, backbone.preprocess, _forward(model, backbone),
                                     batch_size=batch_size, workers=workers, progress=progress, desc="validate")
    logits = logits.reshape(-1)
    metrics = binary_metrics(labels.loc[ids].to_numpy(), expit(logits.astype(np.float64)))
    scores = {f"val_{k}": metrics[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")}
    return {"val_loss": metrics["log_loss"], **scores}
