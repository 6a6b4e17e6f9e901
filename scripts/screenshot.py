"""Full-page PNG screenshot of a report, e.g. for docs/:

    python scripts/screenshot.py reports/<name>/index.html docs/report.png [--width 1300]

Needs selenium and a headless Chromium with chromedriver (scripts/install-browser.sh).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from browser import BrowserUnavailable, screenshot  # noqa: E402  (scripts/browser.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="HTML file")
    parser.add_argument("png", type=Path, help="output PNG")
    parser.add_argument("--width", type=int, default=1300, help="viewport width in CSS pixels")
    args = parser.parse_args()
    if not args.page.is_file():
        sys.exit(f"no such file: {args.page}")
    try:
        print(screenshot(args.page, args.png, args.width))
    except BrowserUnavailable as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
