"""The ``Detector``: a fitted head plus the identity of the embeddings it reads, and its file format.

A scikit-learn-style estimator on embedding arrays (``predict_proba`` (N, 2) in the order of
``classes_`` = [0 real, 1 fake], ``p_fake`` for the fake column, ``predict`` at the threshold chosen
on validation data). Torch-free: ``fakedet.workflow`` fits, evaluates and embeds images for it.

A saved model is a folder (default ``cache/models/<dataset>-<key>-<head>/``)::

    model.skops    the scikit-learn pipeline, in the skops format (no pickle)
    model.json     head, params, backbone spec + fingerprint + identity, threshold, labels,
                   training data description, library versions
    metrics.json   {"val": {...}, "test": {...}, "cv": {...}, "<dataset>/<split>": {...}}
    splits.csv     id, split of every labelled content id the model was fit and tuned on
    domain.skops   the out-of-domain summary (``fakedet.domain``), when the model has one; its
                   numbers (scales, threshold, in-domain rate) are in model.json under "domain"

A fused model (``fakedet.fusion``) reads several embedding sets side by side: model.json then also
holds "sets", each set's key, spec, fingerprint, identity, config and width in column order; its key,
fingerprint and backbone are theirs joined with ``+`` (and "config" is null). Single-set models keep
the format above unchanged.

Loading never runs code from the file: ``skops.io.load`` rebuilds only the types skops trusts
by default (numpy, and scikit-learn's public estimators) plus ``TRUSTED_TYPES``, the private
scikit-learn helpers that fakedet's heads contain (and ``Bunch``, the dict of a fused stack's heads;
``SampledLogisticRegressionCV``, fakedet's own logreg head; ``LeanMLPClassifier`` and
``NoiseFloorScaler``, its mlp head and scaler; ``ColumnBlock``, a stacked model's column block). Any
other type makes ``Detector.load`` refuse the file (``UntrustedModel``); ``trusted=True`` is never used.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch

from .backbone_config import BackboneConfig
from .catalog import MODEL_META
from .datasets import LABEL_NAMES
from .domain import DomainModel
from .fusion import ColumnBlock
from .heads import LeanMLPClassifier, NoiseFloorScaler, SampledLogisticRegressionCV, stretched_noise
from .provenance import versions
from .store import Embeddings, StoreError

FORMAT = "fakedet-model/1"
MODEL_FILE, META_FILE, METRICS_FILE, SPLITS_FILE = "model.skops", MODEL_META, "metrics.json", "splits.csv"
DOMAIN_FILE = "domain.skops"
TRUSTED_TYPES = sorted(f"{t.__module__}.{t.__qualname__}" for t in (
    _CalibratedClassifier, _SigmoidCalibration, AdamOptimizer, SGDOptimizer, Bunch,  # Bunch: a fused stack's dict
    SampledLogisticRegressionCV, LeanMLPClassifier, NoiseFloorScaler, ColumnBlock))


@dataclass(frozen=True)
class EmbeddingSet:
    """One embedding set a model reads: its key, fingerprint, backbone spec and settings."""

    key: str
    fingerprint: str
    backbone: str
    config: BackboneConfig


class ModelMismatch(StoreError):
    """Embeddings made by another backbone (or settings) than the model was fit on."""


class UntrustedModel(StoreError):
    """A model file holding types that fakedet does not load."""


@dataclass
class Detector:
    """A fitted head with the identity of its embeddings; P(fake) from embeddings of that identity."""

    pipeline: Pipeline
    head: str
    params: dict
    preprocess: str
    key: str
    fingerprint: str
    backbone: str
    identity: dict
    config: BackboneConfig | None = None
    threshold: float = 0.5
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=versions)
    splits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "split"]))
    domain: DomainModel | None = None
    sets: list[dict] = field(default_factory=list)  # a fused model's sets (fusion.SET_FIELDS), else empty

    def __post_init__(self):
        if self.config is None and not self.sets:  # models written before the config was stored
            self.config = BackboneConfig.from_identity(self.backbone, self.identity)

    @property
    def fused(self) -> bool:
        """True when the model reads several embedding sets side by side."""
        return bool(self.sets)

    @property
    def members(self) -> list[EmbeddingSet]:
        """The embedding sets the model reads, in column order (one for a single-set model)."""
        if not self.sets:
            return [EmbeddingSet(self.key, self.fingerprint, self.backbone, self.config)]
        return [EmbeddingSet(s["key"], s["fingerprint"], s["spec"], BackboneConfig.from_dict(s["config"]))
                for s in self.sets]

    def voters(self) -> list["Detector"]:
        """A stacked fused model's members as single-set detectors (its P(fake) is the mean of theirs);
        [] for a model of one set or a concatenated one."""
        if not self.fused or "fusion" not in self.pipeline.named_steps:
            return []
        heads = [m["head"] for m in self.training.get("ensemble", [])] or [self.head] * len(self.sets)
        return [Detector(Pipeline(getattr(fitted, "estimator", fitted).steps[1:]), head, {}, "", m.key,  # no block
                         m.fingerprint, m.backbone, {}, m.config)  # (an ensemble's members are FrozenEstimators)
                for m, head, fitted in zip(self.members, heads, self.pipeline["fusion"].estimators_)]

    @classmethod
    def for_embeddings(cls, pipeline: Pipeline, emb: Embeddings, head: str, params: dict,
                       preprocess: str) -> "Detector":
        """A detector reading embeddings like ``emb`` (its key, fingerprint, spec, identity and config)."""
        attrs, sets = emb.attrs, emb.attrs.get("sets", [])
        config = None if sets else BackboneConfig.from_set_attrs(attrs)
        return cls(pipeline=pipeline, head=head, params=params, preprocess=preprocess, key=emb.key,
                   fingerprint=emb.fingerprint, backbone=attrs["spec"], identity=attrs["identity"], config=config,
                   sets=[dict(s) for s in sets])

    @property
    def classes_(self) -> np.ndarray:
        return self.pipeline.classes_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 2), columns in the order of ``classes_`` (0 real, 1 fake)."""
        return self.pipeline.predict_proba(X)

    def p_fake(self, X: np.ndarray) -> np.ndarray:
        """P(fake) per row, shape (N,): the fake column of ``predict_proba``."""
        if len(X) == 0:
            return np.zeros(0)
        return self.predict_proba(X)[:, list(self.classes_).index(1)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0 (real) / 1 (fake) per row, using the threshold chosen on validation data."""
        return (self.p_fake(X) >= self.threshold).astype(np.int8)

    def domain_score(self, X: np.ndarray) -> np.ndarray | None:
        """Out-of-domain score per row (about 1 on training data), or None when the model has no summary."""
        return None if self.domain is None or len(X) == 0 else self.domain.score(X)

    def extract_command(self, data: str = "DATA", missing: list[EmbeddingSet] | None = None) -> str:
        """The ``fakedet extract`` commands (one line each) that make the embeddings this model reads
        (``missing``: only those sets)."""
        return "\n  ".join(f"fakedet extract {data} {m.config.options()}" for m in missing or self.members)

    def check(self, embeddings: Embeddings) -> None:
        """Raise ModelMismatch unless ``embeddings`` come from this model's backbone and settings."""
        if embeddings.fingerprint != self.fingerprint:
            raise ModelMismatch(
                f"embedding set {embeddings.key} ({embeddings.attrs.get('spec')}, fingerprint "
                f"{embeddings.fingerprint[:12]}) was not made by this model's backbone {self.backbone} "
                f"(fingerprint {self.fingerprint[:12]}); extract with the model's settings:\n  "
                + self.extract_command()
            )

    def save(self, directory: str | Path) -> Path:
        """Write the model folder (see module docstring); returns it."""
        import skops.io as sio  # imported here: skops' trusted-type scan imports torch

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sio.dump(self.pipeline, directory / MODEL_FILE)
        if self.domain is not None:
            sio.dump(self.domain.pipeline, directory / DOMAIN_FILE)
        meta = {
            "format": FORMAT, "head": self.head, "params": self.params, "preprocess": self.preprocess,
            "key": self.key, "fingerprint": self.fingerprint, "backbone": self.backbone, "identity": self.identity,
            "config": self.config.to_dict() if self.config else None, "threshold": self.threshold, "labels": LABEL_NAMES, "training": self.training, "versions": self.versions,
            "domain": self.domain.meta if self.domain is not None else None,
        }
        if self.sets:
            meta["sets"] = self.sets
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.splits.to_csv(directory / SPLITS_FILE, index=False)
        self.save_metrics(directory)
        return directory

    def save_metrics(self, directory: str | Path) -> Path:
        path = Path(directory) / METRICS_FILE
        path.write_text(json.dumps(self.metrics, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        """Read a model folder; refuses files holding types outside the trusted list, and malformed ones
        with one line naming the file."""
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise StoreError(f"{directory} is not a fakedet model folder (no {META_FILE})")
        meta = _read_meta(directory / META_FILE)
        pipelines = {}
        for name in (MODEL_FILE, DOMAIN_FILE) if meta.get("domain") else (MODEL_FILE,):
            try:
                pipelines[name] = sio.load(directory / name, trusted=TRUSTED_TYPES)
            except UntrustedTypesFoundException as err:
                raise UntrustedModel(f"{directory / name} holds types fakedet does not load: {err}") from None
            except Exception as err:  # a pickle, a torch file, a truncated or empty file: skops raises many types
                raise UntrustedModel(f"not a fakedet model file: {directory / name} is not a readable skops "
                                     f"file ({type(err).__name__}); fit the model again") from None
            if not isinstance(pipelines[name], Pipeline):
                raise UntrustedModel(f"{directory / name} holds a {type(pipelines[name]).__name__}, not a Pipeline")
        pipeline = pipelines[MODEL_FILE]
        domain = DomainModel.from_meta(pipelines[DOMAIN_FILE], meta["domain"]) if DOMAIN_FILE in pipelines else None
        metrics_file = directory / METRICS_FILE
        try:
            metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
            splits = pd.read_csv(directory / SPLITS_FILE, dtype=str, keep_default_na=False)
        except (ValueError, OSError) as err:
            raise StoreError(f"not a fakedet model file: {metrics_file.name} or {SPLITS_FILE} in {directory} "
                             f"is unreadable ({err}); fit the model again") from None
        stretched = sum(stretched_noise(p) for p in pipelines.values())
        if stretched:
            warnings.warn(f"{directory} was fit before fakedet left float-noise columns unscaled: its scaler stretches "
                          f"{stretched} near-constant column(s) to unit variance, so its scores can change with the "
                          "runtime that embeds an image (torch or ONNX Runtime, one CPU or another); fit it again to "
                          "mend this", UserWarning, stacklevel=2)
        return cls(
            pipeline=pipeline, metrics=metrics, splits=splits, domain=domain,
            config=BackboneConfig.from_dict(meta["config"]) if meta.get("config") else None,
            sets=meta.get("sets") or [], **{k: meta[k] for k in _META_KEYS},
        )


_META_KEYS = ("head", "params", "preprocess", "key", "fingerprint", "backbone", "identity", "threshold",
              "training", "versions")


def _read_meta(path: Path) -> dict:
    """``model.json``, checked (format, the Detector fields, the threshold); StoreError naming the file if
    malformed."""
    try:
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise StoreError(f"not a fakedet model file: {path} is not readable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StoreError(f"{path.parent} has model format {found!r}, this fakedet reads {FORMAT}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise StoreError(f"not a fakedet model file: {path} lacks {', '.join(missing)}; fit the model again")
    threshold = meta["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise StoreError(f"not a fakedet model file: {path} has threshold {threshold!r}, not a number in [0, 1]")
    sets = meta.get("sets") or []
    if not isinstance(sets, list) or not all(isinstance(s, dict) and {"key", "fingerprint", "spec", "config"} <= set(s)
                                             for s in sets):
        raise StoreError(f"not a fakedet model file: {path} has malformed fused sets; fit the model again")
    if not isinstance(meta.get("config") or {}, dict) or not isinstance(meta.get("domain") or {}, dict):
        raise StoreError(f"not a fakedet model file: {path} has a malformed config or domain; fit the model again")
    return meta
