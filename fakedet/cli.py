"""Command line: a thin click layer over the library. Each command parses options and calls the API."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pandas as pd

from . import __version__
from .backbone_config import INTERPOLATION_NAMES, LAYERS, PRECISIONS, PRESETS, BackboneConfig
from .backbone_config import BackboneError
from .backbones import list_backbones
from .store import DEFAULT_CACHE, StoreError


class FakedetGroup(click.Group):
    """Turns library errors into one clear line and exit code 2, and Ctrl-C into a resumable stop."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (BackboneError, StoreError, FileNotFoundError, ValueError) as err:
            click.secho(f"error: {err}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: every finished batch is kept; run the same command again to resume", err=True)
            sys.exit(130)


@click.group(cls=FakedetGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="fakedet")
def cli():
    """fakedet: tell real photographs from AI-generated images using cached backbone embeddings."""


def cache_option(f):
    return click.option("--cache", type=click.Path(path_type=Path), default=None,
                        help=f"cache folder or .h5 file [default: {DEFAULT_CACHE}/<dataset>.h5]")(f)


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help="no progress bars")(f)


def options(*decorators):
    """One decorator applying click options in the order listed."""

    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
BATCH_SIZE = click.option("--batch-size", type=click.IntRange(1), default=64)
WORKERS = click.option("--workers", type=click.IntRange(0), default=None,
                       help="image decoding processes [default: spare cores, 1..4]")
PRECISION = click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                         help="autocast precision; auto = bf16 on CPUs with bf16 units and on CUDA, else fp32")
RUNTIME = click.option("--runtime", type=click.Choice(["auto", "torch", "compile", "onnx"]), default=None,
                       help="engine of the forward pass: auto = the fastest measured on this machine (cached); "
                            "onnx = ONNX Runtime (fakedet[onnx]) [default: $FAKEDET_RUNTIME or auto]")
ALLOW_PARTIAL = click.option("--allow-partial", is_flag=True,
                              help="use an embedding set that is still missing images (extraction running or "
                                   "interrupted) [default: refuse it]")
VAL_SIZE = click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
                        help="validation fraction (of train when the dataset has split folders)")


def checkpoint_option(help: str):
    return click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help=help)


backbone_options = options(  # pick a backbone and how images are fed to it
        click.option("--backbone", "-b", default="effnet-lite0",
                     help=f"backbone spec: {', '.join(list_backbones())}"),
        checkpoint_option("local weights file for the backbone (.safetensors / .pt / .pth)"),
        click.option("--preset", type=click.Choice(list(PRESETS)), default="best",
                     help="best: every block at two scales (1,0.5), resize chosen from the images' sizes; "
                          "fast: the final embedding at the backbone's own size. --layers/--resize/--scales win"),
        click.option("--layers", type=click.Choice(LAYERS), default=None,
                     help="final embedding; multi: pooled features of every stage (CNN) / block (ViT) plus the "
                          "final one; blocks: every block of an EfficientNet (else = multi) [default: the preset's]"),
        click.option("--resize", default=None,
                     help="'auto' (from the images' median short side: 128..384 px), 'backbone' (its own "
                          "resize+crop), a size like 128 (squash), 'pad' or 'pad:64' (native pixels on a canvas) "
                          "[default: the preset's]"),
        click.option("--interpolation", type=click.Choice(INTERPOLATION_NAMES),
                     default=None, help="resampling filter [default: the backbone's]"),
        click.option("--scales", default=None,
                     help="also embed the input resized by these factors and concatenate, e.g. 1,0.5 "
                          "[default: the preset's]"),
        PRECISION, DEVICE, RUNTIME, BATCH_SIZE, WORKERS,
)


def backbone_config(backbone: str, kw: dict) -> BackboneConfig:
    """The ``BackboneConfig`` given by a command's backbone options."""
    return BackboneConfig.preset(kw["preset"], backbone, checkpoint=kw["checkpoint"], layers=kw["layers"],
                                 resize=kw["resize"], interpolation=kw["interpolation"], scales=kw["scales"],
                                 precision=kw["precision"])


