"""Shared by the benchmark scripts: machine description, data location, writing BENCHMARKS.md."""
from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAKE = SHARED_DATA / "cifake-train.zip"
FACES = SHARED_DATA / "faces140k-dev.zip"
#: feature sets compared by the extraction benchmarks: the backbone's own 224 px final embedding, and
#: the README's recommended features (every block at 128 + 64 px)
FEATURES = {
    "default": {},
    "recommended": {"layers": "blocks", "resize": "128", "scales": "1,0.5"},
}


def machine() -> str:
    """CPU model, cores, RAM, torch version and threads: one line for the report."""
    import torch

    cpu = platform.processor() or "?"
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, {gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall-clock seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def write_section(title: str, body: str, out: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace (or add) section ``## title`` of BENCHMARKS.md with machine, command, date and ``body``."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"## {title}\n\nMachine: {machine()}  \nCommand: `{command()}`  \nDate: {stamp}\n\n"
               f"{body.strip()}\n")
    text = out.read_text() if out.exists() else "# Benchmarks\n\nMeasured by the scripts in `bench/`.\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    out.write_text(text)
    print(section)


def output_options(parser, title: str) -> None:
    """``--title`` and ``--no-write``: where a benchmark's result goes (see ``publish``)."""
    parser.add_argument("--title", default=title, help="BENCHMARKS.md section to (re)write")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")


def publish(args, body: str) -> None:
    """Print ``body`` (``--no-write``) or write it to BENCHMARKS.md as section ``## <--title>``."""
    if args.no_write:
        print(body)
    else:
        write_section(args.title, body)


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"{path} not found: the benchmarks need ../shared/data beside the repository")
    return path
