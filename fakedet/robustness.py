"""How a detector holds up: under image perturbations, and on other datasets.

``evaluate_perturbed`` re-extracts perturbed copies of the evaluated images (each perturbation
cached as its own embedding set, ``<key>+jpeg-q75``; a fused model's sets each perturbed, then fused
as the model reads them) and scores them with the same model and threshold. ``cross_evaluate``
scores one model on several datasets, one row per source, with real and fake recall apart: a
detector that calls everything real scores 50% accuracy on a balanced set but 0% fake recall.
``assess`` is ``fakedet evaluate``: a saved model scored in whichever of these ways its arguments
ask for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .catalog import find_model
from .detector import Detector
from .extract import extract
from .perturb import Perturbation, parse_perturbation
from .scoring import Evaluation, evaluate, lazy_backbones, model_store, prediction_metrics
from .store import per_id
from .tables import write_table

COLUMNS = ["accuracy", "balanced_accuracy", "recall_real", "recall_fake", "roc_auc", "average_precision"]


def summary_row(name: str, evaluation: Evaluation) -> dict:
    """One table row of the main metrics of an evaluation (and the out-of-domain share, if the model flags)."""
    m = evaluation.metrics
    domain = {"out_of_domain": m["out_of_domain"]} if "out_of_domain" in m else {}
    return {"evaluated": name, "n": m["n"], **{k: m[k] for k in COLUMNS}, **domain, "excluded": evaluation.excluded}


def evaluate_perturbed(detector: Detector, perturbations: list[Perturbation], data: str | Path | None = None,
                       **options) -> pd.DataFrame:
    """Metrics on the clean images, then on each perturbed copy of the same images.

    ``options``: split, cache, checkpoint, device, runtime, batch_size, workers, progress (as for ``evaluate``).
    """
    clean = evaluate(detector, data, **options)
    store = model_store(detector, data, options.get("cache"))
    source = store.attrs()["source"]
    if not Path(source).exists():
        raise FileNotFoundError(f"the images of {store.path} ({source}) are not there any more; "
                                "perturbed copies need the original files")
    frame = per_id(store.images())
    frame = frame[frame["id"].isin(clean.predictions["id"])].drop(columns=["n_copies", "label_conflict"])
    backbones = [make() for make in lazy_backbones(  # every backbone made and checked before anything is written
        detector, options.get("checkpoint"), options.get("device", "auto"), options.get("cache"))]
    run = {k: options[k] for k in ("runtime", "batch_size", "workers", "progress") if k in options}
    rows = [{"perturbation": "none", **summary_row(clean.name, clean)}]
    for perturbation in perturbations:  # a fused model: each of its sets perturbed, then fused as the model reads them
        keys = [extract(source, backbone, cache=store.path, frame=frame, perturb=perturbation, **run).key
                for backbone in backbones]
        scored = evaluate(detector, store.path, split=clean.split, key=keys, cache=options.get("cache"))
        rows.append({"perturbation": perturbation.name, **summary_row(clean.name, scored)})
    table = pd.DataFrame(rows)
    table["accuracy_drop"] = table.loc[0, "accuracy"] - table["accuracy"]
    return table


def cross_evaluate(detector: Detector, datasets: list[str | Path], *, split: str | None = None,
                   **options) -> pd.DataFrame:
    """One row per dataset, same model and threshold: first the model's own held-out split of each
    dataset it was fit on (and their pooled row, ``pooled/held-out``, when there are several), then
    ``datasets``.

    ``split`` applies to the other datasets; ``options`` as for ``evaluate``.
    """
    sources = detector.training.get("sources")
    if sources:  # each dataset's own held-out split: test where it has one, else val
        results = [evaluate(detector, s["store"], split="test" if f"{s['dataset']}/test" in detector.metrics
                            else "val", **options) for s in sources]
    else:
        results = [evaluate(detector, None, split="test" if "test" in detector.metrics else "val", **options)]
    rows = [summary_row(r.name, r) for r in results]
    if len(results) > 1:
        predictions = pd.concat([r.predictions for r in results], ignore_index=True)
        pooled = Evaluation(prediction_metrics(detector, predictions), predictions, "pooled", "held-out")
        rows.append(summary_row(pooled.name, pooled))
    for data in datasets:
        result = evaluate(detector, data, split=split, **options)
        rows.append(summary_row(result.name, result))
    return pd.DataFrame(rows)



@dataclass
class Assessment:
    """What ``assess`` found for ``detector``: one ``evaluation`` (its metrics recorded in ``metrics_file``),
    or a ``table`` with one row per perturbation or dataset."""

    detector: Detector
    evaluation: Evaluation | None = None
    table: pd.DataFrame | None = None
    metrics_file: Path | None = None

    def out_of_domain(self, share: float = 0.5) -> list[tuple[str, float]]:
        """(evaluated, share) of each row or evaluation where more than ``share`` of the images is flagged
        out of the model's domain: verdicts there are not reliable."""
        if self.table is not None:
            rows = self.table if "out_of_domain" in self.table else self.table.iloc[:0]
            return [(r.evaluated, r.out_of_domain) for r in rows.itertuples() if r.out_of_domain > share]
        found = self.evaluation.metrics.get("out_of_domain", 0)
        return [(self.evaluation.name, found)] if found > share else []

    def write(self, out: str | Path) -> Path:
        """The table, or the per-image predictions of the evaluation, as ``.csv`` or ``.json``."""
        return write_table(self.table if self.table is not None else self.evaluation.predictions, out)


def assess(model: str | Path, data: list[str | Path] | tuple = (), *, perturb: list[str] | tuple = (),
           split: str | None = None, key: str | None = None, cache: str | Path | None = None,
           **options) -> Assessment:
    """Score a saved ``model`` (folder, or name under ``<cache>/models``) as ``fakedet evaluate`` does.

    With ``perturb`` specs (e.g. ``["jpeg:q=75"]``, one dataset at most): ``evaluate_perturbed``. With several
    ``data``, or none for a model fit on several datasets: ``cross_evaluate``. Otherwise one ``evaluate``
    of ``data`` (default: the model's own; ``key`` picks an embedding set) whose metrics are added to the
    model folder's metrics file. ``options``: checkpoint, device, runtime, batch_size, workers, progress.
    """
    data = list(data)
    if perturb and len(data) > 1:
        raise ValueError("--perturb works on one dataset at a time")
    changes = [parse_perturbation(p) for p in perturb]  # bad specs fail before any work
    directory = find_model(model, cache)
    detector = Detector.load(directory)
    options = {"split": split, "cache": cache, **options}
    if changes:
        return Assessment(detector, table=evaluate_perturbed(detector, changes, data[0] if data else None, **options))
    if len(data) > 1 or (detector.training.get("sources") and not data):
        return Assessment(detector, table=cross_evaluate(detector, data, **options))
    result = evaluate(detector, data[0] if data else None, key=key, **options)
    detector.metrics[result.name] = result.metrics
    return Assessment(detector, evaluation=result, metrics_file=detector.save_metrics(directory))
