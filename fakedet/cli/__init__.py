"""Command line: a thin click layer over the library. Each command parses options and calls the API.

The group, the options several commands share and ``main``; the commands live in the
modules of this package by family."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..backbone_config import PRECISIONS, BackboneError
from ..store import DEFAULT_CACHE, StoreError


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
                         help="autocast precision; auto = the fastest measured on this machine when the runtime is "
                              "auto (the default), else bf16 on CPUs with bf16 units and on CUDA, fp32 otherwise")
RUNTIME = click.option("--runtime", type=click.Choice(["auto", "torch", "compile", "onnx"]), default=None,
                       help="engine of the forward pass: auto = the fastest measured on this machine (cached); "
                            "onnx = ONNX Runtime (fakedet[onnx]) [default: $FAKEDET_RUNTIME or auto]")
ALLOW_PARTIAL = click.option("--allow-partial", is_flag=True,
                              help="use an embedding set that is still missing images (extraction running or "
                                   "interrupted) [default: refuse it]")
ENGINE = options(DEVICE, RUNTIME, BATCH_SIZE, WORKERS)  # how images not cached yet are embedded
VAL_SIZE = click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
                        help="validation fraction (of train when the dataset has split folders)")


def checkpoint_option(help: str):
    return click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None, help=help)


HEAD_NAMES = "knn, logreg, linsvm, svm, mlp, centroid"  # fakedet.heads.HEADS; not imported here to keep startup fast


def data_option(f):
    return click.option("--data", "-d", default=None,
                        help="dataset folder/zip, .h5 cache file or dataset name [default: the only cache]")(f)


run_options = options(  # for embedding images not cached yet, with a model's backbone
    checkpoint_option("local weights file, if the model's backbone was made from one"), ENGINE,
)


def main() -> None:
    for stream in (sys.stdout, sys.stderr):  # print file names that are not UTF-8 as the OS stores them, like ls
        stream.reconfigure(errors="surrogateescape")
    cli(prog_name="fakedet")


from . import backbone, data, demo, deploy, models, views  # noqa: E402,F401  (registers the commands)
