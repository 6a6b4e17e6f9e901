"""Labels and splits given as values (manifest cells, WebDataset ``cls``/``json`` fields)."""
from __future__ import annotations

import pandas as pd

from ..datasets import _CLASS_FOLDERS, _SPLIT_FOLDERS


class BadEntry(OSError):
    """A listed image that cannot be used (bad label or split); recorded as a failure, not fatal."""


def parse_label(value) -> int | None:
    """0 (real) or 1 (fake) from 0/1, "real"/"fake", "0_real"/"1_fake" (any case); None if missing.

    Raises BadEntry for any other value."""
    if _missing(value):
        return None
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    if text in _CLASS_FOLDERS:
        return _CLASS_FOLDERS[text]
    raise BadEntry(f"bad label {value!r} (use real/fake or 0/1)")


def parse_split(value) -> str | None:
    """train, val or test from a split value (val also from "validation"); None if missing."""
    if _missing(value) or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text not in _SPLIT_FOLDERS:
        raise BadEntry(f"bad split {value!r} (use train, val or test)")
    return _SPLIT_FOLDERS[text]


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