@cli.command()
@click.argument("data")
@backbone_options
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", help="storage type of embeddings")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: this process and its decoding workers; ray: Ray tasks decode, an actor pool embeds")
@click.option("--address", default=None, help="[ray] auto or ray://HOST:PORT to join a cluster [default: start a local one]")
@click.option("--num-workers", type=click.IntRange(1), default=1, help="[ray] embedding actors (one model each)")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, help="[ray] GPUs per embedding actor")
@click.option("--cpus-per-worker", type=click.FloatRange(0, min_open=True), default=None,
              help="[ray] CPUs (torch threads) per embedding actor [default: local Ray: cores / workers; cluster: 1]")
@cache_option
@quiet_option
def extract(data, backbone, device, runtime, batch_size, workers, dtype, engine, address, num_workers,
            gpus_per_worker, cpus_per_worker, cache, quiet, **kw):
    """Embed every readable image of DATA into the cache, once; resumable.

    DATA: a folder, .zip, WebDataset .tar shards (folder or glob), a manifest (.csv / .parquet with a
    path or url column), or any of these at an fsspec URL (s3://, gs://, https://)."""
    from .extract import extract as run

    ray_engine = None
    if engine == "ray":
        from .ray_engine import RayEngine

        ray_engine = RayEngine(address, num_workers, gpus_per_worker, cpus_per_worker)
    elif address is not None:
        raise click.UsageError("--address needs --engine ray")
    result = run(data, backbone_config(backbone, kw), cache=cache, device=device, runtime=runtime,
                 batch_size=batch_size, workers=workers, dtype=dtype, engine=ray_engine, progress=not quiet)
    click.echo(result.summary())


@cli.command()
@click.option("--failures", is_flag=True, help="list every image that could not be embedded")
@click.option("--runtimes", is_flag=True, help="the forward-pass speeds `--runtime auto` measured (img/s)")
@click.option("--check", is_flag=True, help="read every cache whole and say what is wrong (exit 1 if anything)")
@cache_option
def info(failures, runtimes, check, cache):
    """What the cache holds: datasets, image counts, embedding sets."""
    from .catalog import cache_root, describe

    if runtimes:
        return show_runtimes(cache_root(cache))
    stores = describe(cache, check=check)
    if not stores:
        click.echo(f"no caches in {cache_root(cache)}; run `fakedet extract DATA` first")
    for found in stores:
        click.secho(f"{found['path']}  ({found['source']})", bold=True)
        if found["files"]:
            click.echo(f"  {found['files']} files, {found['distinct']} distinct")
            click.echo("  " + found["counts"].to_string(index=False).replace("\n", "\n  "))
        if not found["sets"].empty:
            click.echo("  " + found["sets"].to_string(index=False).replace("\n", "\n  "))
        bad = found["failures"]
        click.echo(f"  failures: {len(bad)}")
        if failures and len(bad):
            click.echo("  " + bad[["path", "reason"]].to_string(index=False).replace("\n", "\n  "))
        if check:
            problems = found["problems"]
            click.echo("  check: " + ("ok" if not problems else "\n    ".join(["PROBLEMS", *problems])))
    if any(found.get("problems") for found in stores):
        sys.exit(1)


def show_runtimes(folder: Path) -> None:
    """Print the cached `--runtime auto` measurements under ``folder``, this machine's first."""
    from .runtimes import machine, measurements_by_machine

    tables = measurements_by_machine(folder)
    if not tables:
        click.echo(f"no runtime measurements in {folder}; `--runtime auto` measures on first use")
        return
    click.echo(f"this machine: {machine()}")
    for title, rows in tables.items():
        click.secho(f"{title} (img/s, bare forward pass):", bold=True)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            click.echo("  " + rows.to_string(index=False).replace("\n", "\n  "))


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="also write the list (.csv or .json)")
@quiet_option
def scan(data, out, quiet):
    """List unreadable, duplicate and suspicious images in DATA (decodes every file)."""
    from .datasets import scan as run
    from .tables import write_table

    problems = run(data, progress=not quiet)
    if problems.empty:
        click.echo("no problems found")
    else:
        with pd.option_context("display.max_rows", 200, "display.max_colwidth", 80, "display.width", 200):
            click.echo(problems.to_string(index=False))
        click.echo(f"{len(problems)} problems: " + ", ".join(
            f"{n} {k}" for k, n in problems["problem"].value_counts().items()))
    if out is not None:
        click.echo(f"written to {write_table(problems, out)}")


@cli.command()
@click.option("--root", type=click.Path(path_type=Path), default=DEFAULT_CACHE / "demo-images",
              help="where the synthetic demo images are written")
