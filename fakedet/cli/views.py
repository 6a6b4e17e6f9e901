"""Commands that draw an embedding set: project, report."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import ALLOW_PARTIAL, cache_option, cli, data_option, options


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
    from ..project import ProjectionParams

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
    from ..catalog import find_store, pick_set
    from ..project import project as run

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

    from ..workflow import report as run

    path = run(data, backbone, model, split=split, cache=cache, out=out, projection=projection_params(kw),
               n_jobs=n_jobs, command=shlex.join(["fakedet", *sys.argv[1:]]), n_mistakes=mistakes,
               allow_partial=allow_partial)
    click.echo(f"report written to {path}")
