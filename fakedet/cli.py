"""Command line: a thin click layer over the library. Each command parses options and calls the API."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pandas as pd

from . import __version__
from .backbones import LAYERS, PRECISIONS, BackboneError, list_backbones
from .store import DEFAULT_CACHE, Store, StoreError


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
        click.option("--layers", type=click.Choice(LAYERS), default="final",
                     help="final embedding; multi: pooled features of every stage (CNN) / block (ViT) plus the "
                          "final one; blocks: every block of an EfficientNet (else = multi)"),
        click.option("--resize", default="backbone",
                     help="'backbone' (its own resize+crop), a size like 128 (squash), 'pad' or 'pad:64' (native pixels on a canvas)"),
        click.option("--interpolation", type=click.Choice(["bicubic", "bilinear", "nearest", "lanczos", "box"]),
                     default=None, help="resampling filter [default: the backbone's]"),
        click.option("--scales", default=None,
                     help="also embed the input resized by these factors and concatenate, e.g. 1,0.5 [default: 1]"),
        PRECISION, DEVICE, BATCH_SIZE, WORKERS,
)


def backbone_kwargs(kw: dict) -> dict:
    """The create_backbone keyword arguments among a command's options."""
    names = ("checkpoint", "layers", "resize", "interpolation", "scales", "precision", "device")
    return {k: kw[k] for k in names}


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@backbone_options
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", help="storage type of embeddings")
@cache_option
@quiet_option
def extract(data, backbone, batch_size, workers, dtype, cache, quiet, **kw):
    """Embed every readable image of DATA (folder or .zip) into the cache, once; resumable."""
    from .extract import extract as run

    result = run(data, backbone, cache=cache, batch_size=batch_size, workers=workers, dtype=dtype,
                 progress=not quiet, **backbone_kwargs(kw))
    click.echo(result.summary())


@cli.command()
@click.option("--failures", is_flag=True, help="list every image that could not be embedded")
@click.option("--check", is_flag=True, help="read every cache whole and say what is wrong (exit 1 if anything)")
@cache_option
def info(failures, check, cache):
    """What the cache holds: datasets, image counts, embedding sets."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    paths = [root] if root.suffix in (".h5", ".hdf5") else sorted(root.glob("*.h5"))
    if not paths:
        click.echo(f"no caches in {root}; run `fakedet extract DATA` first")
        return
    found_problems = False
    for path in paths:
        store = Store(path)
        images = store.images()
        attrs = store.attrs()
        click.secho(f"{path}  ({attrs['source']})", bold=True)
        if not images.empty:
            counts = images.groupby(["split", "label"]).size().rename("files").reset_index()
            counts["label"] = counts["label"].map({0: "real", 1: "fake", -1: "unlabelled"})
            click.echo(f"  {len(images)} files, {images['id'].nunique()} distinct")
            click.echo("  " + counts.to_string(index=False).replace("\n", "\n  "))
        sets = store.embedding_sets()
        if not sets.empty:
            table = sets[["key", "dim", "count", "dtype", "layers", "resize", "size", "scales", "precision", "updated"]]
            click.echo("  " + table.to_string(index=False).replace("\n", "\n  "))
        bad = store.failures()
        click.echo(f"  failures: {len(bad)}")
        if failures and len(bad):
            click.echo("  " + bad[["path", "reason"]].to_string(index=False).replace("\n", "\n  "))
        if check:
            from .storecheck import check_store

            problems = check_store(store)
            click.echo("  check: " + ("ok" if not problems else "\n    ".join(["PROBLEMS", *problems])))
            found_problems = found_problems or bool(problems)
    if check and found_problems:
        sys.exit(1)


@cli.command()
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="also write the list as CSV")
@quiet_option
def scan(data, out, quiet):
    """List unreadable, duplicate and suspicious images in DATA (decodes every file)."""
    from .datasets import scan as run

    problems = run(data, progress=not quiet)
    if problems.empty:
        click.echo("no problems found")
    else:
        with pd.option_context("display.max_rows", 200, "display.max_colwidth", 80, "display.width", 200):
            click.echo(problems.to_string(index=False))
        click.echo(f"{len(problems)} problems: " + ", ".join(
            f"{n} {k}" for k, n in problems["problem"].value_counts().items()))
    if out is not None:
        problems.to_csv(out, index=False)
        click.echo(f"written to {out}")


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
run_options = options(  # for embedding images not cached yet, with a model's backbone
    checkpoint_option("local weights file, if the model's backbone was made from one"), DEVICE, BATCH_SIZE, WORKERS,
)


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


def write_table(table: pd.DataFrame, out: Path) -> None:
    """A table as ``.json`` (records) or CSV, by the file suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        table.to_json(out, orient="records", indent=2)
    else:
        table.to_csv(out, index=False, errors="surrogateescape")  # file names as the OS stores them


