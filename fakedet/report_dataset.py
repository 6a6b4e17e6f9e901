"""The report's dataset checks: shortcuts a classifier can cheat on (format, resolution, file size),
leaks (identical files across labels or splits), counts, distributions, unreadable files."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from .report_html import COLOURS, MAX_ROWS, img_tag, kilobytes, label_name, html_table

# shortcut thresholds, above which the report warns: total-variation distance between the real
# and fake distributions of formats and resolutions; ratio of mean file sizes; how well file size
# alone separates the classes (ROC AUC, either direction)
FORMAT_TV, RESOLUTION_TV, FILE_SIZE_RATIO, FILE_SIZE_AUC = 0.1, 0.1, 1.25, 0.8


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
        bigger = label_name(means.idxmax())
        found.append(
            f"File sizes differ between real and fake: {bigger} files are larger on average "
            f"(real {kilobytes(means[0])}, fake {kilobytes(means[1])}, {ratio:.2f}x) and file size alone tells the "
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
    frame = images.assign(split=images["split"].replace("", "(none)"), label=images["label"].map(label_name))
    files = pd.crosstab(frame["split"], frame["label"], margins=True, margins_name="all")
    distinct = frame.groupby("split")["id"].nunique()
    distinct["all"] = frame["id"].nunique()
    files["distinct images"] = distinct.reindex(files.index).astype(int)
    files.index.name, files.columns.name = "split", None
    return html_table(files, index=True)


def _distribution_tables(images: pd.DataFrame) -> str:
    ok = images[images["error"] == ""]
    labels = ok["label"].map(label_name)
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
        '<div class="plots"><div><h3>Formats</h3>' + html_table(formats, index=True) + "</div>"
        "<div><h3>Resolutions (10 most common)</h3>" + html_table(resolutions, index=True) + "</div>"
        "<div><h3>File size (KB)</h3>" + html_table(sizes, index=True) + "</div></div>"
    )


def _distribution_plot(images: pd.DataFrame) -> str:
    ok = images[(images["error"] == "") & (images["width"] > 0)]
    fig = Figure(figsize=(10, 3.2))
    ax_size, ax_pixels = fig.subplots(1, 2)
    for label, group in ok.groupby("label"):
        style = dict(bins=40, alpha=0.55, color=COLOURS.get(int(label)), label=label_name(label))
        ax_size.hist(group["nbytes"] / 1024, **style)
        ax_pixels.hist(np.sqrt(group["width"].astype(float) * group["height"]), **style)
    ax_size.set(xlabel="file size (KB)", ylabel="files", title="File size by label")
    ax_pixels.set(xlabel="sqrt(width x height) (pixels)", ylabel="files", title="Resolution by label")
    ax_size.legend()
    return img_tag(fig, "histograms of file size and resolution by label")


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
        "labels": shown["labels"].map(lambda v: ", ".join(label_name(x) for x in v)),
        "splits": shown["splits"].map(lambda v: ", ".join(s or "(none)" for s in v)),
        "label conflict": shown["conflict"].map({True: "yes", False: ""}),
        "cross-split": shown["cross_split"].map({True: "yes", False: ""}),
    })
    more = f"<p>(first {MAX_ROWS} of {len(dups)} groups)</p>" if len(dups) > MAX_ROWS else ""
    return text + html_table(table) + more


def _failures_html(failures: pd.DataFrame) -> str:
    if failures.empty:
        return '<div class="ok">Every file could be read.</div>'
    counts = failures["reason"].value_counts().rename_axis("reason").rename("files").reset_index()
    more = f"<p>(first {MAX_ROWS} of {len(failures)})</p>" if len(failures) > MAX_ROWS else ""
    return (f"<p>{len(failures)} files could not be embedded.</p>" + html_table(counts.head(20))
            + html_table(failures[["path", "reason"]].head(MAX_ROWS)) + more)


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
