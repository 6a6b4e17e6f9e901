"""ONNX export of a saved model: export time, file size, parity with PyTorch, and throughput side by side.

Exports MODEL with ``fakedet.export.export_onnx`` (a stacked fused model becomes one graph of all
its sets), checks P(fake) of onnxruntime against the fp32 torch module on the first N images of
DATA (``onnx_parity``), then times both on the same preprocessed batches, alternating, ``--repeats``
times each: medians and their ratio. Example (a quiet machine):

    python bench/export.py cache/full/models/frozen-9-ensemble --data ../shared/data/cifake-train.zip --n 256
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import output_options, publish

from fakedet.catalog import find_model
from fakedet.detector import Detector
from fakedet.export import deployment, describe_inputs, export_onnx, onnx_feeds, onnx_parity, probe_images
from fakedet.scoring import backbone_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model folder or name under cache/models")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--data", type=Path, default=None, help="folder or zip of images [default: generated images]")
    parser.add_argument("--n", type=int, default=256, help="images for parity and timing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    output_options(parser, "ONNX export of a model")
    args = parser.parse_args()
    import onnxruntime as ort

    detector = Detector.load(find_model(args.model, args.cache))
    backbone = backbone_for(detector, device="cpu", cache=args.cache)
    images = probe_images(args.n, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(detector, Path(tmp) / "model.onnx", backbone)
        export_s, size_mb = time.perf_counter() - start, path.stat().st_size / 1e6
        parity = onnx_parity(detector, path, images, backbone, batch_size=args.batch_size)
        module, inputs = deployment(detector, backbone)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batches = list(onnx_feeds(inputs, images, args.batch_size))

        def run_torch() -> None:
            with torch.inference_mode():
                for feeds in batches:
                    module(*map(torch.from_numpy, feeds.values()))

        def run_onnx() -> None:
            for feeds in batches:
                session.run(["p_fake"], feeds)

        times: dict[str, list[float]] = {"torch fp32 (eager)": [], "onnxruntime fp32": []}
        run_torch(), run_onnx()  # warm-up, not measured
        for _ in range(args.repeats):
            for name, run in zip(times, (run_torch, run_onnx)):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    source = f"the first {len(images)} images of `{args.data}`" if args.data else f"{len(images)} generated images"
    rows = "".join(f"| {name} | {len(images) / s:.1f} | {s:.2f} | {medians['torch fp32 (eager)'] / s:.2f}x |\n"
                   for name, s in medians.items())
    body = (f"Model `{args.model}` ({len(detector.members)} embedding set(s), head {detector.head}); inputs: "
            f"{describe_inputs(inputs)}.\n\n"
            f"Export {export_s:.1f} s, file {size_mb:.1f} MB. Parity on {source}: max |dP(fake)| "
            f"{parity['max_abs_diff']:.2e}, mean {parity['mean_abs_diff']:.2e}.\n\n"
            f"Throughput on the same preprocessed batches of {args.batch_size} (model only; median of "
            f"{args.repeats} alternating runs after a warm-up):\n\n"
            "| engine | img/s | s per pass | speed vs torch |\n|---|---:|---:|---:|\n" + rows)
    publish(args, body)


if __name__ == "__main__":
    main()