@cli.command()
@data_option
@click.option("--backbone", "-b", default=None,
              help="embedding set: backbone spec, key or key prefix [default: the only set]")
@click.option("--head", default="logreg", help=f"classifier head: {HEAD_NAMES}")
@click.option("--param", "-p", multiple=True, help="head parameter NAME=VALUE (value read as JSON), repeatable")
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON file with an object of head parameters (--param wins)")
@fit_options
@click.option("--cv", type=click.IntRange(0), default=0, help="also report K-fold cross-validation on train+val")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="model folder [default: <cache>/models/<dataset>-<key>-<head>]")
@ALLOW_PARTIAL
@cache_option
def fit(data, backbone, head, param, config, val_size, test_size, seed, preprocess, cv, out, allow_partial, cache):
    """Fit a classifier head on cached embeddings; save it with its metrics."""
    from .detector import fit as run, model_dir
    from .metrics import format_metrics

    detector = run(data, backbone, head, params=parse_params(param, config), preprocess=preprocess, cache=cache,
                   val_size=val_size, test_size=test_size, cv=cv, random_state=seed, allow_partial=allow_partial)
    training = detector.training
    click.echo(f"{head} on {training['dataset']} / {detector.key}: split by {training['split']}")
    for name, metrics in detector.metrics.items():
        if name == "cv":
            click.secho(f"[{metrics['folds']}-fold cross-validation on train+val, threshold 0.5]", bold=True)
            click.echo("\n".join(f"{k:<20}{metrics['mean'][k]:>11.4f} ± {metrics['std'][k]:.4f}"
                                 for k in ("accuracy", "balanced_accuracy", "roc_auc", "average_precision")))
        else:
            click.secho(f"[{name}]", bold=True)
            click.echo(format_metrics(metrics))
    directory = detector.save(out or model_dir(f"{training['dataset']}-{detector.key}-{head}", cache))
    click.echo(f"model saved to {directory} (threshold {detector.threshold:.4f} chosen on "
               f"{training['threshold_from']})")


@cli.command()
@click.argument("model")
@click.option("--data", "-d", multiple=True,
              help="dataset folder/zip, .h5 cache or dataset name; repeat for a cross-dataset table "
                   "[default: the model's own data]")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default=None,
              help="[default: test split of the training data, all labelled images of another dataset]")
@click.option("--key", default=None, help="embedding set to score, e.g. a perturbed one [default: the model's]")
@click.option("--perturb", multiple=True,
              help="score perturbed copies too, repeatable: jpeg:q=75, blur:sigma=1, resize:0.5")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write per-image predictions, or the table with --perturb / several --data (.csv or .json)")
@run_options
@cache_option
@quiet_option
def evaluate(model, data, split, key, perturb, out, checkpoint, device, batch_size, workers, cache, quiet):
    """Metrics of MODEL (folder or name) on a split of its data, under perturbations, or on other datasets."""
    from .detector import Detector, evaluate as run, find_model, to_markdown
    from .metrics import format_metrics

    directory = find_model(model, cache)
    detector = Detector.load(directory)
    options = dict(split=split, cache=cache, checkpoint=checkpoint, device=device, batch_size=batch_size,
                   workers=workers, progress=not quiet)
    if perturb or len(data) > 1:
        from .perturb import parse_perturbation
        from .robustness import cross_evaluate, evaluate_perturbed

        if perturb and len(data) > 1:
            raise click.UsageError("--perturb works on one dataset at a time")
        if perturb:
            table = evaluate_perturbed(detector, [parse_perturbation(p) for p in perturb],
                                       data[0] if data else None, **options)
        else:
            table = cross_evaluate(detector, list(data), **options)
        click.echo(to_markdown(table))
        if out is not None:
            write_table(table, out)
            click.echo(f"table written to {out}")
        return
    result = run(detector, data[0] if data else None, key=key, **options)
    click.secho(f"[{result.name}] {len(result.predictions)} images, threshold {detector.threshold:.4f}", bold=True)
    if result.excluded:
        click.echo(f"left out {result.excluded} images identical to ones the model was fit or tuned on")
    click.echo(format_metrics(result.metrics))
    detector.metrics[result.name] = result.metrics
    click.echo(f"metrics added to {detector.save_metrics(directory)}")
    if out is not None:
        write_table(result.predictions, out)
        click.echo(f"predictions written to {out}")