@cache_option
@quiet_option
def demo(root, cache, quiet):
    """End to end on a synthetic demo set that fakedet generates: extract, fit, evaluate, report."""
    from .demo import run_demo

    run_demo(root, cache=cache, progress=not quiet, echo=click.echo)


HEAD_NAMES = "knn, logreg, linsvm, svm, mlp, centroid"  # fakedet.heads.HEADS; not imported here to keep startup fast


def data_option(f):
    return click.option("--data", "-d", default=None,
                        help="dataset folder/zip, .h5 cache file or dataset name [default: the only cache]")(f)


fit_options = options(  # split and preprocessing options shared by fit and compare
        VAL_SIZE,
        click.option("--test-size", type=click.FloatRange(0, 1, max_open=True), default=0.0,
                     help="test fraction, used when the dataset has no test folder"),
        click.option("--seed", type=int, default=0, help="random_state of splits and heads"),
        click.option("--preprocess", default=None, help="feature preprocessing: l2,standard,pca:K or none "
                                                        "[default: the head's]"),
)
FUSION = click.option("--fusion", type=click.Choice(["concat", "stack"]), default="concat",
                      help="fused sets: concat = one head on the per-set preprocessed blocks side by side; "
                           "stack = one head per set, mean of their probabilities")
run_options = options(  # for embedding images not cached yet, with a model's backbone
    checkpoint_option("local weights file, if the model's backbone was made from one"), DEVICE, RUNTIME, BATCH_SIZE,
    WORKERS,
)


def warn_out_of_domain(name: str, share: float) -> None:
    click.secho(f"warning: {share:.0%} of {name} is out of the model's domain; verdicts on these images are "
                "not reliable: fit with examples of this domain (fakedet fit --data OLD --data NEW)", fg="yellow",
                err=True)


def parse_params(pairs: tuple[str, ...], config: Path | None) -> dict:
    """Head parameters from ``--config FILE`` (a JSON object) updated by ``--param NAME=VALUE`` (JSON values)."""
    params = json.loads(config.read_text()) if config else {}
    if not isinstance(params, dict):
        raise click.BadParameter(f"{config} must hold a JSON object of head parameters", param_hint="--config")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE, e.g. C=0.1", param_hint="--param")
        try:
            params[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[name.strip()] = value
    return params


@cli.command()
@click.option("--data", "-d", multiple=True,
              help="dataset folder/zip, .h5 cache file or dataset name; repeat to fit on several datasets "
                   "[default: the only cache]")
@click.option("--backbone", "-b", multiple=True,
              help="embedding set: backbone spec, key or key prefix [default: the only set]; repeat (or join "
                   "with +: -b A+B) to fuse several sets of the data, aligned by content id")
@FUSION
@click.option("--head", default="logreg", help=f"classifier head: {HEAD_NAMES}")
@click.option("--param", "-p", multiple=True, help="head parameter NAME=VALUE (value read as JSON), repeatable")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON file with an object of head parameters (--param wins)")
@fit_options
@click.option("--cv", type=click.IntRange(0), default=0, help="also report K-fold cross-validation on train+val")
@click.option("--augment", multiple=True,
              help="augmented copies of the training images, repeatable: jpeg:q=30-95, blur:sigma=0-2, "
                   "resize:0.5-1 (values drawn per image; embedded once into the cache)")
@click.option("--copies", type=int, default=1, show_default=True, help="augmented copies per training image")
@click.option("--balance", type=click.Choice(["none", "sources"]), default="none", show_default=True,
              help="sources: every --data dataset weighs the same")
@click.option("--domain-rate", type=click.FloatRange(0.5, 1, max_open=True), default=0.99, show_default=True,
              help="share of in-domain (val) images the out-of-domain flag keeps in")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="model folder [default: <cache>/models/<dataset>-<key>-<head>]")
