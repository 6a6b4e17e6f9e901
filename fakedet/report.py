"""One self-contained HTML report of a cached dataset, its embedding projection and (optionally) a model.

The page embeds every plot and thumbnail as a base64 PNG (matplotlib Agg, no pyplot state), uses
no scripts, fonts or external CSS, and forbids loading anything else with a Content-Security-
Policy, so it opens offline from disk. Every string that comes from the data (file names,
reasons, paths) is HTML-escaped.

Sections: warnings (shortcuts a classifier can cheat on, leaks), dataset overview, projection,
model (metrics, confusion matrix, ROC / PR / calibration curves, score histograms, the most
confident mistakes), provenance (command, versions, parameters).
"""
from __future__ import annotations

import base64
import html
import io
import re
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score

from .datasets import LABEL_NAMES, ImageDecodeError, decode_image, duplicates, open_source, printable
from .metrics import PERCENT_KEYS
from .project import Projection, ProjectionParams, project
from .store import Store, versions

DEFAULT_REPORTS = Path("reports")
COLOURS = {0: "#1f77b4", 1: "#d62728", -1: "#9a9a9a"}
CORRECT, WRONG, OUTSIDE = "#2ca02c", "#ff7f0e", "#dddddd"
# shortcut thresholds, above which the report warns: total-variation distance between the real
# and fake distributions of formats and resolutions; ratio of mean file sizes; how well file size
# alone separates the classes (ROC AUC, either direction)
FORMAT_TV, RESOLUTION_TV, FILE_SIZE_RATIO, FILE_SIZE_AUC = 0.1, 0.1, 1.25, 0.8
THUMB = 112
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


@dataclass
class ModelResult:
    """What the report shows about a model: its evaluation on one split plus its description."""

    name: str
    threshold: float
    predictions: pd.DataFrame  # id, path, split, label, p_fake, pred
    metrics: dict  # {column title: binary_metrics dict}, the evaluated split first
    details: dict  # shown as a key/value table


# --------------------------------------------------------------------------- small helpers


