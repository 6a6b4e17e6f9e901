"""Fine-tuning training step on this CPU: images per second of forward + backward + AdamW for each
engine / precision / memory format, measured side by side in one run.

Variants: eager fp32 (contiguous and channels-last), eager bf16 autocast (contiguous and
channels-last), torch.compile fp32 and bf16 (channels-last). The step is ``finetune``'s own
(``fakedet.train_speed.training_step``: train mode, frozen batch-norm statistics, gradient
clipping) on random images at each size, batch size per size; median of ``--repeats`` steps
after ``--warmup`` steps (compile's first step, which compiles, is reported apart). The section
is titled with the CPU model, so each machine keeps its own table.

    python bench/train_step.py                                   # 64 px batch 64 and 128 px batch 32
    python bench/train_step.py --sizes 32:8 --repeats 2 --no-write   # smoke test
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, output_options, publish  # noqa: E402
from extract import cpu_flags  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.runtimes import compiler_missing, machine  # noqa: E402
from fakedet.tables import to_markdown  # noqa: E402
from fakedet.train_speed import random_batch, training_step  # noqa: E402

VARIANTS = {  # label: (engine, precision, channels-last)
    "eager fp32": ("eager", "fp32", False),
    "eager fp32 channels-last": ("eager", "fp32", True),
    "eager bf16 autocast": ("eager", "bf16", False),
    "eager bf16 autocast channels-last": ("eager", "bf16", True),
    "compile fp32 channels-last": ("compile", "fp32", True),
    "compile bf16 autocast channels-last": ("compile", "bf16", True),
}


def rate(spec: str, size: int, batch: int, engine: str, precision: str, channels_last: bool,
         warmup: int, repeats: int) -> dict:
    """Images per second of the training step (median of ``repeats``) and the first step's seconds."""
    backbone = create_backbone(spec, resize=str(size), precision=precision, device="cpu")
    step = training_step(backbone, compiled=engine == "compile", channels_last=channels_last)
    x, y = random_batch(backbone, batch)
    start = time.perf_counter()
    step(x, y)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step(x, y)
    return {"img/s": batch / median_time(lambda: step(x, y), repeats), "first step (s)": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="effnet-lite0")
    parser.add_argument("--sizes", default="64:64,128:32", help="image size:batch size pairs")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile compiles in the first)")
    parser.add_argument("--repeats", type=int, default=5)
    output_options(parser, f"Fine-tuning step ({machine().split(',')[0]})")  # one section per CPU model
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in pair.split(":")) for pair in args.sizes.split(",")]
    rows = []
    for label in args.variants:
        engine, precision, channels_last = VARIANTS[label]
        row = {"training step": label}
        for size, batch in sizes:
            if engine == "compile" and compiler_missing(torch.device("cpu")):
                row[f"{size} px, batch {batch} (img/s)"] = "no C++ compiler"
                continue
            try:
                got = rate(args.backbone, size, batch, engine, precision, channels_last, args.warmup, args.repeats)
            except RuntimeError as err:  # e.g. an inductor failure: say so, keep measuring the others
                row[f"{size} px, batch {batch} (img/s)"] = f"failed: {str(err).splitlines()[0][:80]}"
                continue
            row[f"{size} px, batch {batch} (img/s)"] = round(got["img/s"], 1)
            row[f"{size} px first step (s)"] = round(got["first step (s)"], 1)
        print(row, flush=True)
        rows.append(row)
    body = (f"CPU flags: {cpu_flags()}; {machine()}; {torch.get_num_threads()} threads.\n\n"
            f"Backbone `{args.backbone}`, `finetune`'s training step (forward, log loss, backward, gradient "
            f"clipping, AdamW; train mode with frozen batch-norm statistics) on random images; median of "
            f"{args.repeats} steps after {args.warmup} untimed ones, all variants in this one run. "
            f"`fakedet finetune --train-runtime auto` measures the eager candidates the same way.\n\n"
            f"{to_markdown(pd.DataFrame(rows), 1)}")
    publish(args, body)


if __name__ == "__main__":
    main()
