"""Binary real-vs-fake metrics as plain functions of arrays.

Conventions: label 0 = real, 1 = fake (the positive class); the score is P(fake);
a sample is predicted fake when ``p_fake >= threshold``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

_LOG_LOSS_EPS = 1e-15
PERCENT_KEYS = {
    "accuracy", "balanced_accuracy", "ece", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr",
    "precision_real", "recall_real", "f1_real", "precision_fake", "recall_fake", "f1_fake", "out_of_domain",
}


def _check(y_true: ArrayLike, p_fake: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (labels as int array, probabilities as float array)."""
    y = np.asarray(y_true).ravel()
    p = np.asarray(p_fake, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} samples but p_fake has {p.size}")
    if y.size == 0:
        raise ValueError("no samples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 (real) and 1 (fake)")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p_fake must be probabilities in [0, 1]")
    return y.astype(int), p


def _require_both_classes(y: np.ndarray) -> None:
    if np.unique(y).size < 2:
        raise ValueError("need both real (0) and fake (1) samples")


def _ratio(num: int, den: int) -> float | None:
    """num / den, or None when undefined (den == 0)."""
    return float(num / den) if den else None


def expected_calibration_error(y_true: ArrayLike, p_fake: ArrayLike, n_bins: int = 15) -> float:
    """ECE of P(fake): sum over bins of (n_bin / n) * |mean P(fake) - fraction fake|.

    Uses ``n_bins`` equal-width bins on P(fake) over [0, 1] (bins are [a, b), the last
    one is closed). This is the binary/positive-class definition, not the top-label
    ("confidence") ECE of Guo et al. (2017); empty bins contribute nothing.
    """
    y, p = _check(y_true, p_fake)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    return float(np.abs(sum_p - sum_y).sum() / y.size)  # = sum_b n_b/n * |mean_p - mean_y|


def tpr_at_fpr(y_true: ArrayLike, p_fake: ArrayLike, fpr: float) -> float:
    """Highest TPR among ROC points with FPR <= ``fpr`` (no interpolation)."""
    y, p = _check(y_true, p_fake)
    _require_both_classes(y)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError("fpr must be in [0, 1]")
    fprs, tprs, _ = roc_curve(y, p, drop_intermediate=False)
    return float(tprs[fprs <= fpr].max())


def choose_threshold(
    y_true: ArrayLike, p_fake: ArrayLike, criterion: str = "balanced_accuracy"
) -> float:
    """Threshold on P(fake) maximising ``criterion`` ("balanced_accuracy" or "accuracy").

    Choose it on validation data, never on test data. Candidates are 0, 0.5, 1 and the
    midpoints between consecutive distinct values of {0, scores, 1}; ties go to the
    candidate closest to 0.5.
    """
    if criterion not in ("balanced_accuracy", "accuracy"):
        raise ValueError(f"unknown criterion {criterion!r}")
    y, p = _check(y_true, p_fake)
    _require_both_classes(y)
    u = np.unique(np.concatenate([[0.0, 1.0], p]))
    candidates = np.unique(np.concatenate([[0.0, 0.5, 1.0], (u[:-1] + u[1:]) / 2]))
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = pos.size - np.searchsorted(pos, candidates, side="left")  # fakes with p >= t
    tn = np.searchsorted(neg, candidates, side="left")  # reals with p < t
    if criterion == "balanced_accuracy":
        score = (tp / pos.size + tn / neg.size) / 2
    else:
        score = (tp + tn) / y.size
    best = candidates[np.isclose(score, score.max(), rtol=0, atol=1e-12)]
    return float(best[np.argmin(np.abs(best - 0.5))])


def binary_metrics(y_true: ArrayLike, p_fake: ArrayLike, threshold: float = 0.5) -> dict:
    """Threshold and ranking metrics as a JSON-serialisable dict of python numbers.

    Ratios with a zero denominator (e.g. recall of an absent class, precision of a class
    never predicted) are None, as are roc_auc, average_precision and tpr_at_*_fpr when
    only one class is present. ``confusion`` is [[TN, FP], [FN, TP]] (rows = true
    real/fake, columns = predicted real/fake). log_loss clips the probability given to
    the true class to at least 1e-15.
    """
    y, p = _check(y_true, p_fake)
    pred = (p >= threshold).astype(int)
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (y, pred), 1)
    n_true, n_pred = cm.sum(axis=1), cm.sum(axis=0)

    out: dict = {
        "n": int(y.size),
        "n_real": int(n_true[0]),
        "n_fake": int(n_true[1]),
        "threshold": float(threshold),
        "accuracy": float(np.trace(cm) / y.size),
    }
    recalls = [_ratio(cm[c, c], n_true[c]) for c in (0, 1)]
    out["balanced_accuracy"] = float(np.mean([r for r in recalls if r is not None]))
    for c, name in enumerate(("real", "fake")):
        out[f"precision_{name}"] = _ratio(cm[c, c], n_pred[c])
        out[f"recall_{name}"] = recalls[c]
        out[f"f1_{name}"] = _ratio(2 * cm[c, c], n_true[c] + n_pred[c])

    both = n_true.min() > 0
    out["roc_auc"] = float(roc_auc_score(y, p)) if both else None
    out["average_precision"] = float(average_precision_score(y, p)) if both else None
    p_true_class = np.where(y == 1, p, 1 - p)
    out["log_loss"] = float(-np.mean(np.log(np.maximum(p_true_class, _LOG_LOSS_EPS))))
    out["ece"] = expected_calibration_error(y, p)
    out["tpr_at_1pct_fpr"] = tpr_at_fpr(y, p, 0.01) if both else None
    out["tpr_at_5pct_fpr"] = tpr_at_fpr(y, p, 0.05) if both else None
    out["confusion"] = cm.tolist()
    return out


def format_metrics(metrics: dict) -> str:
    """Fixed-width text table: one metric per line, rates as percentages, confusion as 2x2."""
    lines = []
    for key, value in metrics.items():
        if key == "confusion":
            continue
        if value is None:
            text = "n/a"
        elif isinstance(value, (int, np.integer)):
            text = f"{value:d}"
        elif key in PERCENT_KEYS:
            text = f"{100 * value:.2f}%"
        else:
            text = f"{value:.4f}"
        lines.append(f"{key:<20}{text:>12}")
    if "confusion" in metrics:
        (tn, fp), (fn, tp) = metrics["confusion"]
        lines += [
            f"{'confusion':<20}{'pred real':>12}{'pred fake':>12}",
            f"{'  true real':<20}{tn:>12d}{fp:>12d}",
            f"{'  true fake':<20}{fn:>12d}{tp:>12d}",
        ]
    return "\n".join(lines)