@ALLOW_PARTIAL
@DEVICE
@RUNTIME
@BATCH_SIZE
@WORKERS
@cache_option
@quiet_option
def fit(data, backbone, fusion, head, param, config, val_size, test_size, seed, preprocess, cv, augment, copies,
        balance, domain_rate, out, allow_partial, device, runtime, batch_size, workers, cache, quiet):
    """Fit a classifier head on cached embeddings of one or several datasets; save it with its metrics."""
    from .catalog import model_dir, model_name
    from .metrics import format_metrics
    from .perturb import augmentations
    from .workflow import fit as run

    if augment:
        try:
            augmentations(augment, copies, seed)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--augment/--copies") from None
    detector = run(list(data) or None, list(backbone) or None, head, fusion=fusion, params=parse_params(param, config), preprocess=preprocess,
                   cache=cache, val_size=val_size, test_size=test_size, cv=cv, random_state=seed, augment=augment,
                   copies=copies, balance=balance, domain_rate=domain_rate, device=device, runtime=runtime,
                   batch_size=batch_size, workers=workers, progress=not quiet, allow_partial=allow_partial)
    training = detector.training
    datasets = ", ".join(s["dataset"] for s in training.get("sources", [])) or training["dataset"]
    click.echo(f"{head} on {datasets} / {detector.key}: split by {training['split']}")
    if "augment" in training:
        a = training["augment"]
        click.echo(f"augmented: {a['copies']} cop{'y' if a['copies'] == 1 else 'ies'} of the training images "
                   f"({', '.join(a['specs'])}), {a['rows']} extra training rows")
    if "fusion" in training:
        click.echo(f"fused ({training['fusion']['mode']}): {' + '.join(training['fusion']['sets'])}"
                   + "".join(f"; {n} rows without a match left out of {k}"
                             for k, n in training["fusion"]["dropped"].items() if n))
    if "tuned" in training:
        click.echo("tuned by cross-validation on train: " + ", ".join(f"{k}={v:g}" for k, v in training["tuned"].items()))
    for name, metrics in detector.metrics.items():
        if name == "cv":
            click.secho(f"[{metrics['folds']}-fold cross-validation on train+val, threshold 0.5]", bold=True)
            click.echo("\n".join(f"{k:<20}{metrics['mean'][k]:>11.4f} ± {metrics['std'][k]:.4f}"
                                 for k in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision")))
        else:
            click.secho(f"[{name}]", bold=True)
            click.echo(format_metrics(metrics))
    if detector.domain is not None:
        click.echo(f"out-of-domain flag: score > {detector.domain.threshold:.3f} "
                   f"(keeps {detector.domain.in_domain_rate:.1%} of val in domain)")
    directory = detector.save(out or model_dir(model_name(detector), cache))
    click.echo(f"model saved to {directory} (threshold {detector.threshold:.4f} chosen on "
               f"{training['threshold_from']})")


@cli.command()
@click.argument("model")
@click.option("--data", "-d", multiple=True,
              help="dataset folder/zip, .h5 cache or dataset name; repeat for a cross-dataset table "
                   "[default: the model's own data]")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default=None,
              help="[default: test split of the training data, all labelled images of another dataset]")
@click.option("--key", default=None, help="embedding set to score, e.g. a perturbed one, or A+B for a fused "
                                         "model [default: the model's]")
@click.option("--perturb", multiple=True,
              help="score perturbed copies too, repeatable: jpeg:q=75, blur:sigma=1, resize:0.5")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write per-image predictions, or the table with --perturb / several --data (.csv or .json)")
@run_options
@cache_option
@quiet_option
def evaluate(model, data, split, key, perturb, out, checkpoint, device, runtime, batch_size, workers, cache, quiet):
    """Metrics of MODEL (folder or name) on a split of its data, under perturbations, or on other datasets."""
    from .metrics import format_metrics
    from .robustness import assess
    from .tables import to_markdown

    found = assess(model, data, perturb=perturb, split=split, key=key, cache=cache, checkpoint=checkpoint,
                   device=device, runtime=runtime, batch_size=batch_size, workers=workers, progress=not quiet)
    result = found.evaluation
    if result is None:
        click.echo(to_markdown(found.table))
    else:
        click.secho(f"[{result.name}] {len(result.predictions)} images, threshold {found.detector.threshold:.4f}", bold=True)
        if result.excluded:
            click.echo(f"left out {result.excluded} images identical to ones the model was fit or tuned on")
        click.echo(format_metrics(result.metrics))
    for name, share in found.out_of_domain():
        warn_out_of_domain(name, share)
    if result is not None:
        click.echo(f"metrics added to {found.metrics_file}")
    if out is not None:
        found.write(out)
        click.echo(f"{'table' if result is None else 'predictions'} written to {out}")


@cli.command()
@data_option
@click.option("--backbone", "-b", multiple=True,
              help="candidate embedding set (spec, key or key prefix), repeatable; A+B is one candidate fusing "
                   "sets A and B [default: every unperturbed set]")
@FUSION
@click.option("--head", multiple=True, help=f"{HEAD_NAMES}; repeatable [default: every head]")
@fit_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              help="folder for compare-<dataset>.csv and .md")
@ALLOW_PARTIAL
@cache_option
def compare(data, backbone, fusion, head, val_size, test_size, seed, preprocess, out, allow_partial, cache):
    """Fit every head on every embedding set; one table, best first."""
    from .catalog import find_store
    from .tables import save_table
    from .workflow import compare as run

    store = find_store(data, cache)
    table = run(store.path, list(backbone) or None, list(head) or None, preprocess=preprocess, fusion=fusion,
                val_size=val_size, test_size=test_size, random_state=seed, allow_partial=allow_partial)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    csv, md = save_table(table, out / f"compare-{store.path.stem}")
    click.echo(f"written to {csv} and {md}")


