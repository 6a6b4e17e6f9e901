"""``finetune``: train a whole backbone plus a linear head, and register the result as a backbone.

Linear probe, then fine-tune: the head starts as a logistic regression on frozen embeddings
(from the cache when it holds the matching set, else computed on the training images), then
backbone and head train together with AdamW (per-group learning rates, optional layer-wise
decay and frozen first groups), linear warm-up then cosine decay, gradient clipping,
autocast (bf16 on CPUs with bf16 units) and channels-last. Data are the heads' splits
(``assign_splits`` on the whole dataset, content ids kept together), with flips, random
resized crops and the blur + JPEG augmentation of Wang et al. (CVPR 2020).

A run lives in ``<cache>/finetuned/<name>/``::

    config.json   training configuration (a rerun with another one is refused)
    splits.csv    id, path, split, label of the images trained and validated on
    best.pt       the epoch with the lowest validation loss, in the format the ``finetuned``
                  backbone family reads (``finetuned:<name>`` or the path)
    last.pt       model, optimizer, scheduler, epoch and RNG state: an interrupted run resumes
    history.json  per-epoch metrics (epoch 0 = the linear probe) and per-step training loss
    curve.png     training curve
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .backbones import Backbone, create_backbone
from .feature_models import FeatureModel
from .catalog import finetune_dir, matching_set, run_name, source_store
from .datasets import ImageSource, discover, open_source
from .embedding import default_workers, embed_in_memory, image_loader
from .finetuned import checkpoint, save_atomic
from .heads import make_head
from .metrics import binary_metrics
from .perturb import Perturbation
from .splits import assign_splits
from .store import per_id, versions
RUN_FILES = ("config.json", "splits.csv", "best.pt", "last.pt", "history.json", "curve.png")
CLIP_VIT_GROUPS = {  # open_clip VisionTransformer, in the form of timm's group_matcher
    "stem": r"^(?:class_embedding|positional_embedding|conv1|ln_pre)",
    "blocks": [(r"^transformer\.resblocks\.(\d+)", None), (r"^(?:ln_post|proj)", (99999,))],
}


@dataclass
class FinetuneConfig:
    """Everything that shapes the trained weights; a run resumes only with an identical config."""

    backbone: str = "effnet-lite0"
    checkpoint: str | None = None
    image_size: int | None = 128
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-4
    head_lr: float = 1e-3
    layer_decay: float = 1.0
    weight_decay: float = 0.05
    warmup: float = 0.1
    clip_grad: float = 1.0
    freeze: int = 0
    bn_stats: str = "frozen"
    flip: bool = True
    crop_scale: float = 0.6
    blur_jpeg: float = 0.5
    limit: int | None = None
    val_size: float = 0.2
    test_size: float = 0.0
    random_state: int = 0
    precision: str = "auto"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.freeze < 0:
            raise ValueError("epochs and batch_size must be at least 1, freeze at least 0")
        if not (0 < self.crop_scale <= 1 and 0 <= self.blur_jpeg <= 1 and 0 <= self.warmup < 1):
            raise ValueError("crop_scale must be in (0, 1], blur_jpeg in [0, 1], warmup in [0, 1)")
        if not 0 < self.layer_decay <= 1 or self.bn_stats not in ("frozen", "train"):
            raise ValueError("layer_decay must be in (0, 1], bn_stats 'frozen' or 'train'")


@dataclass(frozen=True)
class Augment:
    """Training augmentation of a decoded image: blur (sigma U(0, 3)) and JPEG re-compression
    (quality U{30..100}), each with probability ``blur_jpeg``, then a random resized crop
    (area U(crop_scale, 1), aspect 3/4..4/3) and a horizontal flip. Randomness from torch, so
    DataLoader seeding makes it reproducible."""

    blur_jpeg: float = 0.5
    crop_scale: float = 0.6
    flip: bool = True

    def __call__(self, image: Image.Image, image_id: str | None = None) -> Image.Image:
        """A fresh random draw on every call (``image_id`` is not used: training draws anew each epoch)."""
        if torch.rand(()) < self.blur_jpeg:
            image = Perturbation("blur", 3 * float(torch.rand(())))(image)
        if torch.rand(()) < self.blur_jpeg:
            image = Perturbation("jpeg", int(torch.randint(30, 101, ())))(image)
        if self.crop_scale < 1:
            image = _random_crop(image, self.crop_scale)
        if self.flip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


def _random_crop(image: Image.Image, min_area: float) -> Image.Image:
    w, h = image.size
    area = float(torch.empty(()).uniform_(min_area, 1.0))
    ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
    cw, ch = min(w, max(1, round(w * math.sqrt(area * ratio)))), min(h, max(1, round(h * math.sqrt(area / ratio))))
    left, top = int(torch.randint(0, w - cw + 1, ())), int(torch.randint(0, h - ch + 1, ()))
    return image.crop((left, top, left + cw, top + ch))


class Classifier(nn.Module):
    """Backbone features -> linear head -> logit of P(fake); the head runs in fp32."""

    def __init__(self, features: FeatureModel, dim: int):
        super().__init__()
        self.features, self.head = features, nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.head(features.float()).squeeze(1)


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

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "best.pt"

    def summary(self) -> str:
        probe, best = self.history[0], self.history[self.best_epoch]
        lines = [f"run: {self.run_dir}  ({', '.join(f'{k} {v}' for k, v in self.counts.items())})"]
        for h in self.history:
            what = (f"train loss {h['train_loss']:.4f}, {h['images_per_second']:.0f} img/s, " if h["epoch"]
                    else "linear probe: ")
            lines.append(f"  epoch {h['epoch']}: {what}val loss {h['val_loss']:.4f}, "
                         f"accuracy {h['val_accuracy']:.2%}, AUC {h['val_roc_auc']:.4f}")
        lines += [f"best epoch {self.best_epoch}: val accuracy {best['val_accuracy']:.2%} "
                  f"(linear probe {probe['val_accuracy']:.2%}); {self.seconds:.0f}s",
                  f"backbone: {self.spec}   e.g. fakedet extract DATA --backbone {self.spec}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- data


def training_items(source: str | Path | ImageSource, *, limit: int | None = None, val_size: float = 0.2,
                   test_size: float = 0.0, random_state: int = 0, progress: bool = True) -> pd.DataFrame:
    """Train and val rows (one per content id) of ``source`` with the heads' split of the whole
    dataset, optionally a seeded subset of ``limit`` stratified by split and label."""
    frame = discover(source, progress=progress)
    items = per_id(frame[frame["error"] == ""])
    items["split"], _ = assign_splits(items, val_size=val_size, test_size=test_size, random_state=random_state)
    items = items[items["split"].isin(["train", "val"])]
    if limit is not None and limit < len(items):
        strata = items["split"] + items["label"].astype(str)
        items, _ = train_test_split(items, train_size=limit, stratify=strata, random_state=random_state)
    for split in ("train", "val"):
        if items.loc[items["split"] == split, "label"].nunique() < 2:
            raise ValueError(f"the {split} split needs both real and fake images")
    return items.sort_values("path").reset_index(drop=True)[["id", "path", "split", "label"]]


def _forward(model: nn.Module, backbone: Backbone):
    """``model`` (in eval mode) as a batch function of the embedding path: uint8 batch -> float32 numpy."""
    @torch.inference_mode()
    def forward(x: torch.Tensor) -> np.ndarray:
        model.eval()
        with backbone.autocast():
            return model(backbone.to_input(x)).float().cpu().numpy()

    return forward


# --------------------------------------------------------------------------- linear probe


def probe_embeddings(backbone: Backbone, src: ImageSource, items: pd.DataFrame, cache, batch_size: int,
                     workers: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, int]:
    """Frozen embeddings of ``items``: from the cache's set with ``backbone``'s fingerprint where present,
    the rest computed now (no augmentation). Returns (X, embedded row mask, rows taken from the cache)."""
    X = np.zeros((len(items), backbone.dim), np.float32)
    row = pd.Series(np.arange(len(items)), index=items["id"].to_numpy())
    done = np.zeros(len(items), bool)
    store = source_store(src.root, cache)
    key = matching_set(store, backbone.fingerprint, prefer=backbone.key)
    if key is not None and store.attrs().get("source") == src.root:
        emb = store.load(key)
        hit = emb.frame["id"].isin(row.index).to_numpy()
        at = row.loc[emb.frame["id"][hit]].to_numpy()
        X[at], done[at] = emb.X[hit], True
    from_cache = int(done.sum())
    if not done.all():
        ids, Z, _ = embed_in_memory(src, items[~done], backbone.preprocess, backbone.embed, batch_size=batch_size,
                                    workers=workers, progress=progress, desc="probe embeddings")
        at = row.loc[ids].to_numpy()
        X[at], done[at] = Z, True
    return X, done, from_cache


def probe_head(X: np.ndarray, y: np.ndarray, random_state: int = 0) -> nn.Linear:
    """The heads' logistic regression (standardised features) as one ``nn.Linear`` on raw features."""
    pipeline = make_head("logreg", random_state=random_state).fit(X, y)
    scaler, logreg = pipeline.named_steps["standard"], pipeline.named_steps["head"]
    weight = logreg.coef_[0] / scaler.scale_
    head = nn.Linear(X.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).view(1, -1))
        head.bias.fill_(float(logreg.intercept_[0] - weight @ scaler.mean_))
    return head


