"""Extraction throughput and memory on CIFAKE images, measured side by side in one run.

Compares, at the same batch size and settings:
  * bare model: ``Backbone.embed`` on pre-made uint8 tensors (no decoding, no I/O);
  * the pipeline: ``fakedet.extract.extract`` (zip reading, decoding in workers, HDF5 writes);
  * a notebook-style loop: open, timm transform, forward, one image at a time, fp32;
and the pipeline's peak RSS at two dataset sizes (target: flat).

    python bench/extract.py --n 5000 --batch-size 32
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, median_time, require, write_section  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.datasets import decode_image, discover  # noqa: E402
from fakedet.extract import extract  # noqa: E402


def subset(frame, n: int, seed: int = 0):
    return frame.sample(n=min(n, len(frame)), random_state=seed).sort_values("path")


def bare(backbone, batches: list[torch.Tensor]) -> None:
    for batch in batches:
        backbone.embed(batch)


def notebook_loop(backbone, paths: list[str]) -> None:
    """What a notebook does: per image open, transform, forward in fp32, no batching."""
    import timm.data

    model = copy.deepcopy(backbone.model.trunk).float().to(memory_format=torch.contiguous_format).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    archive = zipfile.ZipFile(CIFAKE)
    with torch.no_grad():
        for path in paths:
            from PIL import Image

            image = Image.open(io.BytesIO(archive.read(path))).convert("RGB")
            model(transform(image).unsqueeze(0))


RSS_CHILD = """
import json, resource, sys
from fakedet.datasets import discover
from fakedet.extract import extract
frame = discover(sys.argv[1], progress=False).sample(n=int(sys.argv[2]), random_state=1).sort_values("path")
extract(sys.argv[1], sys.argv[3], frame=frame, cache=sys.argv[4], batch_size=int(sys.argv[5]), progress=False)
print(json.dumps({"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def peak_rss(n: int, spec: str, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(CIFAKE), str(n), spec, tmp, str(batch_size)],
                             capture_output=True, text=True, check=True)
    return {k: v / 1024 for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images for the throughput runs")
    parser.add_argument("--notebook-n", type=int, default=500, help="images for the slow per-image loop")
    parser.add_argument("--rss-n", type=int, nargs=2, default=[2000, 20000], help="two dataset sizes for peak RSS")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="effnet-lite0")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    require(CIFAKE)

    frame = subset(discover(CIFAKE, progress=False), args.n)
    backbone = create_backbone(args.backbone)
    fp32 = create_backbone(args.backbone, precision="fp32")
    archive = zipfile.ZipFile(CIFAKE)
    tensors = torch.stack([backbone.preprocess(decode_image(archive.read(p))) for p in frame["path"]])
    batches = list(torch.split(tensors, args.batch_size))
    n = len(frame)

    rows = []
    t_bare = median_time(lambda: bare(backbone, batches), args.repeats)
    rows.append((f"bare model, {backbone.precision} + channels-last (pre-made tensors)", n / t_bare))
    t_fp32 = median_time(lambda: bare(fp32, batches), args.repeats)
    rows.append(("bare model, fp32 + channels-last (pre-made tensors)", n / t_fp32))
    pipeline = {}
    for workers in (0, 1, 2):
        def run(workers=workers):
            with tempfile.TemporaryDirectory() as tmp:
                extract(CIFAKE, backbone, frame=frame, cache=tmp, batch_size=args.batch_size,
                        workers=workers, progress=False)
        pipeline[workers] = median_time(run, args.repeats)
        rows.append((f"`fakedet extract` pipeline, {workers} decoding workers (zip -> HDF5)", n / pipeline[workers]))
    paths = frame["path"].tolist()[: args.notebook_n]
    t_nb = median_time(lambda: notebook_loop(backbone, paths), args.repeats)
    rows.append(("notebook loop: open, transform, forward one image at a time, fp32", len(paths) / t_nb))

    best = max(rows[2:5], key=lambda r: r[1])
    table = ["| what | images/s | vs bare model |", "|---|---:|---:|"]
    table += [f"| {name} | {ips:.1f} | {ips / rows[0][1]:.0%} |" for name, ips in rows]
    rss = {size: peak_rss(size, args.backbone, args.batch_size) for size in args.rss_n}
    rss_table = ["| images extracted | peak RSS main process (MiB) | peak RSS largest worker (MiB) |", "|---:|---:|---:|"]
    rss_table += [f"| {size} | {r['self']:.0f} | {r['workers']:.0f} |" for size, r in rss.items()]
    body = (
        f"Backbone `{args.backbone}` ({backbone.preprocess.policy} resize to {backbone.preprocess.size} px, "
        f"{backbone.dim}-d), batch size {args.batch_size}, {n} CIFAKE train images (32x32 JPEG) read from the zip; "
        f"median of {args.repeats} runs each, all measured in this one run.\n\n" + "\n".join(table) +
        f"\n\nBest pipeline setting reaches **{best[1] / rows[0][1]:.0%}** of the bare model's images/s "
        f"(target >= 90%); {backbone.precision} + channels-last is {t_fp32 / t_bare:.1f}x fp32, and the pipeline is "
        f"{best[1] / rows[-1][1]:.1f}x the notebook loop.\n\nPeak memory of a whole `extract` run "
        f"(one process per size, default workers):\n\n" + "\n".join(rss_table)
    )
    write_section("Extraction", body)


if __name__ == "__main__":
    main()
