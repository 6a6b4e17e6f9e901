"""Fine-tuning on CPU: training speed, and validation accuracy before and after fine-tuning.

On a stratified seeded subset of CIFAKE train (default 10,000 images; the heads' grouped split of
the whole set, so 8,000 train / 2,000 val):

1. seconds per training step (batch 64, train mode, the run's precision) at a few image sizes;
2. before: frozen effnet-lite0 embeddings of the subset at the training size (cached, so the
   fine-tune starts its linear probe from them), logistic regression on train, scored on val;
3. ``fakedet.finetune.finetune`` on the same subset, written to ``cache/finetuned/<name>``;
4. after: the fine-tuned model's own head on val, and logistic regression on the fine-tuned
   embeddings (extracted like any backbone).

Accuracies at threshold 0.5. Appends "## Fine-tuning" to BENCHMARKS.md. Rerunning resumes
(cached embeddings, interrupted training).

    python bench/finetune.py          # the full run: about 15 min on 2 quiet cores (fine-tuning itself ~10)
    python bench/finetune.py --limit 400 --epochs 1 --timing-sizes 64 --no-write   # smoke test
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, ROOT, median_time, output_options, publish, require  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.datasets import discover  # noqa: E402
from fakedet.tables import to_markdown  # noqa: E402
from fakedet.extract import extract  # noqa: E402
from fakedet.finetune import FinetuneConfig, finetune  # noqa: E402
from fakedet.finetune_data import training_items  # noqa: E402
from fakedet.heads import make_head  # noqa: E402
from fakedet.metrics import binary_metrics  # noqa: E402
from fakedet.store import Store  # noqa: E402
from fakedet.train_speed import random_batch, training_step  # noqa: E402

SCORES = ("accuracy", "balanced_accuracy", "roc_auc")


def step_seconds(spec: str, size: int, batch: int = 64, steps: int = 4) -> float:
    """Median seconds of ``finetune``'s training step on random images, after one warm-up."""
    backbone = create_backbone(spec, resize=str(size))
    step, (x, y) = training_step(backbone), random_batch(backbone, batch)
    step(x, y)
    return median_time(lambda: step(x, y), steps)


def logreg_on_val(store: Store, key: str, items: pd.DataFrame, seed: int) -> dict:
    """Logistic regression (the heads' ``logreg``) fit on the run's train ids, scored on its val ids."""
    emb = store.load(key)
    split = emb.frame["id"].map(items.set_index("id")["split"]).fillna("").to_numpy()
    train, val = split == "train", split == "val"
    pipeline = make_head("logreg", random_state=seed, n_samples=int(train.sum())).fit(emb.X[train], emb.y[train])
    p_fake = pipeline.predict_proba(emb.X[val])[:, list(pipeline.classes_).index(1)]
    return {k: binary_metrics(emb.y[val], p_fake)[k] for k in SCORES}


