"""Extraction throughput per runtime and memory on CIFAKE images, measured side by side in one run.

For each feature set (``default``: the backbone's own 224 px final embedding; ``recommended``:
every block at 128 + 64 px), on the same images and batch size:
  * the bare forward pass of each runtime / precision (``Backbone.embed`` on pre-made uint8
    tensors: no decoding, no I/O) -- the ceiling;
  * the full ``fakedet extract`` pipeline with each runtime, and with ``--runtime auto`` (the
    default; its ONNX file and measurement are made before timing, as on a second run);
  * (default features) a notebook-style loop: open, timm transform, forward one image at a time, fp32;
and the pipeline's peak RSS at two dataset sizes (target: flat). The section is titled with
the CPU model (``--title``), so each machine keeps its own table.

    python bench/extract.py --n 2000 --notebook-n 300 --repeats 3 --rss-n 2000 20000
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, FEATURES, median_time, output_options, publish, require  # noqa: E402

from fakedet.backbones import create_backbone  # noqa: E402
from fakedet.datasets import discover  # noqa: E402
from fakedet.decoding import decode_image  # noqa: E402
from fakedet.extract import extract  # noqa: E402
from fakedet.runtimes import candidates, compiler_missing, machine, use_runtime  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


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


def cpu_flags() -> str:
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        return "unknown"
    return ", ".join(f for f in CPU_FLAGS if f in flags) or "none of " + "/".join(CPU_FLAGS)


def engines(spec: str, options: dict, folder: Path, batch_size: int, compile_: bool) -> dict:
    """``{'runtime/precision': backbone}`` for every candidate ``auto`` times, plus compile."""
    probe = create_backbone(spec, **options, precision="fp32")
    pairs = candidates(probe, free=True)
    if compile_ and compiler_missing(probe.device) is None:
        pairs.append(("compile", "fp32"))
    out = {}
    for runtime, precision in pairs:
        backbone = create_backbone(spec, **options, precision=precision)
        use_runtime(backbone, runtime, folder, precision=precision, batch_size=batch_size)
        out[f"{backbone.runtime}/{precision}"] = backbone
    return out


def features_table(name: str, args, frame, archive, folder: Path) -> tuple[list[str], dict]:
    """Rows of one feature set's table, and its headline ratios."""
    options = FEATURES[name]
    backbones = engines(args.backbone, options, folder, args.batch_size, not args.no_compile)
    first = next(iter(backbones.values()))
    tensors = torch.stack([first.preprocess(decode_image(archive.read(p))) for p in frame["path"]])
    batches = list(torch.split(tensors, args.batch_size))
    n = len(frame)
    bare_rates = {}
    for label, backbone in backbones.items():
        bare(backbone, batches[:1])  # warm-up (torch.compile compiles here)
        bare_rates[label] = n / median_time(lambda b=backbone: bare(b, batches), args.repeats)
        print(f"{name}: bare {label} {bare_rates[label]:.1f} img/s", file=sys.stderr, flush=True)
    ceiling = max(bare_rates.values())

    def pipeline(backbone_or_spec, runtime=None):
        results = []

        def run():  # a fresh store each time, in `folder` so the ONNX file and measurement are reused
            store = folder / "set.h5"
            try:
                results.append(extract(CIFAKE, backbone_or_spec, frame=frame, cache=store, batch_size=args.batch_size,
                                       runtime=runtime, progress=False, **({} if runtime is None else options)))
            finally:
                store.unlink(missing_ok=True)
        seconds = median_time(run, args.repeats)
        loop = statistics.median(sum(r.seconds[k] for k in ("read", "model", "write")) for r in results)
        waiting = statistics.median(r.seconds["read"] for r in results)
        return n / loop, waiting, results[-1].runtime.split(" (")[0], seconds - loop

    rows = [f"| {name} | bare forward, {label} | {rate:.1f} | {rate / ceiling:.0%} | | |"
            for label, rate in bare_rates.items()]
    for label, backbone in backbones.items():
        rate, waiting, _, startup = pipeline(backbone)
        print(f"{name}: pipeline {label} {rate:.1f} img/s", file=sys.stderr, flush=True)
        rows.append(f"| {name} | `fakedet extract`, {label} | {rate:.1f} | {rate / ceiling:.0%} | {waiting:.1f} | "
                    f"{startup:.1f} |")
    # the default: --runtime auto, measured and exported once beforehand (cached in `folder`, as on a second run)
    extract(CIFAKE, args.backbone, frame=frame.head(args.batch_size), cache=folder / "warm.h5",
            batch_size=args.batch_size, runtime="auto", progress=False, **options)
    auto_rate, waiting, chosen, startup = pipeline(args.backbone, runtime="auto")
    rows.append(f"| {name} | `fakedet extract` (default `--runtime auto`: {chosen}) | {auto_rate:.1f} | "
                f"{auto_rate / ceiling:.0%} | {waiting:.1f} | {startup:.1f} |")
    headline = {"auto_vs_ceiling": auto_rate / ceiling, "auto": auto_rate}
    if name == "default":
        paths = frame["path"].tolist()[: args.notebook_n]
        nb = len(paths) / median_time(lambda: notebook_loop(first, paths), args.repeats)
        rows.append(f"| {name} | notebook loop: open, transform, forward one image at a time, fp32 | {nb:.1f} | "
                    f"{nb / ceiling:.0%} | | |")
        headline["vs_notebook"] = auto_rate / nb
    size = first.preprocess.size
    scales = options.get("scales", "1")
    headline["what"] = f"{first.layers} features at {size} px, scales {scales}, {first.dim}-d"
    return rows, headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="images for the throughput runs")
    parser.add_argument("--notebook-n", type=int, default=300, help="images for the slow per-image loop")
    parser.add_argument("--rss-n", type=int, nargs=2, default=[2000, 20000], help="two dataset sizes for peak RSS")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="effnet-lite0")
    parser.add_argument("--features", nargs="+", choices=list(FEATURES), default=list(FEATURES))
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles ~1 min)")
    parser.add_argument("--repeats", type=int, default=3)
    output_options(parser, f"Extraction ({machine().split(',')[0]})")  # one section per CPU model
    args = parser.parse_args()
    require(CIFAKE)

    frame = subset(discover(CIFAKE, progress=False), args.n)
    archive = zipfile.ZipFile(CIFAKE)
    table = ["| features | what | images/s | vs best bare forward | waiting for data (s) | start-up (s) |",
             "|---|---|---:|---:|---:|---:|"]
    lines = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.features:
            rows, h = features_table(name, args, frame, archive, Path(work))
            table += rows
            line = (f"- **{name}** ({h['what']}): `fakedet extract` with the default runtime reaches "
                    f"**{h['auto_vs_ceiling']:.0%}** of the best bare forward pass (target >= 90%), {h['auto']:.0f} img/s")
            if "vs_notebook" in h:
                line += f", **{h['vs_notebook']:.1f}x** the notebook loop (target >= 3.5x)"
            lines.append(line + f"; 100k images would take {100_000 / h['auto'] / 60:.0f} min.")
    rss = {size: peak_rss(size, args.backbone, args.batch_size) for size in args.rss_n}
    rss_table = ["| images extracted | peak RSS main process (MiB) | peak RSS largest worker (MiB) |", "|---:|---:|---:|"]
    rss_table += [f"| {size} | {r['self']:.0f} | {r['workers']:.0f} |" for size, r in rss.items()]
    body = (
        f"CPU flags: {cpu_flags()}; runtimes seen as: {machine()}.\n\n"
        f"Backbone `{args.backbone}`, batch size {args.batch_size}, {len(frame)} CIFAKE train images (32x32 JPEG) "
        f"read from the zip; median of {args.repeats} runs each, all measured in this one run. `waiting for data` "
        f"is the pipeline's time blocked on decoding workers. `fakedet extract` rates are the embedding loop's "
        f"(read + model + write, with the decoding workers running beside the model); `start-up` is the rest of "
        f"the call (loading the backbone and hashing its weights, checking the ONNX file against torch, listing "
        f"the images, opening the store), paid once per run.\n\n" + "\n".join(table) + "\n\n" + "\n".join(lines)
        + "\n\nPeak memory of a whole `extract` run (one process per size, default workers):\n\n" + "\n".join(rss_table)
    )
    publish(args, body)


if __name__ == "__main__":
    main()
