"""Commands that fit and use classifier heads: fit, ensemble, evaluate, compare, curve, predict."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from . import (
    ALLOW_PARTIAL, ENGINE, HEAD_NAMES, VAL_SIZE, cache_option, cli, data_option,
    options, quiet_option, run_options,
)


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


DOMAIN_RATE = click.option("--domain-rate", type=click.FloatRange(0.5, 1, max_open=True), default=0.99,
                           show_default=True, help="share of in-domain (val) images the out-of-domain flag keeps in")


PARAM = click.option("--param", "-p", multiple=True,
                     help="head parameter NAME=VALUE (value read as JSON), repeatable")


def show_and_save(detector, out: Path | None, cache) -> None:
    """Print a fitted model's training summary and metrics, save it (default folder: its name) and say where."""
    from ..catalog import model_dir, model_name
    from ..metrics import format_metrics

    training = detector.training
    datasets = ", ".join(s["dataset"] for s in training.get("sources", [])) or training["dataset"]
    click.echo(f"{detector.head} on {datasets} / {detector.key}: split by {training['split']}")
    if "augment" in training:
        a = training["augment"]
        click.echo(f"augmented: {a['copies']} cop{'y' if a['copies'] == 1 else 'ies'} of the training images "
                   f"({', '.join(a['specs'])}{'; one kind per copy' if a.get('pick') == 'one' else ''}), "
                   f"{a['rows']} extra training rows")
    if "fusion" in training:
        click.echo(f"fused ({training['fusion']['mode']}): {' + '.join(training['fusion']['sets'])}"
                   + "".join(f"; {n} rows without a match left out of {k}"
                             for k, n in training["fusion"]["dropped"].items() if n))
    for i, m in enumerate(training.get("ensemble", []), 1):
        accuracy = m["val_accuracy"]
        click.echo(f"member {i}: {m['head']} on {m['key']}"
                   + (f", val accuracy {accuracy:.2%}" if accuracy is not None else ""))
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
@click.option("--data", "-d", multiple=True,
              help="dataset folder/zip, .h5 cache file or dataset name; repeat to fit on several datasets "
                   "[default: the only cache]")
@click.option("--backbone", "-b", multiple=True,
              help="embedding set: backbone spec, key or key prefix [default: the only set]; repeat (or join "
                   "with +: -b A+B) to fuse several sets of the data, aligned by content id")
@FUSION
@click.option("--head", default="logreg", help=f"classifier head: {HEAD_NAMES}")
@PARAM
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON file with an object of head parameters (--param wins)")
@fit_options
@click.option("--cv", type=click.IntRange(0), default=0, help="also report K-fold cross-validation on train+val")
@click.option("--augment", multiple=True,
              help="augmented copies of the training images, repeatable: jpeg:q=30-95, blur:sigma=0-2, "
                   "resize:0.5-1 (values drawn per image; embedded once into the cache)")
@click.option("--copies", type=int, default=1, show_default=True, help="augmented copies per training image")
@click.option("--augment-pick", type=click.Choice(["all", "one"]), default="all", show_default=True,
              help="all: every --augment kind on each copy, in order; one: one kind per copy (an image's "
                   "copies take the kinds in turn)")
@click.option("--balance", type=click.Choice(["none", "sources"]), default="none", show_default=True,
              help="sources: every --data dataset weighs the same")
@DOMAIN_RATE
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="model folder [default: <cache>/models/<dataset>-<key>-<head>]")
@ALLOW_PARTIAL
@ENGINE
@cache_option
@quiet_option
def fit(data, backbone, fusion, head, param, config, val_size, test_size, seed, preprocess, cv, augment, copies,
        augment_pick, balance, domain_rate, out, allow_partial, device, runtime, batch_size, workers, cache, quiet):
    """Fit a classifier head on cached embeddings of one or several datasets; save it with its metrics."""
    from ..perturb import augmentations
    from ..workflow import fit as run

    if augment:
        try:
            augmentations(augment, copies, seed, augment_pick)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--augment/--copies") from None
    detector = run(list(data) or None, list(backbone) or None, head, fusion=fusion, params=parse_params(param, config), preprocess=preprocess,
                   cache=cache, val_size=val_size, test_size=test_size, cv=cv, random_state=seed, augment=augment,
                   copies=copies, augment_pick=augment_pick, balance=balance, domain_rate=domain_rate, device=device, runtime=runtime,
                   batch_size=batch_size, workers=workers, progress=not quiet, allow_partial=allow_partial)
    show_and_save(detector, out, cache)


@cli.command()
@click.argument("models", nargs=-1, required=True)
@DOMAIN_RATE
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="model folder [default: <cache>/models/<dataset>-<keys>-<head>-stack]")
@cache_option
def ensemble(models, domain_rate, out, cache):
    """One model from MODELS (folders or names), P(fake) the mean of theirs, without refitting them.

    Each model must read its own embedding set of the same data, fit with the same split (same --data,
    --val-size, --test-size and --seed); the threshold is chosen on that validation split. Of each set
    only the val and test rows and a sample of the train rows are read, one set at a time.
    """
    from ..ensemble import ensemble as run

    show_and_save(run(list(models), cache=cache, domain_rate=domain_rate), out, cache)


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
    from ..metrics import format_metrics
    from ..robustness import assess
    from ..tables import to_markdown

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
    from ..catalog import find_store
    from ..tables import save_table
    from ..workflow import compare as run

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
@PARAM
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True, help="seeded draws per size")
@VAL_SIZE
@click.option("--seed", type=int, default=0, help="random_state of the split and the draws")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              help="folder for curve-<new>.csv, .md and .png")
@cache_option
def curve(data, backbone, sizes, head, param, repeats, val_size, seed, out, cache):
    """Accuracy on NEW's val split against the number of labelled NEW images per class, with and without BASE."""
    from ..curve import label_curve, parse_sizes, save_curve
    from ..tables import to_markdown

    if len(data) > 2:
        raise click.UsageError("curve takes --data NEW and at most one --data BASE")
    try:
        sizes = parse_sizes(sizes)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--sizes") from None
    table = label_curve(data[0], data[1] if len(data) > 1 else None, backbone=backbone, sizes=sizes, head=head,
                        params=parse_params(param, None), repeats=repeats, cache=cache, val_size=val_size,
                        random_state=seed)
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
    from ..catalog import find_model
    from ..detector import Detector
    from ..tables import write_table
    from ..scoring import predict as run

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
