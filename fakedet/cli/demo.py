"""The end-to-end demo command."""
from __future__ import annotations

from pathlib import Path

import click

from ..store import DEFAULT_CACHE
from . import cache_option, cli, quiet_option


@cli.command()
@click.option("--root", type=click.Path(path_type=Path), default=DEFAULT_CACHE / "demo-images",
              help="where the synthetic demo images are written")
@cache_option
@quiet_option
def demo(root, cache, quiet):
    """End to end on a synthetic demo set that fakedet generates: extract, fit, evaluate, report."""
    from ..demo import run_demo

    run_demo(root, cache=cache, progress=not quiet, echo=click.echo)
