"""Commands about data and the cache: extract, info, scan."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import pandas as pd

from ..backbone_config import INTERPOLATION_NAMES, LAYERS, PRESETS, TTAS, BackboneConfig
from ..backbones import list_backbones
from . import (
    ENGINE, PRECISION, cache_option, checkpoint_option, cli, options, quiet_option,
)


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
        click.option("--tta", type=click.Choice(TTAS), default="none", show_default=True,
                     help="test-time augmentation: flip = mean of the image's and its mirror image's embedding "
                          "(twice the cost)"),
        PRECISION, ENGINE,
)


def backbone_config(backbone: str, kw: dict) -> BackboneConfig:
    """The ``BackboneConfig`` given by a command's backbone options."""
    return BackboneConfig.preset(kw["preset"], backbone, checkpoint=kw["checkpoint"], layers=kw["layers"],
                                 resize=kw["resize"], interpolation=kw["interpolation"], scales=kw["scales"],
                                 precision=kw["precision"], tta=kw["tta"])


@cli.command()
@click.argument("data")
@backbone_options
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", help="storage type of embeddings")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="local: this process and its decoding workers; ray: Ray tasks decode, an actor pool embeds")
@click.option("--address", default=None, help="[ray] auto or ray://HOST:PORT to join a cluster [default: start a local one]")
@click.option("--num-workers", type=click.IntRange(1), default=1,
              help="[ray] embedding actors (one model each; on one CPU-only machine, one per core measured fastest)")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, help="[ray] GPUs per embedding actor")
@click.option("--cpus-per-worker", type=click.FloatRange(0, min_open=True), default=1.0,
              help="[ray] CPUs (torch threads) per embedding actor")
@cache_option
@quiet_option
def extract(data, backbone, device, runtime, batch_size, workers, dtype, engine, address, num_workers,
            gpus_per_worker, cpus_per_worker, cache, quiet, **kw):
    """Embed every readable image of DATA into the cache, once; resumable.

    DATA: a folder, .zip, WebDataset .tar shards (folder or glob), a manifest (.csv / .parquet with a
    path or url column), or any of these at an fsspec URL (s3://, gs://, https://)."""
    from ..extract import extract as run

    ray_engine = None
    if engine == "ray":
        from ..ray_engine import RayEngine

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
    from ..catalog import cache_root, describe

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
    from ..runtimes import machine, measurements_by_machine

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
    from ..datasets import scan as run
    from ..tables import write_table

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