@cli.command()
@click.option("--data", "-d", multiple=True, required=True,
              help="NEW dataset (folder/zip, .h5 or name), then optionally a BASE dataset to train with")
@click.option("--backbone", "-b", default=None, help="embedding set of NEW: spec, key or key prefix")
@click.option("--sizes", default="10,50,200,550", show_default=True, help="labelled NEW images per class")
@click.option("--head", default="logreg", show_default=True, help=f"classifier head: {HEAD_NAMES}")
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True, help="seeded draws per size")
@VAL_SIZE
@click.option("--seed", type=int, default=0, help="random_state of the split and the draws")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              help="folder for curve-<new>.csv, .md and .png")
@cache_option
def curve(data, backbone, sizes, head, repeats, val_size, seed, out, cache):
    """Accuracy on NEW's val split against the number of labelled NEW images per class, with and without BASE."""
    from .curve import label_curve, parse_sizes, save_curve
    from .tables import to_markdown

    if len(data) > 2:
        raise click.UsageError("curve takes --data NEW and at most one --data BASE")
    try:
        sizes = parse_sizes(sizes)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--sizes") from None
    table = label_curve(data[0], data[1] if len(data) > 1 else None, backbone=backbone, sizes=sizes, head=head,
                        repeats=repeats, cache=cache, val_size=val_size, random_state=seed)
    click.echo(to_markdown(table))
    csv, md, png = save_curve(table, out, Path(str(data[0])).stem)
    click.echo(f"written to {csv}, {md} and {png}")


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=".csv or .json file [default: CSV on stdout]")
@run_options
@cache_option
@quiet_option
def predict(model, images, out, checkpoint, device, runtime, batch_size, workers, cache, quiet):
    """P(fake) and label for IMAGES (files, folders or zips) with MODEL (folder or name)."""
    from .catalog import find_model
    from .detector import Detector
    from .tables import write_table
    from .scoring import predict as run

    detector = Detector.load(find_model(model, cache))
    table = run(detector, list(images), cache=cache, checkpoint=checkpoint, device=device, runtime=runtime,
                batch_size=batch_size, workers=workers, progress=not quiet)
    if out is None:
        click.echo(table.to_csv(index=False), nl=False)
    else:
        write_table(table, out)
    counts = table["label"].replace("", "unreadable").value_counts()
    click.echo(f"{len(table)} files: " + ", ".join(f"{n} {k}" for k, n in counts.items())
               + (f"; written to {out}" if out else ""), err=True)


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--backbone", "-b", required=True, help="CLIP backbone: clip:<arch>:<tag or local file>")
@checkpoint_option("local open_clip weights file (instead of a tag in the spec)")
@click.option("--real-prompt", multiple=True, help="text describing a real image (repeatable) [default: built-in set]")
@click.option("--fake-prompt", multiple=True, help="text describing a generated image (repeatable)")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='JSON file {"real": [...], "fake": [...]}')
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all")
@options(DEVICE, RUNTIME, BATCH_SIZE, WORKERS)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the metrics as JSON")
@cache_option
@quiet_option
def zeroshot(data, backbone, checkpoint, real_prompt, fake_prompt, prompts, split, device, runtime, batch_size,
             workers, out, cache, quiet):
    """Zero-shot CLIP baseline: score DATA with text prompts, report the same metrics as evaluate."""
    from .metrics import format_metrics
    from .zeroshot import load_prompts, save_result, zeroshot as run

    chosen = load_prompts(prompts, list(real_prompt), list(fake_prompt))
    result = run(data, backbone, prompts=chosen, checkpoint=checkpoint, split=split, cache=cache, device=device,
                 runtime=runtime, batch_size=batch_size, workers=workers, progress=not quiet)
    click.echo(f"zero-shot {backbone} on {result.name}")
    click.echo(format_metrics(result.metrics))
    if out is not None:
        click.echo(f"written to {save_result(out, backbone, chosen, result)}")


