"""What made a cache or a model: the time, and the versions of the libraries that shape its numbers."""
from __future__ import annotations

from datetime import datetime, timezone
from importlib import metadata


def now() -> str:
    """The current UTC time, to the second, as ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers in a cache or model."""
    names = ["fakedet", "torch", "timm", "open_clip_torch", "numpy", "h5py", "scikit-learn", "pillow"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
