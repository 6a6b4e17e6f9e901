"""Projection speed: UMAP and t-SNE of 20,000 embeddings (targets on 2 cores: UMAP < 60 s, t-SNE < 90 s).

    python bench/project.py cache/cifake-train.h5 [--backbone effnet-lite0] [--n 20000]
    python bench/project.py --random --n 2000 --out /tmp/BENCH.md      # smoke test, no cache needed

Times ``fakedet.project.compute_projection`` after the stratified subsample, exactly as
``fakedet project`` runs it (PCA to 50 dims, exact k-NN, then openTSNE / umap-learn), without
reading or writing the store. The first run in the process includes numba's JIT compilation
(UMAP); ``--repeats 2`` also measures warm runs. ``label agreement`` is the share of points whose
10 nearest 2-D neighbours are mostly of their own label: a sanity check that the layout kept the
classes' structure. Prints a Markdown table and writes it to BENCHMARKS.md under "## Projections".
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, write_section  # noqa: E402
from fakedet.project import ProjectionParams, compute_projection, nearest_neighbors, stratified_subsample  # noqa: E402
from fakedet.store import Store  # noqa: E402

TARGETS = {"umap": 60.0, "tsne": 90.0, "pca": None}


def random_embeddings(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Two labelled classes of 10 Gaussian clusters each, non-negative like pooled CNN features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(20, dim))
    cluster = rng.integers(0, 20, n)
    X = np.maximum(centres[cluster] + rng.normal(0, 0.7, size=(n, dim)), 0).astype(np.float32)
    return X, (cluster >= 10).astype(np.int8), f"random clusters ({n} x {dim})"


def cached_embeddings(cache: Path, backbone: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    store = Store(cache)
    sets = store.embedding_sets()
    key = store.resolve_key(backbone) if backbone else sets.loc[sets["perturb"] == "", "key"].iloc[0]
    data = store.load(key)
    return data.X, data.y, f"{cache.name} / {key}"


def label_agreement(coords: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    keep = labels >= 0
    indices, _ = nearest_neighbors(coords[keep], k)
    y = labels[keep]
    return float(np.mean((y[indices].mean(axis=1) > 0.5) == (y == 1)))


def run(X: np.ndarray, y: np.ndarray, params: ProjectionParams, repeats: int, n_jobs: int) -> dict:
    rows = stratified_subsample(y, params.subsample, params.random_state)
    times, coords = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        coords = compute_projection(X[rows], params, n_jobs=n_jobs)
        times.append(time.perf_counter() - start)
    target = TARGETS[params.method]
    return {
        "method": params.method, "name": params.name, "points": len(rows), "dims": X.shape[1],
        "first run s": f"{times[0]:.1f}",
        "warm s": f"{statistics.median(times[1:]):.1f}" if repeats > 1 else "-",
        "target s": f"< {target:.0f}" if target else "-",
        "ok": ("yes" if times[0] < target else "NO") if target else "-",
        "label agreement": f"{label_agreement(coords, y[rows]):.3f}",
    }


def markdown(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", nargs="?", type=Path, help="a fakedet .h5 cache")
    parser.add_argument("--backbone", "-b", default=None, help="embedding set [default: the first unperturbed]")
    parser.add_argument("--random", action="store_true", help="random clustered data instead of a cache")
    parser.add_argument("--dim", type=int, default=1280, help="dimensions of --random data")
    parser.add_argument("--n", type=int, default=20_000, help="points projected (stratified subsample)")
    parser.add_argument("--methods", nargs="+", default=["umap", "tsne"], choices=list(TARGETS))
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the first includes JIT")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    if args.random == (args.cache is not None):
        parser.error("give a cache file or --random")
    if args.random:
        X, y, what = random_embeddings(args.n, args.dim)
    else:
        if not args.cache.is_file():
            sys.exit(f"no cache at {args.cache}")
        X, y, what = cached_embeddings(args.cache, args.backbone)
    rows = []
    for method in args.methods:
        params = ProjectionParams(method, subsample=args.n)
        rows.append(run(X, y, params, args.repeats, args.n_jobs))
        print(f"{method}: {rows[-1]['first run s']} s", flush=True)
    note = "" if len(X) >= args.n else f" (the set holds only {len(X)} images)"
    body = (f"Data: {what}, {len(X)} embeddings of {X.shape[1]} dims{note}; n_jobs={args.n_jobs}; "
            f"first run includes numba JIT compilation.\n\n{markdown(rows)}")
    write_section("Projections", body, out=args.out)


if __name__ == "__main__":
    main()