def _e(value) -> str:
    return html.escape(printable(value), quote=True)


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    """An escaped HTML table; numbers right-aligned."""
    if index:
        frame = frame.reset_index()
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            cells.append(f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _key_values(items: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str) -> str:
    return f'<img class="plot" src="{_png(fig)}" alt="{_e(alt)}">'


def _box(kind: str, messages: list[str]) -> str:
    return "".join(f'<div class="{kind}">{_e(m)}</div>' for m in messages)


def _label_name(label: int) -> str:
    return LABEL_NAMES.get(int(label), str(label))


def _kb(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KB"


# --------------------------------------------------------------------------- dataset overview


def _tv_distance(values: pd.Series, labels: pd.Series) -> tuple[float, pd.DataFrame]:
    """Total-variation distance between the real and fake distributions of ``values``, and the shares."""
    shares = pd.crosstab(values, labels, normalize="columns")
    return float(0.5 * (shares[0] - shares[1]).abs().sum()), shares


def _describe_shares(shares: pd.DataFrame, label: int, top: int = 3) -> str:
    column = shares[label].sort_values(ascending=False).head(top)
    return ", ".join(f"{100 * v:.0f}% {k or '?'}" for k, v in column.items() if v > 0)


def shortcut_warnings(images: pd.DataFrame) -> list[str]:
    """Differences between real and fake files that a classifier could learn instead of the content:
    image format, resolution and mean file size (over readable, labelled files)."""
    ok = images[(images["error"] == "") & images["label"].isin([0, 1])]
    if ok.empty or ok["label"].nunique() < 2:
        return []
    found = []
    labels = ok["label"].astype(int)
    tv, shares = _tv_distance(ok["format"], labels)
    if tv > FORMAT_TV:
        found.append(
            f"Image formats differ between real and fake (real: {_describe_shares(shares, 0)}; "
            f"fake: {_describe_shares(shares, 1)}). A classifier can tell them apart by compression "
            "artefacts alone; re-encode both classes the same way or report results per format.")
    resolution = ok["width"].astype(str) + "x" + ok["height"].astype(str)
    tv, shares = _tv_distance(resolution, labels)
    if tv > RESOLUTION_TV:
        found.append(
            f"Resolutions differ between real and fake (real: {_describe_shares(shares, 0)}; "
            f"fake: {_describe_shares(shares, 1)}). Resizing leaves traces a classifier can use; "
            "compare at matched sizes.")
    means = ok.groupby(labels)["nbytes"].mean()
    ratio = means.max() / max(means.min(), 1)
    auc = roc_auc_score(labels, ok["nbytes"])
    separation = max(auc, 1 - auc)
    if ratio >= FILE_SIZE_RATIO or separation >= FILE_SIZE_AUC:
        bigger = _label_name(means.idxmax())
        found.append(
            f"File sizes differ between real and fake: {bigger} files are larger on average "
            f"(real {_kb(means[0])}, fake {_kb(means[1])}, {ratio:.2f}x) and file size alone tells the "
            f"classes apart with ROC AUC {separation:.2f}. Size reflects compression and content "
            "complexity and is an easy shortcut.")
    return found


def leak_warnings(dups: pd.DataFrame) -> list[str]:
    """Warnings for identical files filed under both labels or in several splits."""
    found = []
    if dups.empty:
        return found
    conflicts, cross = int(dups["conflict"].sum()), int(dups["cross_split"].sum())
    if conflicts:
        found.append(f"{conflicts} identical images are labelled both real and fake.")
    if cross:
        found.append(f"{cross} identical images appear in more than one split (train/val/test leak); "
                     "scores on the later split are optimistic.")
    return found


def _counts_table(images: pd.DataFrame) -> str:
    frame = images.assign(split=images["split"].replace("", "(none)"), label=images["label"].map(_label_name))
    files = pd.crosstab(frame["split"], frame["label"], margins=True, margins_name="all")
    distinct = frame.groupby("split")["id"].nunique()
    distinct["all"] = frame["id"].nunique()
    files["distinct images"] = distinct.reindex(files.index).astype(int)
    files.index.name, files.columns.name = "split", None
    return _table(files, index=True)


def _distribution_tables(images: pd.DataFrame) -> str:
    ok = images[images["error"] == ""]
    labels = ok["label"].map(_label_name)
    formats = pd.crosstab(ok["format"].replace("", "?"), labels)
    resolution = (ok["width"].astype(str) + " x " + ok["height"].astype(str)).rename("resolution")
    resolutions = pd.crosstab(resolution, labels)
    resolutions = resolutions.loc[resolutions.sum(axis=1).sort_values(ascending=False).index[:10]]
    sizes = ok.groupby(labels)["nbytes"].describe()[["count", "mean", "50%", "min", "max"]]
    sizes = sizes.rename(columns={"50%": "median"})
    sizes[["mean", "median", "min", "max"]] = (sizes[["mean", "median", "min", "max"]] / 1024).round(1)
    sizes["count"] = sizes["count"].astype(int)
    sizes.index.name, sizes.columns.name = "label", None
    for table in (formats, resolutions):
        table.columns.name = None
    return (
        '<div class="plots"><div><h3>Formats</h3>' + _table(formats, index=True) + "</div>"
        "<div><h3>Resolutions (10 most common)</h3>" + _table(resolutions, index=True) + "</div>"
        "<div><h3>File size (KB)</h3>" + _table(sizes, index=True) + "</div></div>"
    )


def _distribution_plot(images: pd.DataFrame) -> str:
    ok = images[(images["error"] == "") & (images["width"] > 0)]
    fig = Figure(figsize=(10, 3.2))
    ax_size, ax_pixels = fig.subplots(1, 2)
    for label, group in ok.groupby("label"):
        style = dict(bins=40, alpha=0.55, color=COLOURS.get(int(label)), label=_label_name(label))
        ax_size.hist(group["nbytes"] / 1024, **style)
        ax_pixels.hist(np.sqrt(group["width"].astype(float) * group["height"]), **style)
    ax_size.set(xlabel="file size (KB)", ylabel="files", title="File size by label")
    ax_pixels.set(xlabel="sqrt(width x height) (pixels)", ylabel="files", title="Resolution by label")
    ax_size.legend()
    return _img(fig, "histograms of file size and resolution by label")


def _duplicates_html(dups: pd.DataFrame) -> str:
    if dups.empty:
        return '<div class="ok">No duplicate files (identical bytes).</div>'
    extra = int((dups["n"] - 1).sum())
    text = (f"<p>{len(dups)} groups of identical files ({extra} extra copies); "
            f"{int(dups['conflict'].sum())} with conflicting labels, "
            f"{int(dups['cross_split'].sum())} across splits.</p>")
    shown = dups.sort_values(["conflict", "cross_split", "n"], ascending=False, kind="stable").head(MAX_ROWS)
    table = pd.DataFrame({
        "copies": shown["n"],
        "paths": shown["paths"].map(" | ".join),
        "labels": shown["labels"].map(lambda v: ", ".join(_label_name(x) for x in v)),
        "splits": shown["splits"].map(lambda v: ", ".join(s or "(none)" for s in v)),
        "label conflict": shown["conflict"].map({True: "yes", False: ""}),
        "cross-split": shown["cross_split"].map({True: "yes", False: ""}),
    })
    more = f"<p>(first {MAX_ROWS} of {len(dups)} groups)</p>" if len(dups) > MAX_ROWS else ""
    return text + _table(table) + more


def _failures_html(failures: pd.DataFrame) -> str:
    if failures.empty:
        return '<div class="ok">Every file could be read.</div>'
    counts = failures["reason"].value_counts().rename_axis("reason").rename("files").reset_index()
    more = f"<p>(first {MAX_ROWS} of {len(failures)})</p>" if len(failures) > MAX_ROWS else ""
    return (f"<p>{len(failures)} files could not be embedded.</p>" + _table(counts.head(20))
            + _table(failures[["path", "reason"]].head(MAX_ROWS)) + more)


def mark_failures(images: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """The image table with files that could not be embedded marked unreadable (``error`` = reason):
    discovery parses headers only, so a truncated file may look readable there."""
    if images.empty or failures.empty:
        return images
    reasons = images["id"].map(failures.drop_duplicates("id").set_index("id")["reason"]).fillna("")
    return images.assign(error=images["error"].where(images["error"] != "", reasons))


def dataset_section(images: pd.DataFrame, failures: pd.DataFrame, dups: pd.DataFrame) -> str:
    if images.empty:
        return '<section id="dataset"><h2>Dataset</h2><div class="note">The cache has no image table.</div></section>'
    return (
        '<section id="dataset"><h2>Dataset</h2>'
        f"<p>{len(images)} files, {images['id'].nunique()} distinct images.</p>"
        "<h3>Files by split and label</h3>" + _counts_table(images)
        + _distribution_tables(images) + _distribution_plot(images)
        + "<h3>Duplicates and cross-split leaks</h3>" + _duplicates_html(dups)
        + "<h3>Unreadable files</h3>" + _failures_html(failures)
        + "</section>"
    )


# --------------------------------------------------------------------------- projection


def _scatter(ax, xy: np.ndarray, colours: np.ndarray, title: str, legend: dict[str, str], seed: int = 0) -> None:
    order = np.random.default_rng(seed).permutation(len(xy))  # no class drawn wholly on top
    size = max(1.0, min(12.0, 4000 / max(len(xy), 1)))
    ax.scatter(xy[order, 0], xy[order, 1], c=colours[order], s=size, linewidths=0, alpha=0.75)
    ax.set_title(title)
    ax.set_xticks([]), ax.set_yticks([])
    for name, colour in legend.items():
        ax.scatter([], [], c=colour, s=20, label=name)
    ax.legend(loc="best", fontsize=8, markerscale=1.2)


def projection_section(proj: Projection, frame: pd.DataFrame, model: ModelResult | None) -> str:
    """Scatter of the projection coloured by label, and by prediction and correctness with a model."""
    labels = pd.Series(frame["label"].to_numpy(), index=frame["id"]).reindex(proj.ids).fillna(-1).astype(int)
    xy = np.asarray(proj.coords)
    panels = 3 if model is not None else 1
    fig = Figure(figsize=(5.2 * panels, 5))
    axes = np.atleast_1d(fig.subplots(1, panels))
    present = sorted(set(labels))
    _scatter(axes[0], xy, np.array([COLOURS[v] for v in labels]), "label",
             {_label_name(v): COLOURS[v] for v in present})
    if model is not None:
        pred = model.predictions.drop_duplicates("id").set_index("id")
        scored = pred.reindex(proj.ids)
        inside = scored["pred"].notna().to_numpy()
        by_pred = np.where(inside, scored["pred"].fillna(0).astype(int).map(COLOURS).to_numpy(), OUTSIDE)
        right = (scored["pred"] == scored["label"]).to_numpy()
        labelled = (scored["label"] >= 0).to_numpy()
        by_right = np.where(inside & labelled, np.where(right, CORRECT, WRONG), OUTSIDE)
        split = model.name
        _scatter(axes[1], xy, by_pred, f"prediction on {split}",
                 {"pred real": COLOURS[0], "pred fake": COLOURS[1], "not scored": OUTSIDE})
        _scatter(axes[2], xy, by_right, f"correct on {split}",
                 {"correct": CORRECT, "wrong": WRONG, "not scored": OUTSIDE})
    fig.tight_layout()
    params = proj.params
    shown = f"{params.get('n_points', len(xy))} of {params.get('n_total', len(xy))} images"
    how = "read from the cache" if proj.cached else f"computed in {proj.seconds:.1f} s and cached"
    return (
        '<section id="projection"><h2>Embedding projection</h2>'
        f"<p>{_e(params.get('method', '').upper())} projection <code>{_e(proj.name)}</code> of set "
        f"<code>{_e(proj.key)}</code>: {_e(shown)} ({_e(how)}).</p>"
        + _img(fig, f"{proj.name} projection coloured by label") + "</section>"
    )


# --------------------------------------------------------------------------- model


def _format_metric(key: str, value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:d}"
    if isinstance(value, (float, np.floating)):
        return f"{100 * value:.2f}%" if key in PERCENT_KEYS else f"{value:.4f}"
    return str(value)


def _metrics_table(metrics: dict[str, dict]) -> str:
    keys = [k for k in next(iter(metrics.values())) if k != "confusion"]
    frame = pd.DataFrame(
        {title: [_format_metric(k, m.get(k)) for k in keys] for title, m in metrics.items()}, index=keys)
    frame.index.name = "metric"
    return _table(frame, index=True)


def _model_plots(y: np.ndarray, p: np.ndarray, threshold: float, confusion: list) -> str:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    plots = []
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    cm = np.asarray(confusion)
    ax.imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > cm.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"],
           xlabel="predicted", ylabel="true", title=f"Confusion (threshold {threshold:.3f})")
    plots.append(_img(fig, "confusion matrix"))

    fig = Figure(figsize=(4.4, 3.2))
    ax = fig.subplots()
    for label in (0, 1):
        ax.hist(p[y == label], bins=np.linspace(0, 1, 41), alpha=0.55, color=COLOURS[label], label=_label_name(label))
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="P(fake)", ylabel="images", title="Scores by true class")
    ax.legend(fontsize=8)
    plots.append(_img(fig, "histogram of P(fake) by true class"))

    if len(np.unique(y)) == 2:
        fig = Figure(figsize=(3.6, 3.2))
        ax = fig.subplots()
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=COLOURS[1])
        ax.plot([0, 1], [0, 1], color="#aaa", ls=":")
        ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title="ROC")
        plots.append(_img(fig, "ROC curve"))

        fig = Figure(figsize=(3.6, 3.2))
        ax = fig.subplots()
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, color=COLOURS[1])
        ax.axhline(y.mean(), color="#aaa", ls=":")
        ax.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall", ylim=(0, 1.02))
        plots.append(_img(fig, "precision-recall curve"))
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    ax.plot([0, 1], [0, 1], color="#aaa", ls=":")
    ax.plot(predicted, observed, marker="o", color=COLOURS[1])
    ax.set(xlabel="mean P(fake)", ylabel="fraction fake", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    plots.append(_img(fig, "calibration curve"))
    return '<div class="plots">' + "".join(plots) + "</div>"


def _thumbnail(image: Image.Image) -> str:
    """A PNG data URI of ``image`` fitted into THUMB pixels (small images enlarged, pixels kept)."""
    scale = THUMB / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    buffer = io.BytesIO()
    image.resize(size, resample).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def mistakes_section(predictions: pd.DataFrame, source: str, n: int = 8) -> str:
    """Thumbnails of the ``n`` most confident false positives and false negatives, read from ``source``."""
    scored = predictions[predictions["label"] >= 0]
    wrong = scored[scored["pred"] != scored["label"]]
    if wrong.empty:
        return "<h3>Most confident mistakes</h3><div class=\"ok\">No mistakes on this split.</div>"
    try:
        src = open_source(source) if source else None
        problem = "" if src is not None else "the cache does not record the dataset source"
    except (FileNotFoundError, OSError) as err:
        src, problem = None, f"the dataset source {source} is no longer available ({err})"
    groups = [
        ("Real images called fake (highest P(fake))", wrong[wrong["label"] == 0].nlargest(n, "p_fake")),
        ("Fake images called real (lowest P(fake))", wrong[wrong["label"] == 1].nsmallest(n, "p_fake")),
    ]
    out = ["<h3>Most confident mistakes</h3>"]
    if problem:
        out.append(_box("note", [f"Thumbnails not shown: {problem}."]))
    for title, rows in groups:
        if rows.empty:
            continue
        out.append(f"<h4>{_e(title)}</h4><div class=\"thumbs\">")
        for row in rows.itertuples():
            picture = ""
            if src is not None:
                try:
                    picture = f'<img src="{_thumbnail(decode_image(src.read(row.path)))}" alt="{_e(row.path)}">'
                except (FileNotFoundError, OSError, ImageDecodeError) as err:
                    picture = f'<div class="missing">cannot read: {_e(err)}</div>'
            out.append(f"<figure class=\"thumb\">{picture}<figcaption>{_e(row.path)}<br>"
                       f"P(fake) = {row.p_fake:.3f}</figcaption></figure>")
        out.append("</div>")
    if src is not None:
        src.close()
    return "".join(out)


def model_section(model: ModelResult, source: str, n_mistakes: int = 8) -> str:
    pred = model.predictions
    scored = pred[pred["label"] >= 0]
    y, p = scored["label"].to_numpy().astype(int), scored["p_fake"].to_numpy(dtype=float)
    first = next(iter(model.metrics.values()))
    return (
        '<section id="model"><h2>Model</h2>' + _key_values(model.details)
        + f"<h3>Metrics (threshold {model.threshold:.4f}; first column: this report's split, "
          f"{len(scored)} labelled images)</h3>" + _metrics_table(model.metrics)
        + _model_plots(y, p, model.threshold, first["confusion"])
        + mistakes_section(pred, source, n_mistakes) + "</section>"
    )


# --------------------------------------------------------------------------- provenance and page


def _all_versions() -> dict[str, str]:
    found = versions()
    for name in ("umap-learn", "openTSNE", "matplotlib", "pandas"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["python"] = sys.version.split()[0]
    return found


def provenance_section(command: str, store: Store, attrs: dict, set_attrs: dict, proj: Projection) -> str:
    params = {k: v for k, v in proj.params.items() if k not in ("versions",)}
    return (
        '<section id="provenance"><h2>Provenance</h2>'
        f"<h3>Command</h3><pre>{_e(command)}</pre>"
        + _key_values({
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cache": store.path, "dataset source": attrs.get("source", ""),
            "cache updated": attrs.get("updated", ""),
            "embedding set": set_attrs.get("key", ""), "backbone": set_attrs.get("spec", ""),
            "fingerprint": set_attrs.get("fingerprint", ""),
        })
        + "<h3>Projection parameters</h3>" + _key_values(params)
        + "<h3>Versions</h3>" + _key_values(_all_versions()) + "</section>"
    )


def report_name(dataset: str, key: str, model: str | None = None) -> str:
    """``<dataset>-<key>[-<model>]`` (a model name that already starts with dataset-key is not repeated)."""
    name = f"{dataset}-{key}"
    if model:
        name = model if model.startswith(name) else f"{name}-{model}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def render_report(
    store: Store,
    key: str,
    *,
    model: ModelResult | None = None,
    projection: ProjectionParams = ProjectionParams(),
    n_jobs: int | None = None,
    command: str | None = None,
    n_mistakes: int = 8,
    title: str | None = None,
) -> str:
    """The report page as one HTML string (computes the projection unless it is cached)."""
    key = store.resolve_key(key)
    attrs = store.attrs()
    failures = store.failures()
    images = mark_failures(store.images(), failures)
    frame = store.frame(key)
    proj = project(store, key, projection, n_jobs=n_jobs, allow_partial=True)  # write_report checked it
    dups = duplicates(images) if not images.empty else pd.DataFrame()
    warnings = (shortcut_warnings(images) if not images.empty else []) + leak_warnings(dups)
    title = title or report_name(store.path.stem, key, model.name if model else None)
    command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    described = store.embedding_sets().set_index("key").loc[key]
    set_attrs = {"key": key, "spec": described["spec"], "fingerprint": described["fingerprint"]}
    nav = ["dataset", "projection"] + (["model"] if model else []) + ["provenance"]
    summary = (_box("warn", ["Warning: " + w for w in warnings]) if warnings
               else '<div class="ok">No format, size or resolution shortcut and no leak found.</div>')
    body = (
        f"<h1>fakedet report</h1><p class=\"sub\">{_e(title)}</p>"
        "<nav>" + "".join(f'<a href="#{s}">{s}</a>' for s in nav) + "</nav>"
        + "<h2>Warnings</h2>" + summary
        + dataset_section(images, failures, dups)
        + projection_section(proj, frame, model)
        + (model_section(model, attrs.get("source", ""), n_mistakes) if model else "")
        + provenance_section(command, store, attrs, set_attrs, proj)
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fakedet report: {_e(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def model_result(detector, store: Store, key: str, split: str | None = None) -> ModelResult:
    """Evaluate a fakedet Detector on ``split`` of embedding set ``key`` of ``store`` (default: its
    test split, else val) and describe it for the report."""
    from .detector import evaluate

    own = Path(detector.training.get("store", "")).resolve() == store.path.resolve()
    if split is None and own:
        split = "test" if "test" in detector.metrics else "val"
    result = evaluate(detector, store.path, split=split, key=key)
    metrics = {f"{result.name} (this report)": result.metrics}
    for name, values in detector.metrics.items():
        if own and name == result.split:
            continue
        if isinstance(values, dict) and "accuracy" in values and "confusion" in values:
            metrics[name] = values
    training = detector.training
    details = {
        "head": detector.head, "parameters": detector.params, "preprocess": detector.preprocess,
        "backbone": detector.backbone, "embedding set": detector.key, "threshold": f"{detector.threshold:.4f}",
        "threshold chosen on": training.get("threshold_from", ""),
        "trained on": f"{training.get('dataset', '')} ({training.get('split', '')})",
        "training counts": training.get("counts", ""), "random_state": training.get("random_state", ""),
        "evaluated on": f"{result.name}" + (f" ({result.excluded} images seen in training left out)"
                                            if result.excluded else ""),
    }
    return ModelResult(name=result.name, threshold=detector.threshold, predictions=result.predictions,
                       metrics=metrics, details=details)


def write_report(
    data: str | Path | None = None,
    backbone: str | None = None,
    model: str | Path | None = None,
    *,
    split: str | None = None,
    cache: str | Path | None = None,
    out: str | Path | None = None,
    projection: ProjectionParams = ProjectionParams(),
    n_jobs: int | None = None,
    command: str | None = None,
    n_mistakes: int = 8,
    allow_partial: bool = False,
) -> Path:
    """Write the report of ``data`` (see ``detector.find_store``; default: the model's training data or
    the only cache), embedding set ``backbone`` (default: the model's, or the only set), optionally
    evaluating ``model`` (folder or name under <cache>/models). ``out``: an .html file or a folder
    [default: reports/<name>/index.html]. Returns the file written."""
    from .detector import Detector, find_model, find_store, matching_set, pick_set

    result, model_name = None, None
    if model is not None:
        directory = find_model(model, cache)
        detector = Detector.load(directory)
        model_name = directory.name
        if data is None and not detector.training.get("store"):
            raise ValueError(f"model {directory} does not record the cache it was fit on; pass --data")
        store = find_store(data, cache) if data is not None else Store(detector.training["store"])
        key = store.resolve_key(backbone) if backbone else matching_set(store, detector)
        if key is None:
            raise ValueError(f"{store.path} holds no embeddings of the model's backbone; extract them with:\n  "
                             + detector.extract_command())
        result = model_result(detector, store, key, split)
    else:
        store = find_store(data, cache)
        key = pick_set(store, backbone)
    store.require_complete(key, allow_partial)
    name = report_name(store.path.stem, key, model_name)
    page = render_report(store, key, model=result, projection=projection, n_jobs=n_jobs, command=command,
                         n_mistakes=n_mistakes, title=name)
    out = Path(out) if out is not None else DEFAULT_REPORTS / name
    path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- headless browser


CHROMIUM_BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")


class BrowserUnavailable(RuntimeError):
    """No headless Chromium, chromedriver or selenium on this machine."""


def find_chromium() -> tuple[str, str]:
    """(browser binary, chromedriver) found on PATH; BrowserUnavailable with the fix otherwise."""
    import shutil

    binary = next((found for name in CHROMIUM_BINARIES if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing = " and ".join(n for n, v in (("chromium", binary), ("chromedriver", driver)) if v is None)
        raise BrowserUnavailable(f"no {missing} on PATH; install them with scripts/install-browser.sh")
    return binary, driver


def chromium(width: int = 1300, height: int = 900):
    """A headless Chromium WebDriver (fresh profile, browser console logged); call ``.quit()``."""
    import tempfile

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("selenium is not installed: pip install selenium") from None
    binary, driver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="fakedet-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    browser.profile_dir = profile  # removed by the caller's cleanup (see screenshot)
    return browser


def screenshot(page: str | Path, png: str | Path, width: int = 1300, max_height: int = 30000) -> Path:
    """Render an HTML file in headless Chromium and save a full-page PNG screenshot."""
    import shutil

    browser = chromium(width)
    try:
        browser.get(Path(page).resolve().as_uri())
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(int(height) + 40, max_height))
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        if not browser.save_screenshot(str(png)):
            raise BrowserUnavailable(f"Chromium could not write {png}")
    finally:
        browser.quit()
        shutil.rmtree(browser.profile_dir, ignore_errors=True)
    return Path(png)
