"""``python tests/blocking_cli.py [--writes] MARKER N fakedet-args...``: the fakedet CLI whose backbone stops
after embedding N batches (``--writes``: whose store writer stops after committing N batches, whatever
the engine, e.g. Ray actors embedding in other processes): it creates MARKER, then blocks until a
signal ends it (at most 5 minutes).

Lets a test interrupt an extraction at a known point, independent of the machine's speed.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from fakedet.backbones import Backbone
from fakedet.cli import main
from fakedet.store_writer import SetWriter


def block_after(cls: type, method: str, marker: Path, n_calls: int) -> None:
    """Make the ``n_calls``-th call of ``cls.method`` (counting from 1) create ``marker`` and block."""
    real, calls = getattr(cls, method), []

    def blocking(self, *args):
        calls.append(1)
        if len(calls) == n_calls:
            marker.touch()
            for _ in range(600):  # wait for the test's signal; bounded so a failed test cannot hang
                time.sleep(0.5)
            sys.exit("blocking_cli: no signal came")
        return real(self, *args)

    setattr(cls, method, blocking)


if __name__ == "__main__":
    # Ctrl-C in a terminal, whatever started the suite: a job started in the background by a
    # non-interactive shell (nohup ... &, some CI runners) inherits SIGINT ignored, and Python then
    # keeps ignoring it, so the test's SIGINT would never arrive.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    writes = sys.argv[1] == "--writes"
    marker, n, *args = sys.argv[1 + writes:]
    if writes:
        block_after(SetWriter, "append", Path(marker), int(n) + 1)
    else:  # the first embed call is create_backbone's probe for the dimension
        block_after(Backbone, "embed", Path(marker), int(n) + 2)
    sys.argv = ["fakedet", *args]
    main()