projection_options = options(  # how an embedding set is projected to 2-D (fakedet.project.ProjectionParams)
        click.option("--method", type=click.Choice(["umap", "tsne", "pca"]), default="umap", help="projection"),
        click.option("--neighbors", type=click.IntRange(2), default=15, help="UMAP n_neighbors"),
        click.option("--min-dist", type=click.FloatRange(0), default=0.1, help="UMAP min_dist"),
        click.option("--perplexity", type=click.FloatRange(0, min_open=True), default=30.0, help="t-SNE perplexity"),
        click.option("--pca", type=click.IntRange(0), default=50,
                     help="PCA pre-reduction to this many dimensions before t-SNE/UMAP (0 = none)"),
        click.option("--subsample", type=click.IntRange(0), default=20_000,
                     help="project at most this many images, stratified by label (0 = all)"),
        click.option("--seed", type=int, default=0, help="random_state of subsample and projection"),
        click.option("--n-jobs", type=click.IntRange(1), default=None, help="threads [default: all cores]"),
)


def projection_params(kw: dict):
    from .project import ProjectionParams

    return ProjectionParams(method=kw["method"], n_neighbors=kw["neighbors"], min_dist=kw["min_dist"],
                            perplexity=kw["perplexity"], pca=kw["pca"], subsample=kw["subsample"],
                            random_state=kw["seed"])


@cli.command()
@data_option
@click.option("--backbone", "-b", default=None,
              help="embedding set: backbone spec, key or key prefix [default: the only set]")
@projection_options
@click.option("--recompute", is_flag=True, help="recompute even if the cache holds this projection")
@ALLOW_PARTIAL
@cache_option
def project(data, backbone, recompute, allow_partial, cache, n_jobs, **kw):
    """2-D projection (UMAP, t-SNE, PCA) of an embedding set, cached in the store for reports."""
    from .catalog import find_store, pick_set
    from .project import project as run

    store = find_store(data, cache)
    result = run(store, pick_set(store, backbone), projection_params(kw), n_jobs=n_jobs, recompute=recompute,
                 allow_partial=allow_partial)
    how = "read from the cache" if result.cached else f"computed in {result.seconds:.1f}s"
    click.echo(f"{result.name} of {result.key}: {len(result.ids)} of {result.params['n_total']} images, "
               f"{how} ({store.path})")


@cli.command()
@data_option
@click.option("--backbone", "-b", default=None,
              help="embedding set: backbone spec, key or key prefix [default: the model's, or the only set]")
@click.option("--model", "-m", default=None, help="model folder or name under <cache>/models: add its evaluation")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default=None,
              help="split the model is evaluated on [default: test, else val; all images of another dataset]")
@projection_options
@click.option("--mistakes", type=click.IntRange(0), default=8,
              help="thumbnails of the most confident mistakes, per kind")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML file, or folder for index.html [default: reports/<name>/index.html]")
@ALLOW_PARTIAL
@cache_option
def report(data, backbone, model, split, mistakes, out, allow_partial, cache, n_jobs, **kw):
    """One self-contained HTML report: dataset checks, projection and (with --model) evaluation."""
    import shlex

    from .workflow import report as run

    path = run(data, backbone, model, split=split, cache=cache, out=out, projection=projection_params(kw),
               n_jobs=n_jobs, command=shlex.join(["fakedet", *sys.argv[1:]]), n_mistakes=mistakes,
               allow_partial=allow_partial)
    click.echo(f"report written to {path}")


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
@click.option("--freeze", type=click.IntRange(0), default=0,
              help="freeze the first N parameter groups (stem, then stages / transformer blocks)")
@click.option("--bn-stats", type=click.Choice(["frozen", "train"]), default="frozen",
              help="batch-norm statistics: keep the pretrained ones (matches the linear-probe start) or update them")
