"""A fitted head pipeline re-expressed as a torch module: embeddings -> fake score, differentiable.

``torch_head(pipeline)`` rebuilds, from the fitted scikit-learn attributes, the preprocessing
steps ``l2`` (Normalizer), ``standard`` (StandardScaler) and ``pca`` (PCA) and the heads
``logreg`` (LogisticRegression), ``linsvm`` (sigmoid-calibrated LinearSVC, the mean over the
calibration folds, as scikit-learn averages them) and ``mlp`` (MLPClassifier). The module
returns P(fake) per row; ``score=True`` returns its logit (the fake score Grad-CAM follows).
Other heads (kNN, RBF SVM, nearest centroid) are not smooth functions of the embedding in a
form worth exporting; ``NotExpressible`` says why. Fused models: ``MeanModule`` (stacked, the mean
of each set's ``DetectorModule``) and ``ConcatModule`` (``concat_head``: each set's preprocessing,
then one head). Used by ``explain`` (gradients) and ``export`` (ONNX); heads.py itself stays free
of torch.
"""
from __future__ import annotations

import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from .fusion import ColumnBlock

REASONS = {
    "KNeighborsClassifier": "a k-nearest-neighbour vote is a lookup over the training embeddings, not a "
                            "function with useful gradients (refit with --head logreg, linsvm or mlp)",
    "SVC": "the exact RBF SVM is a kernel sum over its support vectors; it is not re-expressed here "
           "(refit with --head logreg, linsvm or mlp)",
    "NearestCentroid": "the nearest-centroid head is a piecewise distance rule; it is not re-expressed here "
                       "(refit with --head logreg, linsvm or mlp)",
    "Nystroem": "the approximate RBF SVM (Nystroem features) is not re-expressed here "
                "(refit with --head logreg, linsvm or mlp)",
}


class NotExpressible(ValueError):
    """A head that has no torch (and so no ONNX / Grad-CAM) form; the message says why."""


def _tensor(array) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float32)


class L2(nn.Module):
    """sklearn Normalizer(norm='l2'): rows to unit length, zero rows stay zero."""

    def forward(self, x):
        norm = x.norm(dim=1, keepdim=True)
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class Affine(nn.Module):
    """``(x - shift) @ weight + bias``: PCA, linear decision functions and MLP layers."""

    def __init__(self, shift, weight, bias=None):
        super().__init__()
        self.register_buffer("shift", _tensor(shift))
        self.register_buffer("weight", _tensor(weight))
        self.register_buffer("bias", _tensor(0.0 if bias is None else bias))

    def forward(self, x):
        return (x - self.shift) @ self.weight + self.bias


class Standard(nn.Module):
    """StandardScaler: ``(x - mean) / scale`` (either may be absent)."""

    def __init__(self, step: StandardScaler):
        super().__init__()
        self.register_buffer("mean", _tensor(0.0 if step.mean_ is None else step.mean_))
        self.register_buffer("scale", _tensor(1.0 if step.scale_ is None else step.scale_))

    def forward(self, x):
        return (x - self.mean) / self.scale


def _pca(step: PCA) -> Affine:
    weight = _tensor(step.components_).T
    if step.whiten:
        weight = weight / _tensor(step.explained_variance_).sqrt()
    return Affine(step.mean_, weight)


class Linear(nn.Module):
    """A binary linear decision function ``x @ coef + intercept`` (positive = class 1)."""

    def __init__(self, coef, intercept):
        super().__init__()
        self.decision = Affine(0.0, _tensor(coef).reshape(-1, 1), _tensor(intercept).reshape(1))

    def forward(self, x):
        return self.decision(x)[:, 0]


class Mlp(nn.Module):
    """MLPClassifier's forward pass to the output logit (before the logistic)."""

    ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid, "identity": lambda x: x}

    def __init__(self, mlp: MLPClassifier):
        super().__init__()
        self.activation = mlp.activation
        self.layers = nn.ModuleList(Affine(0.0, w, b) for w, b in zip(mlp.coefs_, mlp.intercepts_))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.ACTIVATIONS[self.activation](layer(x))
        return self.layers[-1](x)[:, 0]


class SigmoidCalibrated(nn.Module):
    """CalibratedClassifierCV(method='sigmoid'): mean over folds of expit(-(a f + b))."""

    def __init__(self, calibrated: CalibratedClassifierCV):
        super().__init__()
        if calibrated.method != "sigmoid":
            raise NotExpressible(f"calibration {calibrated.method!r} is not re-expressed (only sigmoid)")
        decisions, a, b = [], [], []
        for fold in calibrated.calibrated_classifiers_:
            decisions.append(_decision(fold.estimator))
            a.append(fold.calibrators[0].a_)
            b.append(fold.calibrators[0].b_)
        self.decisions = nn.ModuleList(decisions)
        self.register_buffer("a", _tensor(a))
        self.register_buffer("b", _tensor(b))

    def forward(self, x):
        f = torch.stack([d(x) for d in self.decisions], dim=1)
        return torch.sigmoid(-(self.a * f + self.b)).mean(dim=1)


