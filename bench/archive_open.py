"""Seconds to open a dataset source freshly unpickled, as every Ray decoding task receives it: the first
read of a zip source reads the archive's table of contents (CIFAKE train: 100,000 members).

    python bench/archive_open.py --repeats 3
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, require  # noqa: E402

from fakedet.datasets import ImageSource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = ImageSource(require(CIFAKE))
    member, blob = source.paths()[0], pickle.dumps(source)
    for _ in range(args.repeats):
        start = time.perf_counter()
        pickle.loads(blob).read(member)
        print(f"first read of a freshly unpickled source: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