@click.option("--flip/--no-flip", default=True, help="random horizontal flips")
@click.option("--crop-scale", type=click.FloatRange(0, 1, min_open=True), default=0.6,
              help="random resized crop: smallest area fraction (1 = no crop)")
@click.option("--blur-jpeg", type=click.FloatRange(0, 1), default=0.5,
              help="probability of each of blur (sigma 0-3) and JPEG re-compression (quality 30-100)")
@click.option("--limit", type=click.IntRange(1), default=None, help="train on a stratified seeded subset of N images")
@VAL_SIZE
@click.option("--test-size", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              help="test fraction held out, used when the dataset has no test folder (pass the same split options "
                   "as to fit/compare, so the fine-tune never trains on their val/test images)")
@click.option("--seed", type=int, default=0, help="random_state of splits, subset, augmentation and training")
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
    from .finetune import finetune as run

    result = run(data, name=name, cache=cache, out_dir=out, device=device, workers=workers, resume=resume,
                 progress=not quiet, image_size=image_size or None, random_state=seed, **kw)
    click.echo(result.summary())

# --------------------------------------------------------------------------- explain, export, serve


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="folder for <image>.png (overlay) and <image>.npy (map)")
@click.option("--method", type=click.Choice(["auto", "grad-cam", "occlusion"]), default="auto",
              help="auto: Grad-CAM for logreg/linsvm/mlp heads, occlusion (a surrogate) for the others")
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@DEVICE
@cache_option
def explain(model, images, out, method, checkpoint, device, cache):
    """Heat maps of what drove P(fake) for IMAGES (files) with MODEL (folder or name)."""
    from .catalog import find_model
    from .detector import Detector
    from .scoring import backbone_for
    from .explain import explain_files

    detector = Detector.load(find_model(model, cache))
    table = explain_files(detector, list(images), out, backbone_for(detector, checkpoint, device, cache), method)
    click.echo(table.drop(columns=["npy"]).to_csv(index=False), nl=False)
    click.echo(f"{table['png'].notna().sum()} heat maps in {out}: {', '.join(table['method'].dropna().unique())}",
               err=True)


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="file to write, e.g. model.onnx")
@click.option("--check", type=click.IntRange(0), default=100,
              help="compare P(fake) of the file and PyTorch on N images (0: skip)")
@click.option("--check-data", type=click.Path(exists=True, path_type=Path), default=None,
              help="folder or zip to take the --check images from [default: generated images]")
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@cache_option
def export(model, fmt, out, check, check_data, checkpoint, cache):
    """Write MODEL (backbone + head) as one ONNX graph: preprocessed batch in [0, 1] -> P(fake)."""
    from .catalog import find_model
    from .detector import Detector
    from .scoring import backbone_for
    from .export import export_onnx, onnx_parity, probe_images

    detector = Detector.load(find_model(model, cache))
    backbone = backbone_for(detector, checkpoint, device="cpu", cache=cache)
    path = export_onnx(detector, out, backbone)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); input: float32 (B, 3, {backbone.preprocess.size}, "
               f"{backbone.preprocess.size}) in [0, 1], output p_fake (B,), threshold {detector.threshold:.4f}")
    if check:
        parity = onnx_parity(detector, path, probe_images(check, check_data), backbone)
        click.echo(f"parity on {parity['n']} {'images of ' + str(check_data) if check_data else 'generated images'}: max |dP| {parity['max_abs_diff']:.2e}, "
                   f"mean {parity['mean_abs_diff']:.2e}")


@cli.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 exposes it)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000)
@checkpoint_option("the backbone's original weights file, when the model was fit on local weights")
@DEVICE
@cache_option
def serve(model, host, port, checkpoint, device, cache):
    """A web page and JSON API (/docs) for MODEL: verdicts, heat maps, nearest training images."""
    try:
        import uvicorn

        from .serve import create_app
    except ImportError as err:
        raise click.UsageError(f"serve needs the serve extra: pip install 'fakedet[serve]' ({err})") from err
    from .catalog import find_model
    from .detector import Detector

    detector = Detector.load(find_model(model, cache))
    uvicorn.run(create_app(detector, checkpoint=checkpoint, device=device), host=host, port=port)


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # print file names that are not UTF-8 as the OS stores them, like ls
        stream.reconfigure(errors="surrogateescape")
    cli(prog_name="fakedet")


if __name__ == "__main__":
    main()
