"""`fakedet extract --runtime onnx` with ONNX Runtime's intra-op threads spinning (its default) or
sleeping (fakedet's setting) while idle, on the same CIFAKE images; best of ``--repeats`` runs each.

    python bench/onnx_spinning.py --n 2000 --features default --features recommended
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from common import CIFAKE, FEATURES, require  # noqa: E402

from fakedet.datasets import discover  # noqa: E402
from fakedet.extract import extract  # noqa: E402

_session_init = ort.InferenceSession.__init__


def spinning(allow: str) -> None:
    """Make every session created from now on set ``session.intra_op.allow_spinning`` to ``allow``."""
    def init(self, path, options=None, *args, **kwargs):
        if options is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", allow)
        _session_init(self, path, options, *args, **kwargs)
    ort.InferenceSession.__init__ = init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--features", action="append", choices=list(FEATURES))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    require(CIFAKE)
    frame = discover(CIFAKE, progress=False).sample(n=args.n, random_state=0).sort_values("path")
    with tempfile.TemporaryDirectory() as work:
        for name in args.features or list(FEATURES):
            options = FEATURES[name]
            # export and verify the ONNX file once (it lands beside the stores in `work`), untimed
            extract(CIFAKE, "effnet-lite0", frame=frame.head(64), cache=Path(work) / "warm.h5", runtime="onnx",
                    precision="fp32", progress=False, **options)
            for allow in ("1", "0"):
                spinning(allow)
                rates = []
                for _ in range(args.repeats):
                    store = Path(work) / "set.h5"
                    start = time.perf_counter()
                    extract(CIFAKE, "effnet-lite0", frame=frame, cache=store, runtime="onnx", precision="fp32",
                            batch_size=32, progress=False, **options)
                    rates.append(len(frame) / (time.perf_counter() - start))
                    store.unlink()
                print(f"{name}, spinning {'on' if allow == '1' else 'off'}: {max(rates):.1f} img/s")


if __name__ == "__main__":
    main()
