"""Command line: a thin click layer over the library. Each command parses options and calls the API."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import pandas as pd

from . import __version__
from .backbones import BackboneError, list_backbones
from .store import DEFAULT_CACHE, Store, StoreError, store_path


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


def backbone_options(f):
    """Options that pick a backbone and how images are fed to it (shared by extract, predict, ...)."""
    options = [
        click.option("--backbone", "-b", default="effnet-lite0",
                     help=f"backbone spec: {', '.join(list_backbones())}"),
        click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="local weights file for the backbone (.safetensors / .pt / .pth)"),
        click.option("--layers", type=click.Choice(["final", "multi"]), default="final",
                     help="final embedding, or pooled features of every stage/block plus the final one"),
        click.option("--resize", default="backbone",
                     help="'backbone' (its own resize+crop), a size like 128 (squash), 'pad' or 'pad:64' (native pixels on a canvas)"),
        click.option("--interpolation", type=click.Choice(["bicubic", "bilinear", "nearest", "lanczos", "box"]),
                     default=None, help="resampling filter [default: the backbone's]"),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     help="autocast precision; auto = bf16 on CPUs with bf16 units and on CUDA, else fp32"),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto"),
        click.option("--batch-size", type=click.IntRange(1), default=64),
        click.option("--workers", type=click.IntRange(0), default=None,
                     help="image decoding processes [default: spare cores, 1..4]"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def backbone_kwargs(kw: dict) -> dict:
    """The create_backbone keyword arguments among a command's options."""
    names = ("checkpoint", "layers", "resize", "interpolation", "precision", "device")
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
@cache_option
def info(failures, cache):
    """What the cache holds: datasets, image counts, embedding sets."""
    root = Path(cache) if cache is not None else DEFAULT_CACHE
    paths = [root] if root.suffix in (".h5", ".hdf5") else sorted(root.glob("*.h5"))
    if not paths:
        click.echo(f"no caches in {root}; run `fakedet extract DATA` first")
        return
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
            table = sets[["key", "dim", "count", "dtype", "layers", "resize", "size", "precision", "updated"]]
            click.echo("  " + table.to_string(index=False).replace("\n", "\n  "))
        bad = store.failures()
        click.echo(f"  failures: {len(bad)}")
        if failures and len(bad):
            click.echo("  " + bad[["path", "reason"]].to_string(index=False).replace("\n", "\n  "))


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


def main() -> None:
    cli(prog_name="fakedet")


if __name__ == "__main__":
    main()