def _decision(estimator) -> nn.Module:
    if isinstance(estimator, (LogisticRegression, LinearSVC)):
        if estimator.coef_.shape[0] != 1:
            raise NotExpressible("only binary heads are re-expressed")
        return Linear(estimator.coef_[0], estimator.intercept_[0])
    raise NotExpressible(REASONS.get(type(estimator).__name__, f"{type(estimator).__name__} is not re-expressed"))


class TorchHead(nn.Module):
    """Embeddings (N, D) -> P(fake) (N,), or its logit with ``score=True``."""

    def __init__(self, steps: list[nn.Module], head: nn.Module, outputs_probability: bool):
        super().__init__()
        self.steps = nn.Sequential(*steps)
        self.head = head
        self.outputs_probability = outputs_probability
        self.score = False

    def forward(self, x):
        out = self.head(self.steps(x))
        if self.outputs_probability:
            return torch.logit(out, eps=1e-7) if self.score else out
        return out if self.score else torch.sigmoid(out)


def torch_head(pipeline: Pipeline) -> TorchHead:
    """The fitted ``pipeline`` as a torch module giving P(fake); raises NotExpressible with the reason."""
    *pre, (_, last) = pipeline.steps
    if list(getattr(last, "classes_", [])) != [0, 1]:
        raise NotExpressible("only heads with classes [0 (real), 1 (fake)] are re-expressed")
    steps = _preprocessing(pre)
    if isinstance(last, CalibratedClassifierCV):
        return TorchHead(steps, SigmoidCalibrated(last), outputs_probability=True).eval()
    if isinstance(last, MLPClassifier):
        if last.out_activation_ != "logistic":
            raise NotExpressible("only binary MLP heads are re-expressed")
        return TorchHead(steps, Mlp(last), outputs_probability=False).eval()
    return TorchHead(steps, _decision(last), outputs_probability=False).eval()


def _preprocessing(steps: list[tuple[str, object]]) -> list[nn.Module]:
    modules = []
    for name, step in steps:
        if isinstance(step, Normalizer) and step.norm == "l2":
            modules.append(L2())
        elif isinstance(step, StandardScaler):
            modules.append(Standard(step))
        elif isinstance(step, PCA):
            modules.append(_pca(step))
        else:
            raise NotExpressible(REASONS.get(type(step).__name__, f"preprocessing step {name!r} is not re-expressed"))
    return modules


def concat_head(pipeline: Pipeline) -> tuple[list[nn.Module], TorchHead]:
    """A ``--fusion concat`` model's fitted pipeline (``fusion.head_pipeline``: a ``FeatureUnion`` of each
    set's column block and preprocessing, then one head) as each set's preprocessing module, in the
    model's set order, and the ``TorchHead`` over their concatenation."""
    (_, union), *rest = pipeline.steps
    blocks = [nn.Sequential(*_preprocessing([s for s in part.steps if not isinstance(s[1], ColumnBlock)]))
              for _, part in union.transformer_list]
    return blocks, torch_head(Pipeline(rest))


class DetectorModule(nn.Module):
    """Backbone features + head: a float image batch in [0, 1] (B, 3, S, S), already resized by the
    model's preprocessing, -> P(fake) (B,) (or the fake score, its logit, with ``score=True``)."""

    def __init__(self, features: nn.Module, head: TorchHead, score: bool = False):
        super().__init__()
        self.features = features
        self.head = head
        self.head.score = score

    def forward(self, x):
        return self.head(self.features(x))


def detector_module(detector, backbone, score: bool = False) -> DetectorModule:
    """``DetectorModule`` of a fakedet ``Detector`` and its re-created ``Backbone`` (fp32, eval)."""
    return DetectorModule(backbone.model, torch_head(detector.pipeline), score).to(backbone.device).eval()


class ConcatModule(nn.Module):
    """A ``--fusion concat`` model as one module: each set's backbone features (on input ``slots[i]``)
    through its own preprocessing, side by side, then the one head -> P(fake)."""

    def __init__(self, features: list[nn.Module], blocks: list[nn.Module], head: TorchHead, slots: list[int]):
        super().__init__()
        self.features, self.blocks, self.head = nn.ModuleList(features), nn.ModuleList(blocks), head
        self.slots = slots

    def forward(self, *inputs):
        return self.head(torch.cat([block(features(inputs[slot])) for features, block, slot
                                    in zip(self.features, self.blocks, self.slots)], dim=1))


class MeanModule(nn.Module):
    """A stacked fused model as one module: the mean P(fake) of its sets' ``DetectorModule``s, module i
    reading input ``slots[i]`` (sets with the same input geometry share one input)."""

    def __init__(self, modules: list[DetectorModule], slots: list[int]):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.slots = slots

    def forward(self, *inputs):
        return torch.stack([part(inputs[slot]) for part, slot in zip(self.parts, self.slots)]).mean(dim=0)
