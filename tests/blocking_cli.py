"""``python tests/blocking_cli.py MARKER N fakedet-args...``: the fakedet CLI whose backbone stops
after embedding N batches: it creates MARKER, then blocks until a signal ends it (at most 5 minutes).

Lets a test interrupt an extraction at a known point, independent of the machine's speed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from fakedet.backbones import Backbone
from fakedet.cli import main


def block_after(marker: Path, n_batches: int) -> None:
    real, calls = Backbone.embed, []

    def embed(self, batch):
        calls.append(len(batch))
        if len(calls) == n_batches + 2:  # the first call is create_backbone's probe for the dimension
            marker.touch()
            for _ in range(600):  # wait for the test's signal; bounded so a failed test cannot hang
                time.sleep(0.5)
            sys.exit("blocking_cli: no signal came")
        return real(self, batch)

    Backbone.embed = embed


if __name__ == "__main__":
    block_after(Path(sys.argv[1]), int(sys.argv[2]))
    sys.argv = ["fakedet", *sys.argv[3:]]
    main()
