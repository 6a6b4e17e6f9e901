"""Per-image cost, on one core, of what `fakedet extract`'s decoding workers do: zip read, JPEG decode,
the backbone's resize to uint8, and collate (stack), for the default and the recommended features.

    python bench/decode_cost.py --n 2000
"""
from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, FEATURES, require  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.decoding import decode_image  # noqa: E402



def per_image_ms(fn, items) -> tuple[float, list]:
    start = time.perf_counter()
    out = [fn(item) for item in items]
    return (time.perf_counter() - start) / len(items) * 1e3, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    require(CIFAKE)
    torch.set_num_threads(1)  # as in a decoding worker
    archive = zipfile.ZipFile(CIFAKE)
    names = [n for n in archive.namelist() if n.lower().endswith(".jpg")][: args.n]
    ms, data = per_image_ms(archive.read, names)
    print(f"zip read {ms:.3f} ms")
    ms, images = per_image_ms(decode_image, data)
    print(f"JPEG decode {ms:.3f} ms")
    for name, options in FEATURES.items():
        backbone = create_backbone("effnet-lite0", precision="fp32", **options)
        ms, tensors = per_image_ms(backbone.preprocess, images)
        start = time.perf_counter()
        torch.stack(tensors)
        stack = (time.perf_counter() - start) / len(tensors) * 1e3
        print(f"{name}: resize to {tuple(tensors[0].shape)} uint8 {ms:.3f} ms, collate {stack:.3f} ms")


if __name__ == "__main__":
    main()
