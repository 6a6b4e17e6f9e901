"""HTML building blocks of the report: escaping, tables, key/value lists, embedded PNG plots, boxes, styles."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .datasets import LABEL_NAMES, printable

COLOURS = {0: "#1f77b4", 1: "#d62728", -1: "#9a9a9a"}
MAX_ROWS = 50

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1300px;
 padding:0 1.2em 3em;color:#222;line-height:1.4}
h1{margin-bottom:.1em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
nav a{margin-right:1em}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:5px solid #f08c00;padding:.6em 1em;margin:.8em 0}
.ok{background:#ebfbee;border-left:5px solid #2f9e44;padding:.6em 1em;margin:.8em 0}
.note{background:#f1f3f5;border-left:5px solid #868e96;padding:.6em 1em;margin:.8em 0}
.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
.thumbs{display:flex;flex-wrap:wrap;gap:.8em}
figure.thumb{margin:0;width:150px;font-size:.78em;word-break:break-all}
figure.thumb img{width:112px;height:112px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}
.missing{width:112px;height:112px;display:flex;align-items:center;justify-content:center;background:#f4f4f4;
 color:#a61e4d;text-align:center;font-size:.85em}
code,pre{background:#f4f4f4;padding:.1em .3em;white-space:pre-wrap;word-break:break-all}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def esc(value) -> str:
    """``value`` as HTML text: escaped, and file-name bytes that are not UTF-8 written ``\\xff``."""
    return html.escape(printable(value), quote=True)


def html_table(frame: pd.DataFrame, index: bool = False) -> str:
    """An escaped HTML table; numbers right-aligned."""
    if index:
        frame = frame.reset_index()
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{esc(value)}</td>' if numeric else f"<td>{esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def key_values(items: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def png_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(fig: Figure, alt: str) -> str:
    return f'<img class="plot" src="{png_uri(fig)}" alt="{esc(alt)}">'


def boxes(kind: str, messages: list[str]) -> str:
    return "".join(f'<div class="{kind}">{esc(m)}</div>' for m in messages)


def label_name(label: int) -> str:
    return LABEL_NAMES.get(int(label), str(label))


def kilobytes(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KB"
