"""Detection quality on CIFAKE: frozen backbones x feature layers x resize policy x heads.

Every configuration is extracted with ``fakedet.extract`` into one cache (resumable, reused on a
second run), split once by content id (seeded, stratified 80/20, duplicates never straddle), and
each head is fitted with ``fakedet.detector.train_detector``: accuracy is on the validation
split of CIFAKE *train* (the official test split is not used here).

    python bench/quality.py --n 100000 --config effnet-lite0,final,backbone --config effnet-lite0,multi,128
    python bench/quality.py --n 4000 --config effnet-lite2,blocks,128,1/0.5   # scales 1 and 0.5
    python bench/quality.py --n 20000 --config effnet-lite0,blocks,128,1/0.5,flip   # and --tta flip
    python bench/quality.py --n 4000 --config effnet-lite0,blocks,128,1/0.5 --config effnet-lite0,final,backbone \
        --fuse 1+2 --fusion concat --fusion stack          # also the two sets fused (fakedet.fusion)

``--fuse I+J``: the sets of configs I and J (1-based, in --config order) side by side, rows aligned by
content id, on the same split by content id as the single sets.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, ROOT, output_options, publish, require  # noqa: E402

import pandas as pd  # noqa: E402

from fakedet.backbone_config import PRECISIONS  # noqa: E402
from fakedet.fusion import FUSIONS, fuse  # noqa: E402
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


def row(spec, layers, resize, scales, precision, emb, head, detector, extract_ips, extract_s, cached) -> dict:
    """One line of the table: the set, its head and the head's validation metrics."""
    val = detector.metrics["val"]
    if emb.attrs.get("identity", {}).get("tta", "none") != "none":
        scales += f", tta {emb.attrs['identity']['tta']}"
    return {"backbone": spec, "layers": layers, "resize": resize, "scales": scales, "precision": precision,
            "dim": emb.X.shape[1], "head": head, "val_acc": val["accuracy"], "roc_auc": val["roc_auc"],
            "real_recall": val["recall_real"], "fake_recall": val["recall_fake"],
            "fit_s": detector.training["seconds"]["fit"], "extract_ips": extract_ips, "extract_s": extract_s,
            "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--config", action="append", default=None,
                        help="backbone,layers,resize[,precision][,scales][,flip] (repeatable), scales with '/', "
                             "flip for --tta flip: e.g. effnet-lite0,multi,128,fp32 or effnet-lite2,blocks,128,1/0.5")
    parser.add_argument("--head", action="append", default=None, help="heads to fit [default: logreg]")
    parser.add_argument("--fuse", action="append", default=[], help="configs to fuse, 1-based: 1+2 (repeatable)")
    parser.add_argument("--fusion", action="append", choices=FUSIONS, default=None,
                        help="how fused sets are read (repeatable) [default: concat]")
    parser.add_argument("--cache", type=Path, default=ROOT / "cache" / "bench")
    parser.add_argument("--batch-size", type=int, default=64)
    output_options(parser, "Detection quality (CIFAKE validation split)")
    args = parser.parse_args()
    require(CIFAKE)
    configs = [c.split(",") for c in (args.config or ["effnet-lite0,final,backbone"])]
    heads = args.head or ["logreg"]

    frame = subset(discover(CIFAKE, progress=False), args.n)
    rows, sets, split_of = [], [], None
    for spec, layers, resize, *extra in configs:
        precision = next((e for e in extra if e in PRECISIONS), "auto")
        scales = next((e.replace("/", ",") for e in extra if e not in (*PRECISIONS, "flip")), "1")
        start = time.perf_counter()
        result = extract(CIFAKE, spec, layers=layers, resize=resize, precision=precision, scales=scales,
                         tta="flip" if "flip" in extra else "none", frame=frame, cache=args.cache / f"n{args.n}", batch_size=args.batch_size)
        wall = time.perf_counter() - start
        emb = Store(result.store).load(result.key)
        split, _ = assign_splits(emb.frame, val_size=0.2, random_state=0)
        split_of = split_of if split_of is not None else pd.Series(split, index=emb.frame["id"])
        sets.append(emb)
        for head in heads:
            detector = train_detector(emb, split, head, random_state=0)
            rows.append(row(spec, layers, resize, scales, emb.attrs["identity"]["precision"], emb, head, detector,
                            result.images_per_second if result.n_embedded else None, wall, result.n_embedded == 0))
            print(rows[-1], flush=True)
    for fused_configs in args.fuse:
        chosen = [int(i) - 1 for i in fused_configs.split("+")]
        emb = fuse([sets[i] for i in chosen])
        split = emb.frame["id"].map(split_of).fillna("").to_numpy()
        for fusion in args.fusion or ["concat"]:
            for head in heads:
                detector = train_detector(emb, split, head, random_state=0, fusion=fusion)
                rows.append(row(" + ".join(",".join(configs[i]) for i in chosen), f"fused ({fusion})", "", "",
                                "", emb, head, detector, None, None, False))
                print(rows[-1], flush=True)
    rows.sort(key=lambda r: -r["val_acc"])
    n_val = int((split == "val").sum())
    table = ["| backbone | layers | resize | scales | precision | dim | head | val accuracy | ROC-AUC | real recall "
             "| fake recall | fit (s) | extraction (img/s) |", "|---|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ips = f"{r['extract_ips']:.0f}" if r["extract_ips"] else "cached" if r["cached"] else "-"
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
