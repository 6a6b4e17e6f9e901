"""Local engine vs Ray engine (1 and 2 embedding actors) on the same CIFAKE images, measured in one run.

Each engine embeds the same ``--n`` images and a ``--small`` subset of them into a fresh cache
(a Ray run starts and stops its own local Ray instance, as ``fakedet extract --engine ray`` does).
From the two wall-clock times: throughput after start-up = (n - small) / (t(n) - t(small)), and
start-up overhead = t(small) - small / throughput (Ray: instance start, actor start, model load).
Each Ray actor gets ``cores / workers`` CPUs (torch threads; a local instance started by the
engine keeps one more logical CPU for the decoding tasks), the local engine's model all
cores with its default decoding workers. Both run the forward pass in torch (the Ray actors' runtime;
``--runtime onnx`` is local-engine only), so the comparison is of the engines, not the runtimes.

    python bench/engines.py --n 5000 --small 500 --batch-size 32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, output_options, publish, require  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.datasets import discover  # noqa: E402
from fakedet.extract import extract  # noqa: E402
from fakedet.ray_engine import RayEngine  # noqa: E402


def timed(data, backbone, frame, batch_size: int, engine: RayEngine | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = extract(data, backbone, frame=frame, cache=tmp, batch_size=batch_size, engine=engine,
                         runtime="torch", progress=False)
        elapsed = time.perf_counter() - start
    if result.n_embedded != frame["id"].nunique():
        sys.exit(f"{result.n_embedded} of {frame['id'].nunique()} images embedded: not a throughput run")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CIFAKE, help="dataset (any fakedet location)")
    parser.add_argument("--n", type=int, default=5000, help="images per run")
    parser.add_argument("--small", type=int, default=500, help="images of the short run that measures start-up")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="effnet-lite0")
    output_options(parser, "Ray engine")
    args = parser.parse_args()
    if args.data == CIFAKE:
        require(CIFAKE)
    if not 0 < args.small < args.n:
        parser.error("--small must be between 0 and --n")

    frame = discover(args.data, progress=False).sample(n=args.n, random_state=0).sort_values("path")
    small = frame.iloc[: args.small]
    backbone = create_backbone(args.backbone)
    engines = {"local engine (DataLoader workers)": None}
    for workers in (1, 2):
        cpus = max(1, (os.cpu_count() or 1) // workers)  # the cores shared by the actors (one more for decoding)
        engines[f"Ray engine, {workers} actor{'s' * (workers > 1)} x {cpus} CPU"] = RayEngine(
            num_workers=workers, cpus_per_worker=cpus)
    rows = []
    for name, engine in engines.items():
        t_small = timed(args.data, backbone, small, args.batch_size, engine)
        t_full = timed(args.data, backbone, frame, args.batch_size, engine)
        steady = (args.n - args.small) / max(t_full - t_small, 1e-9)
        rows.append((name, steady, t_small - args.small / steady, args.n / t_full))
    local = rows[0][1]
    table = ["| engine | img/s after start-up | vs local | start-up overhead (s) | img/s overall |",
             "|---|---:|---:|---:|---:|"]
    table += [f"| {name} | {ips:.1f} | {ips / local:.0%} | {startup:.1f} | {overall:.1f} |"
              for name, ips, startup, overall in rows]
    body = (f"Backbone `{args.backbone}` ({backbone.preprocess.size} px, torch {backbone.precision}), batch size "
            f"{args.batch_size}, {args.n} images of {args.data.name} (start-up from a {args.small}-image run), "
            "all measured in this one run.\n\n" + "\n".join(table) +
            "\n\nTarget: the Ray engine at >= 90% of the local engine's img/s after start-up on one machine. "
            "On a GPU box or a cluster: `fakedet extract DATA --engine ray --address auto --num-workers <GPUs> "
            "--gpus-per-worker 1 --cpus-per-worker 4`.")
    publish(args, body)


if __name__ == "__main__":
    main()
