"""Detection quality on CIFAKE: frozen backbones x feature layers x resize policy x heads.

Every configuration is extracted with ``fakedet.extract`` into one cache (resumable, reused on a
second run), split once by content id (seeded, stratified 80/20, duplicates never straddle), and
each head is fitted with ``fakedet.detector.train_detector``: accuracy is on the validation
split of CIFAKE *train* (the official test split is not used here).

    python bench/quality.py --n 100000 --config effnet-lite0,final,backbone --config effnet-lite0,multi,128
    python bench/quality.py --n 4000 --config effnet-lite2,blocks,128,1/0.5   # scales 1 and 0.5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, ROOT, output_options, publish, require  # noqa: E402

from fakedet.backbones import PRECISIONS  # noqa: E402
from fakedet.datasets import discover  # noqa: E402
from fakedet.training import train_detector  # noqa: E402
from fakedet.extract import extract  # noqa: E402
from fakedet.splits import assign_splits  # noqa: E402
from fakedet.store import Store  # noqa: E402


def subset(frame, n: int, seed: int = 0):
    """``n`` images, stratified by label and seeded; all of them when n >= the dataset."""
    if n >= len(frame):
        return frame
    return frame.groupby("label", group_keys=False).sample(frac=n / len(frame), random_state=seed).sort_values("path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--config", action="append", default=None,
                        help="backbone,layers,resize[,precision][,scales] (repeatable), scales with '/': "
                             "e.g. effnet-lite0,multi,128,fp32 or effnet-lite2,blocks,128,1/0.5")
    parser.add_argument("--head", action="append", default=None, help="heads to fit [default: logreg]")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "bench")
    parser.add_argument("--batch-size", type=int, default=64)
    output_options(parser, "Detection quality (CIFAKE validation split)")
    args = parser.parse_args()
    require(CIFAKE)
    configs = [c.split(",") for c in (args.config or ["effnet-lite0,final,backbone"])]
    heads = args.head or ["logreg"]

    frame = subset(discover(CIFAKE, progress=False), args.n)
    rows = []
    for spec, layers, resize, *extra in configs:
        precision = next((e for e in extra if e in PRECISIONS), "auto")
        scales = next((e.replace("/", ",") for e in extra if e not in PRECISIONS), "1")
        start = time.perf_counter()
        result = extract(CIFAKE, spec, layers=layers, resize=resize, precision=precision, scales=scales,
                         frame=frame, cache=args.cache / f"n{args.n}", batch_size=args.batch_size)
        wall = time.perf_counter() - start
        emb = Store(result.store).load(result.key)
        split, _ = assign_splits(emb.frame, val_size=0.2, random_state=0)
        for head in heads:
            detector = train_detector(emb, split, head, random_state=0)
            val = detector.metrics["val"]
            rows.append({
                "backbone": spec, "layers": layers, "resize": resize, "scales": scales,
                "precision": emb.attrs["identity"]["precision"],
                "dim": emb.X.shape[1], "head": head,
                "val_acc": val["accuracy"], "roc_auc": val["roc_auc"], "real_recall": val["recall_real"],
                "fake_recall": val["recall_fake"], "fit_s": detector.training["seconds"]["fit"],
                "extract_ips": result.images_per_second if result.n_embedded else None, "extract_s": wall,
                "cached": result.n_embedded == 0,
            })
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: -r["val_acc"])
    n_val = int((split == "val").sum())
    table = ["| backbone | layers | resize | scales | precision | dim | head | val accuracy | ROC-AUC | real recall "
             "| fake recall | fit (s) | extraction (img/s) |", "|---|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ips = f"{r['extract_ips']:.0f}" if r["extract_ips"] else "cached"
        table.append(f"| {r['backbone']} | {r['layers']} | {r['resize']} | {r['scales']} | {r['precision']} "
                     f"| {r['dim']} | {r['head']} "
                     f"| {r['val_acc']:.2%} | {r['roc_auc']:.4f} | {r['real_recall']:.2%} | {r['fake_recall']:.2%} "
                     f"| {r['fit_s']:.1f} | {ips} |")
    body = (f"{len(frame)} CIFAKE train images ({len(emb.frame)} distinct), split by content id 80/20 (seed 0): "
            f"{n_val} validation images.\n\n"
            + "\n".join(table))
    publish(args, body)


if __name__ == "__main__":
    main()
