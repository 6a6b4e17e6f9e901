"""Result tables written for people and tools: markdown pipe tables, CSV and JSON files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A pipe table (no extra dependency); floats rounded to ``digits``."""
    def cell(value) -> str:
        if isinstance(value, float):
            return "n/a" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def save_table(table: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    table.to_csv(csv, index=False)
    md.write_text(to_markdown(table) + "\n")
    return csv, md


def write_table(table: pd.DataFrame, out: str | Path) -> Path:
    """A table as ``.json`` (records) or CSV, by the file suffix; returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        table.to_json(out, orient="records", indent=2)
    else:
        table.to_csv(out, index=False, errors="surrogateescape")  # file names as the OS stores them
    return out
