"""Commands about the backbone itself: finetune, zeroshot."""
from __future__ import annotations

from pathlib import Path

import click

from ..backbones import list_backbones
from . import (
    BATCH_SIZE, DEVICE, ENGINE, PRECISION, VAL_SIZE, WORKERS, cache_option, checkpoint_option, cli, options,
    quiet_option,
)


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--backbone", "-b", required=True, help="CLIP backbone: clip:<arch>:<tag or local file>")
@checkpoint_option("local open_clip weights file (instead of a tag in the spec)")
@click.option("--real-prompt", multiple=True, help="text describing a real image (repeatable) [default: built-in set]")
@click.option("--fake-prompt", multiple=True, help="text describing a generated image (repeatable)")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='JSON file {"real": [...], "fake": [...]}')
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all")
@ENGINE
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the metrics as JSON")
@cache_option
@quiet_option
def zeroshot(data, backbone, checkpoint, real_prompt, fake_prompt, prompts, split, device, runtime, batch_size,
             workers, out, cache, quiet):
    """Zero-shot CLIP baseline: score DATA with text prompts, report the same metrics as evaluate."""
    from ..metrics import format_metrics
    from ..zeroshot import load_prompts, save_result, zeroshot as run

    chosen = load_prompts(prompts, list(real_prompt), list(fake_prompt))
    result = run(data, backbone, prompts=chosen, checkpoint=checkpoint, split=split, cache=cache, device=device,
                 runtime=runtime, batch_size=batch_size, workers=workers, progress=not quiet)
    click.echo(f"zero-shot {backbone} on {result.name}")
    click.echo(format_metrics(result.metrics))
    if out is not None:
        click.echo(f"written to {save_result(out, backbone, chosen, result)}")


@cli.command()
@click.option("--data", "-d", required=True, type=click.Path(exists=True, path_type=Path),
              help="dataset folder or .zip (the heads' splits are used: train to learn, val to pick the epoch)")
@click.option("--backbone", "-b", default="effnet-lite0", help=f"backbone to fine-tune: {', '.join(list_backbones())}")
@checkpoint_option("local weights file for the backbone")
@click.option("--name", default=None, help="run name: written to <cache>/finetuned/<name>/ [default: <backbone>-<dataset>]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="run folder [default: <cache>/finetuned/<name>]")
@click.option("--image-size", type=click.IntRange(0), default=128,
              help="training and embedding size (images squashed to it); 0 = the backbone's own preprocessing")
@click.option("--epochs", type=click.IntRange(1), default=3)
@BATCH_SIZE
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-4, help="backbone learning rate (AdamW)")
@click.option("--head-lr", type=click.FloatRange(0, min_open=True), default=1e-3, help="head learning rate")
@click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              help="backbone lr multiplier per parameter group below the top (1 = none)")
@click.option("--weight-decay", type=click.FloatRange(0), default=0.05)
@click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              help="fraction of the steps whose learning rates rise linearly from 0, at least 20 steps and at "
                   "most half of them (then cosine decay; 0 = none)")
@click.option("--clip-grad", type=click.FloatRange(0), default=1.0, help="gradient norm clipping (0 = off)")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="validate and save a moving average of the weights with this decay per step instead of the "
                   "weights as trained (both are validated; 0 = off; 0.999 ~ the last 1,000 steps)")
@click.option("--freeze", type=click.IntRange(0), default=0,
              help="freeze the first N parameter groups (stem, then stages / transformer blocks)")
@click.option("--bn-stats", type=click.Choice(["frozen", "train"]), default="frozen",
              help="batch-norm statistics: keep the pretrained ones (matches the linear-probe start) or update them")
@click.option("--flip/--no-flip", default=True, help="random horizontal flips")
@click.option("--crop-scale", type=click.FloatRange(0, 1, min_open=True), default=0.6,
              help="random resized crop: smallest area fraction (1 = no crop)")
@click.option("--blur-jpeg", type=click.FloatRange(0, 1), default=0.5,
              help="probability of each of blur (sigma 0-3) and JPEG re-compression (quality 30-100)")
@click.option("--downscale", type=click.FloatRange(0, 1), default=0.0,
              help="probability of a downscale to 0.4-1 of the image's size before the resize to --image-size "
                   "(half-size and smaller images at prediction time)")
@click.option("--mixup", type=click.FloatRange(0), default=0.0,
              help="mixup: blend each image with another, the target in the same proportion (Beta(a, a); 0 = off, "
                   "0.2 mild, 0.8 DeiT's)")
@click.option("--cutmix", type=click.FloatRange(0), default=0.0,
              help="CutMix: paste a box of another image, the target by its area (Beta(a, a); 0 = off, 1 usual); "
                   "with --mixup too, each batch gets one of the two")
@click.option("--mix-prob", type=click.FloatRange(0, 1), default=1.0, help="share of the batches mixed")
@click.option("--limit", type=click.IntRange(1), default=None, help="train on a stratified seeded subset of N images")
@VAL_SIZE
@click.option("--test-size", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="test fraction held out, used when the dataset has no test folder (pass the same split options "
                   "as to fit/compare, so the fine-tune never trains on their val/test images)")
@click.option("--seed", type=int, default=0, help="random_state of the splits and subset (keep the heads')")
@click.option("--train-seed", type=int, default=None,
              help="seed of the training (shuffles, augmentation): another one trains on the same images and errs "
                   "differently, for ensembles  [default: --seed]")
@options(PRECISION, DEVICE, WORKERS)
@click.option("--train-runtime", type=click.Choice(["auto", "eager", "compile"]), default="auto",
              help="training step engine: auto = eager at the precision measured fastest here (with --precision "
                   "auto; cached per machine), compile = torch.compile (minutes to compile, for long runs)")
@click.option("--resume/--restart", default=True,
              help="continue an interrupted run with the same configuration, or discard it and start over")
@cache_option
@quiet_option
def finetune(data, name, out, image_size, seed, device, workers, resume, cache, quiet, **kw):
    """Fine-tune a whole backbone plus a linear head on DATA; the result is a new backbone.

    Starts from a logistic regression on the frozen embeddings (the linear probe), warms the
    learning rates up from 0 so the first steps keep the probe's loss, keeps the epoch with the
    lowest validation loss -- the probe itself when no epoch beats it -- and resumes after an
    interruption. Then e.g.
    `fakedet extract DATA --backbone finetuned:<name>`.
    """
    from ..finetune import finetune as run

    result = run(data, name=name, cache=cache, out_dir=out, device=device, workers=workers, resume=resume,
                 progress=not quiet, image_size=image_size or None, random_state=seed, **kw)
    click.echo(result.summary())