# --------------------------------------------------------------------------- optimisation


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
    """AdamW groups: backbone lr scaled by ``layer_decay`` per group below the top, head lr for the
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


def warmup_cosine(total: int, warmup: float):
    """LR multiplier per step: linear warm-up over ``warmup`` of the steps, then cosine to zero."""
    n_warm = int(total * warmup)

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))

    return factor


def _freeze_norms(model: nn.Module, all_norms: bool) -> None:
    """Keep batch-norm layers in eval mode (fixed statistics): all of them, or those whose parameters are frozen."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if all_norms or not any(p.requires_grad for p in module.parameters()):
                module.eval()


def train_epoch(model: Classifier, backbone: Backbone, loader: DataLoader, labels: pd.Series, optimizer,
                scheduler, scaler, clip_grad: float, bn_stats: str = "frozen", progress: bool = True) -> dict:
    """One pass over the training loader; returns loss, accuracy, images, seconds and per-step losses."""
    model.train()
    _freeze_norms(model, bn_stats == "frozen")
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses, correct, seen, start = [], 0, 0, time.perf_counter()
    bar = tqdm(loader, desc="train", unit="batch", disable=not progress, leave=False)
    for ids, x, _ in bar:
        if not ids:
            continue
        y = torch.tensor(labels.loc[ids].to_numpy(), dtype=torch.float32, device=backbone.device)
        with backbone.autocast():
            logits = model(backbone.to_input(x))
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if clip_grad:
            nn.utils.clip_grad_norm_(trainable, clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(loss.item())
        correct += int(((logits.detach() > 0) == (y > 0.5)).sum())
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
    metrics = binary_metrics(labels.loc[ids].to_numpy(), 1 / (1 + np.exp(-logits.astype(np.float64))))
    scores = {f"val_{k}": metrics[k] for k in ("accuracy", "balanced_accuracy", "roc_auc")}
    return {"val_loss": metrics["log_loss"], **scores}


# --------------------------------------------------------------------------- checkpoints and run folder


def checkpoint_dict(model: Classifier, backbone: Backbone, cfg: FinetuneConfig, epoch: int, metrics: dict) -> dict:
    """``best.pt`` content (``fakedet.finetuned`` format): the feature model, the head, the training geometry."""
    return checkpoint(base_spec=cfg.backbone, base_checkpoint=cfg.checkpoint, backbone=model.features.state_dict(),
                      head=model.head.state_dict(), preprocess=asdict(backbone.preprocess), epoch=epoch,
                      metrics={k: v for k, v in metrics.items() if k.startswith("val_")})


def plot_history(history: list[dict], steps: list[float], path: Path) -> None:
    """Training loss per step and validation loss / accuracy per epoch, as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    per_epoch = len(steps) / max(1, len(history) - 1)
    if steps:
        x = np.arange(1, len(steps) + 1) / per_epoch
        ax_loss.plot(x, steps, lw=0.5, alpha=0.4, label="train (step)")
        window = max(1, len(steps) // 50)
        ax_loss.plot(x[window - 1:], np.convolve(steps, np.ones(window) / window, "valid"), label="train (mean)")
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="val accuracy")
    ax_acc.plot(epochs, [h["val_balanced_accuracy"] for h in history], "s--", label="val balanced accuracy")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "validation (epoch 0 = linear probe)")):
        ax.set(xlabel="epoch", title=title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


def _run_config(cfg: FinetuneConfig, src: ImageSource, backbone: Backbone) -> dict:
    """The configuration as JSON reads it back (tuples become lists), with data and resolved settings."""
    config = {**asdict(cfg), "data": src.root, "precision": backbone.precision,
              "preprocess": asdict(backbone.preprocess)}
    return json.loads(json.dumps(config))


def _prepare_run(run_dir: Path, config: dict, resume: bool) -> dict | None:
    """Check or start the run folder; returns the ``last.pt`` state to resume from, or None."""
    config_path = run_dir / "config.json"
    if resume and config_path.is_file():
        old = json.loads(config_path.read_text())
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


# --------------------------------------------------------------------------- entry point


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
    the cache of ``data`` in ``cache`` when it holds them.
    """
    cfg = FinetuneConfig(**{**asdict(config or FinetuneConfig()), **options})
    start = time.perf_counter()
    src = open_source(data)
    name = name or run_name(cfg.backbone, src.name)
    run_dir = Path(out_dir) if out_dir is not None else finetune_dir(name, cache)
    by_name = run_dir.resolve() == finetune_dir(name, cache).resolve()
    spec = f"finetuned:{name}" if by_name else str(run_dir / "best.pt")
    torch.manual_seed(cfg.random_state)
    backbone = create_backbone(cfg.backbone, checkpoint=cfg.checkpoint, precision=cfg.precision, device=device,
                               resize=str(cfg.image_size) if cfg.image_size else "backbone")
    state = _prepare_run(run_dir, _run_config(cfg, src, backbone), resume)
    items = training_items(src, limit=cfg.limit, val_size=cfg.val_size, test_size=cfg.test_size,
                           random_state=cfg.random_state, progress=progress)
    items.to_csv(run_dir / "splits.csv", index=False)
    train, val = items[items["split"] == "train"], items[items["split"] == "val"]
    counts = {"train": len(train), "val": len(val)}
    resumed_from = state["epoch"] if state else 0
    if state and state["epoch"] >= cfg.epochs:
        return FinetuneResult(name, run_dir, spec, state["best_epoch"], state["history"], resumed_from,
                              time.perf_counter() - start, counts)

    labels = pd.Series(items["label"].to_numpy(), index=items["id"].to_numpy())
    workers = default_workers() if workers is None else workers
    validation = dict(src=src, items=val, labels=labels, batch_size=cfg.batch_size, workers=workers,
                      progress=progress)
    model = Classifier(backbone.model, backbone.dim).to(backbone.device)
    if state is None:
        X, ok, from_cache = probe_embeddings(backbone, src, train, cache, cfg.batch_size, workers, progress)
        model.head = probe_head(X[ok], train["label"].to_numpy()[ok], cfg.random_state).to(backbone.device)
        probe = validate(model, backbone, **validation)
        state = {"epoch": 0, "best_epoch": 0, "best_loss": math.inf, "steps": [],
                 "history": [{"epoch": 0, "probe_from_cache": from_cache, **probe}]}
    optimizer = torch.optim.AdamW(param_groups(model, cfg))
    n_steps = max(1, len(train) // cfg.batch_size)  # batches per epoch: the last partial one is dropped
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(n_steps * cfg.epochs, cfg.warmup))
    scaler = torch.amp.GradScaler(backbone.device.type, enabled=backbone.precision == "fp16")
    if resumed_from:
        for part, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
            obj.load_state_dict(state[part])
        torch.set_rng_state(state["rng"])
    augment = Augment(cfg.blur_jpeg, cfg.crop_scale, cfg.flip)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        loader = image_loader(src, train, backbone.preprocess, batch_size=cfg.batch_size, workers=workers,
                              transform=augment, seed=cfg.random_state * 1000 + epoch)
        stats = train_epoch(model, backbone, loader, labels, optimizer, scheduler, scaler, cfg.clip_grad,
                            cfg.bn_stats, progress)
        state["steps"] += stats.pop("steps")
        state["history"].append({"epoch": epoch, **stats, **validate(model, backbone, **validation)})
        state["epoch"] = epoch
        if state["history"][-1]["val_loss"] < state["best_loss"]:
            state.update(best_epoch=epoch, best_loss=state["history"][-1]["val_loss"])
            save_atomic(checkpoint_dict(model, backbone, cfg, epoch, state["history"][-1]), run_dir / "best.pt")
        save_atomic({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": torch.get_rng_state()},
              run_dir / "last.pt")
        history = {"epochs": state["history"], "steps": state["steps"]}
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))
        plot_history(state["history"], state["steps"], run_dir / "curve.png")
    model.eval()
    return FinetuneResult(name, run_dir, spec, state["best_epoch"], state["history"], resumed_from,
                          time.perf_counter() - start, counts)
