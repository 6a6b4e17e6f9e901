"""One self-contained HTML report of a cached dataset, its embedding projection and (optionally) a
finished model evaluation (``model_result`` turns a ``workflow.Evaluation`` into what the page shows;
``workflow.report`` runs the whole job from paths).

The page embeds every plot and thumbnail as a base64 PNG (matplotlib Agg, no pyplot state), uses
no scripts, fonts or external CSS, and forbids loading anything else with a Content-Security-
Policy, so it opens offline from disk. Every string that comes from the data (file names,
reasons, paths) is HTML-escaped.

Sections: warnings (shortcuts a classifier can cheat on, leaks), dataset overview
(``report_dataset``), projection, model (metrics, confusion matrix, ROC / PR / calibration curves,
score histograms, the most confident mistakes), provenance (command, versions, parameters).
"""
from __future__ import annotations

import base64
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

from .datasets import duplicates, open_source
from .decoding import ImageDecodeError, decode_image
from .metrics import PERCENT_KEYS
from .project import Projection, ProjectionParams, project
from .report_dataset import dataset_section, leak_warnings, mark_failures, shortcut_warnings
from .report_html import COLOURS, CSP, CSS, boxes, esc, img_tag, key_values, label_name, html_table
from .provenance import versions
from .store import Store

DEFAULT_REPORTS = Path("reports")
CORRECT, WRONG, OUTSIDE = "#2ca02c", "#ff7f0e", "#dddddd"
THUMB = 112

@dataclass
class ModelResult:
    """What the report shows about a model: its evaluation on one split plus its description."""

    name: str
    threshold: float
    predictions: pd.DataFrame  # id, path, split, label, p_fake, pred
    metrics: dict  # {column title: binary_metrics dict}, the evaluated split first
    details: dict  # shown as a key/value table


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
             {label_name(v): COLOURS[v] for v in present})
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
        f"<p>{esc(params.get('method', '').upper())} projection <code>{esc(proj.name)}</code> of set "
        f"<code>{esc(proj.key)}</code>: {esc(shown)} ({esc(how)}).</p>"
        + img_tag(fig, f"{proj.name} projection coloured by label") + "</section>"
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
    return html_table(frame, index=True)


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
    plots.append(img_tag(fig, "confusion matrix"))

    fig = Figure(figsize=(4.4, 3.2))
    ax = fig.subplots()
    for label in (0, 1):
        ax.hist(p[y == label], bins=np.linspace(0, 1, 41), alpha=0.55, color=COLOURS[label], label=label_name(label))
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="P(fake)", ylabel="images", title="Scores by true class")
    ax.legend(fontsize=8)
    plots.append(img_tag(fig, "histogram of P(fake) by true class"))

    if len(np.unique(y)) == 2:
        fig = Figure(figsize=(3.6, 3.2))
        ax = fig.subplots()
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=COLOURS[1])
        ax.plot([0, 1], [0, 1], color="#aaa", ls=":")
        ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate", title="ROC")
        plots.append(img_tag(fig, "ROC curve"))

        fig = Figure(figsize=(3.6, 3.2))
        ax = fig.subplots()
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, color=COLOURS[1])
        ax.axhline(y.mean(), color="#aaa", ls=":")
        ax.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall", ylim=(0, 1.02))
        plots.append(img_tag(fig, "precision-recall curve"))
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.subplots()
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    ax.plot([0, 1], [0, 1], color="#aaa", ls=":")
    ax.plot(predicted, observed, marker="o", color=COLOURS[1])
    ax.set(xlabel="mean P(fake)", ylabel="fraction fake", title="Calibration", xlim=(0, 1), ylim=(0, 1))
    plots.append(img_tag(fig, "calibration curve"))
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
        out.append(boxes("note", [f"Thumbnails not shown: {problem}."]))
    for title, rows in groups:
        if rows.empty:
            continue
        out.append(f"<h4>{esc(title)}</h4><div class=\"thumbs\">")
        for row in rows.itertuples():
            picture = ""
            if src is not None:
                try:
                    picture = f'<img src="{_thumbnail(decode_image(src.read(row.path)))}" alt="{esc(row.path)}">'
                except (FileNotFoundError, OSError, ImageDecodeError) as err:
                    picture = f'<div class="missing">cannot read: {esc(err)}</div>'
            out.append(f"<figure class=\"thumb\">{picture}<figcaption>{esc(row.path)}<br>"
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
        '<section id="model"><h2>Model</h2>' + key_values(model.details)
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
        f"<h3>Command</h3><pre>{esc(command)}</pre>"
        + key_values({
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cache": store.path, "dataset source": attrs.get("source", ""),
            "cache updated": attrs.get("updated", ""),
            "embedding set": set_attrs.get("key", ""), "backbone": set_attrs.get("spec", ""),
            "fingerprint": set_attrs.get("fingerprint", ""),
        })
        + "<h3>Projection parameters</h3>" + key_values(params)
        + "<h3>Versions</h3>" + key_values(_all_versions()) + "</section>"
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
    summary = (boxes("warn", ["Warning: " + w for w in warnings]) if warnings
               else '<div class="ok">No format, size or resolution shortcut and no leak found.</div>')
    body = (
        f"<h1>fakedet report</h1><p class=\"sub\">{esc(title)}</p>"
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
        f"<title>fakedet report: {esc(title)}</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def model_result(detector, evaluation, own: bool = False) -> ModelResult:
    """What the page shows about a finished ``evaluation`` of ``detector`` (a ``workflow.Evaluation``):
    its metrics first, then the model's other recorded ones (``own``: evaluated on its training data)."""
    metrics = {f"{evaluation.name} (this report)": evaluation.metrics}
    for name, values in detector.metrics.items():
        if own and name == evaluation.split:
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
        "evaluated on": f"{evaluation.name}" + (f" ({evaluation.excluded} images seen in training left out)"
                                                if evaluation.excluded else ""),
    }
    if detector.fused:
        mode, members = training.get("fusion", {}).get("mode", ""), len(detector.sets)
        details["fusion"] = f"{mode} of {members} sets" + (" (fakedet ensemble)" if training.get("ensemble") else "")
    return ModelResult(name=evaluation.name, threshold=detector.threshold, predictions=evaluation.predictions,
                       metrics=metrics, details=details)


def write_report(
    store: Store,
    key: str,
    *,
    model: ModelResult | None = None,
    model_name: str | None = None,
    out: str | Path | None = None,
    projection: ProjectionParams = ProjectionParams(),
    n_jobs: int | None = None,
    command: str | None = None,
    n_mistakes: int = 8,
    allow_partial: bool = False,
) -> Path:
    """Write the report of embedding set ``key`` of ``store``, with a finished model evaluation if given.

    ``out``: an .html file or a folder [default: reports/<name>/index.html]. Refuses a set still missing
    images of its table unless ``allow_partial``. Returns the file written."""
    store.require_complete(key, allow_partial)
    name = report_name(store.path.stem, key, model_name)
    page = render_report(store, key, model=model, projection=projection, n_jobs=n_jobs, command=command,
                         n_mistakes=n_mistakes, title=name)
    out = Path(out) if out is not None else DEFAULT_REPORTS / name
    path = out if out.suffix.lower() in (".html", ".htm") else out / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