@cli.command()
@data_option
@click.option("--backbone", "-b", multiple=True,
              help="embedding set (spec, key or key prefix), repeatable [default: every unperturbed set]")
@click.option("--head", multiple=True, help=f"{HEAD_NAMES}; repeatable [default: every head]")
@fit_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              help="folder for compare-<dataset>.csv and .md")
@ALLOW_PARTIAL
@cache_option
def compare(data, backbone, head, val_size, test_size, seed, preprocess, out, allow_partial, cache):
    """Fit every head on every embedding set; one table, best first."""
    from .detector import compare as run, find_store, save_table

    store = find_store(data, cache)
    table = run(store.path, list(backbone) or None, list(head) or None, preprocess=preprocess,
                val_size=val_size, test_size=test_size, random_state=seed, allow_partial=allow_partial)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    csv, md = save_table(table, out / f"compare-{store.path.stem}")
    click.echo(f"written to {csv} and {md}")


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=".csv or .json file [default: CSV on stdout]")
@run_options
@cache_option
@quiet_option
def predict(model, images, out, checkpoint, device, batch_size, workers, cache, quiet):
    """P(fake) and label for IMAGES (files, folders or zips) with MODEL (folder or name)."""
    from .detector import Detector, find_model, predict as run

    detector = Detector.load(find_model(model, cache))
    table = run(detector, list(images), cache=cache, checkpoint=checkpoint, device=device,
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
@options(DEVICE, BATCH_SIZE, WORKERS)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the metrics as JSON")
@cache_option
@quiet_option
def zeroshot(data, backbone, checkpoint, real_prompt, fake_prompt, prompts, split, device, batch_size, workers,
             out, cache, quiet):
    """Zero-shot CLIP baseline: score DATA with text prompts, report the same metrics as evaluate."""
    from .metrics import format_metrics
    from .zeroshot import load_prompts, zeroshot as run

    chosen = load_prompts(prompts, list(real_prompt), list(fake_prompt))
    result = run(data, backbone, prompts=chosen, checkpoint=checkpoint, split=split, cache=cache, device=device,
                 batch_size=batch_size, workers=workers, progress=not quiet)
    click.echo(f"zero-shot {backbone} on {result.name}")
    click.echo(format_metrics(result.metrics))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"backbone": backbone, "prompts": chosen, "metrics": result.metrics}, indent=2))
        click.echo(f"written to {out}")


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
    from .detector import find_store, pick_set
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

    from .report import write_report

    path = write_report(data, backbone, model, split=split, cache=cache, out=out, projection=projection_params(kw),
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
              help="fraction of the steps with linear warm-up (then cosine decay)")
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
@click.option("--resume/--restart", default=True,
              help="continue an interrupted run with the same configuration, or discard it and start over")
@cache_option
@quiet_option
def finetune(data, name, out, image_size, seed, device, workers, resume, cache, quiet, **kw):
    """Fine-tune a whole backbone plus a linear head on DATA; the result is a new backbone.

    Starts from a logistic regression on the frozen embeddings, keeps the epoch with the lowest
    validation loss and resumes after an interruption. Then e.g.
    `fakedet extract DATA --backbone finetuned:<name>`.
    """
    from .finetune import finetune as run

    result = run(data, name=name, cache=cache, out_dir=out, device=device, workers=workers, resume=resume,
                 progress=not quiet, image_size=image_size or None, random_state=seed, **kw)
    click.echo(result.summary())


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # print file names that are not UTF-8 as the OS stores them, like ls
        stream.reconfigure(errors="surrogateescape")
    cli(prog_name="fakedet")


if __name__ == "__main__":
    main()