def run(args) -> str:
    cfg = FinetuneConfig(image_size=args.image_size, epochs=args.epochs, limit=args.limit, random_state=args.seed,
                         blur_jpeg=args.blur_jpeg, downscale=args.downscale, crop_scale=args.crop_scale, lr=args.lr)
    timing = [{"image_size": s, "s_per_step": step_seconds(cfg.backbone, s)} for s in args.timing_sizes]
    for row in timing:
        row["images_per_s"] = 64 / row["s_per_step"]
        print(row, flush=True)

    start = time.perf_counter()
    items = training_items(args.data, limit=args.limit, random_state=args.seed, progress=False)
    frame = discover(args.data, progress=False)
    subset = frame[frame["id"].isin(items["id"])]
    base = create_backbone(cfg.backbone, resize=str(args.image_size))
    frozen = extract(args.data, base, cache=args.cache, frame=subset, workers=args.workers)
    print(frozen.summary(), flush=True)
    store = Store(frozen.store)
    before = logreg_on_val(store, frozen.key, items, args.seed)
    probe_seconds = time.perf_counter() - start
    if args.native_probe:  # the frozen backbone at its own preprocessing (effnet-lite0: 224 px), a stronger probe
        own = create_backbone(cfg.backbone)
        native = extract(args.data, own, cache=args.cache, frame=subset, workers=args.workers)
        native_row = {"model": f"frozen {cfg.backbone} at its own preprocessing ({own.preprocess.size} px) + logreg",
                      **logreg_on_val(store, native.key, items, args.seed)}

    name = args.name or f"{cfg.backbone}-cifake-{args.limit or 'all'}-{args.image_size}px"
    result = finetune(args.data, cfg, name=name, cache=args.cache, out_dir=ROOT / "cache" / "finetuned" / name,
                      workers=args.workers)
    print(result.summary(), flush=True)
    tuned = extract(args.data, result.spec, cache=args.cache, frame=subset, workers=args.workers)
    after = logreg_on_val(store, tuned.key, items, args.seed)

    best = result.history[result.best_epoch]
    table = pd.DataFrame([
        {"model": f"frozen {cfg.backbone} at {args.image_size} px + logreg (linear probe)", **before},
        *([native_row] if args.native_probe else []),
        {"model": f"fine-tuned, own head (best epoch {result.best_epoch})", **{k: best[f"val_{k}"] for k in SCORES}},
        {"model": "fine-tuned embeddings + logreg", **after},
    ])
    epochs = pd.DataFrame([{k: h[k] for k in ("epoch", "train_loss", "train_accuracy", "images_per_second",
                                              "seconds", "val_loss", "val_accuracy")} for h in result.history[1:]])
    train_seconds = epochs["seconds"].sum()
    options = ", ".join(f"{k}={v}" for k, v in vars(cfg).items() if k not in ("limit",))
    timing_md = (f"Seconds per training step, batch 64, {base.precision}, channels-last "
                 f"(random images, median of 4 after a warm-up):\n\n{to_markdown(pd.DataFrame(timing), 3)}\n\n"
                 if timing else "")
    return (
        f"Data: {f'{args.limit} images' if args.limit else 'all images'} of `{Path(args.data).name}` "
        f"({'stratified seeded subset; ' if args.limit else ''}heads' grouped split: "
        f"{result.counts['train']} train, {result.counts['val']} val). Fine-tuning options: {options}. "
        f"Run folder: `{result.run_dir.relative_to(ROOT) if result.run_dir.is_relative_to(ROOT) else result.run_dir}`"
        f" (backbone `{result.spec}`).\n\n{timing_md}"
        f"Validation scores at threshold 0.5:\n\n{to_markdown(table)}\n\n"
        f"Training per epoch:\n\n{to_markdown(epochs, 3)}\n\n"
        f"Time: frozen embeddings of the subset + probe {probe_seconds:.0f}s, fine-tuning run {result.seconds:.0f}s "
        f"(training {train_seconds:.0f}s at {epochs['images_per_second'].mean():.0f} img/s, the rest validation "
        f"and setup): {probe_seconds + result.seconds:.0f}s together, what `fakedet finetune{f' --limit {args.limit}' if args.limit else ''}` "
        f"takes from scratch. Fine-tuned embeddings {tuned.seconds['total']:.0f}s; everything "
        f"{time.perf_counter() - start:.0f}s (the step-timing table not included)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CIFAKE)
    parser.add_argument("--limit", type=lambda s: int(s) or None, default=10_000, help="subset size (0 = all images)")
    parser.add_argument("--image-size", type=int, default=FinetuneConfig.image_size)
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    parser.add_argument("--blur-jpeg", type=float, default=FinetuneConfig.blur_jpeg)
    parser.add_argument("--downscale", type=float, default=FinetuneConfig.downscale)
    parser.add_argument("--crop-scale", type=float, default=FinetuneConfig.crop_scale)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--name", default=None, help="run name [default: effnet-lite0-cifake-<limit>-<size>px]")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "bench-finetune",
                        help="cache for the subset's embeddings (its image table is the subset)")
    parser.add_argument("--timing-sizes", type=lambda s: [int(v) for v in s.split(",") if v], default=[64, 96, 128],
                        help="image sizes for the seconds-per-step table ('' to skip)")
    parser.add_argument("--no-native-probe", dest="native_probe", action="store_false",
                        help="skip the extra baseline: the frozen backbone at its own preprocessing + logreg")
    output_options(parser, "Fine-tuning")
    args = parser.parse_args()
    require(args.data)
    publish(args, run(args))


if __name__ == "__main__":
    main()
