"""Reading an embedding set back from the cache: ``Store.load`` of the whole set, median of 3.

    python bench/store.py cache/cifake-train.h5 --backbone effnet-lite0
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, write_section  # noqa: E402

from fakedet.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--backbone", "-b", default=None, help="embedding set(s): spec, key or prefix", action="append")
    args = parser.parse_args()
    store = Store(args.store)
    rows = ["| embedding set | rows x dims | size (MiB) | Store.load (s) |", "|---|---|---:|---:|"]
    for name in args.backbone or list(store.embedding_sets()["key"]):
        emb = store.load(name)
        seconds = median_time(lambda: store.load(name))
        rows.append(f"| `{emb.key}` | {emb.X.shape[0]} x {emb.X.shape[1]} | {emb.X.nbytes / 2**20:.0f} | {seconds:.2f} |")
    write_section("Cache read", "`Store.load` returns X (float32) and the per-image table, median of 3.\n\n"
                  + "\n".join(rows))


if __name__ == "__main__":
    main()
