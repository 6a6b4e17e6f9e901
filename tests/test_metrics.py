import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from fakedet.metrics import (
    binary_metrics,
    choose_threshold,
    expected_calibration_error,
    format_metrics,
    tpr_at_fpr,
)

# 4 real, 6 fake. At threshold 0.5: reals 0.1, 0.15, 0.3 -> real (TN=3), 0.7 -> fake (FP=1);
# fakes 0.3 -> real (FN=1), 0.7, 0.9 x4 -> fake (TP=5).
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P = np.array([0.1, 0.15, 0.3, 0.7, 0.3, 0.7, 0.9, 0.9, 0.9, 0.9])


def test_threshold_metrics_by_hand():
    m = binary_metrics(Y, P)
    assert m["confusion"] == [[3, 1], [1, 5]]
    assert (m["n"], m["n_real"], m["n_fake"], m["threshold"]) == (10, 4, 6, 0.5)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["precision_real"] == pytest.approx(3 / 4)  # TN / (TN + FN)
    assert m["recall_real"] == pytest.approx(3 / 4)  # TN / (TN + FP)
    assert m["f1_real"] == pytest.approx(3 / 4)
    assert m["precision_fake"] == pytest.approx(5 / 6)  # TP / (TP + FP)
    assert m["recall_fake"] == pytest.approx(5 / 6)  # TP / (TP + FN)
    assert m["f1_fake"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)  # 19/24


def test_threshold_is_inclusive():
    # p >= threshold -> fake: 0.7 is fake at threshold 0.7, so confusion is unchanged vs 0.5.
    assert binary_metrics(Y, P, threshold=0.7)["confusion"] == [[3, 1], [1, 5]]
    # At 0.8 both 0.7s become real: TN=4, FP=0, FN=2, TP=4.
    assert binary_metrics(Y, P, threshold=0.8)["confusion"] == [[4, 0], [2, 4]]


def test_ranking_metrics_by_hand():
    m = binary_metrics(Y, P)
    # AUC over 24 (real, fake) pairs: real 0.1 -> 6, 0.15 -> 6, 0.3 -> 5 + 0.5 tie, 0.7 -> 4 + 0.5 tie.
    assert m["roc_auc"] == pytest.approx(22 / 24)
    # AP = sum dR * P at thresholds 0.9 (R=4/6, P=1), 0.7 (R=5/6, P=5/6), 0.3 (R=1, P=6/8).
    assert m["average_precision"] == pytest.approx(4 / 6 + (1 / 6) * (5 / 6) + (1 / 6) * (6 / 8))
    # ROC points: (0, 0), (0, 4/6), (1/4, 5/6), (2/4, 1), (3/4, 1), (1, 1).
    assert m["tpr_at_1pct_fpr"] == pytest.approx(4 / 6)
    assert m["tpr_at_5pct_fpr"] == pytest.approx(4 / 6)


def test_log_loss_by_hand():
    # -(1/n) * sum(y ln p + (1 - y) ln(1 - p))
    by_hand = -(
        math.log(0.9) + math.log(0.85) + math.log(0.7) + math.log(0.3)  # reals: ln(1 - p)
        + math.log(0.3) + math.log(0.7) + 4 * math.log(0.9)  # fakes: ln p
    ) / 10
    assert binary_metrics(Y, P)["log_loss"] == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.381062, abs=1e-6)


def test_log_loss_clips_certain_mistakes():
    m = binary_metrics([0, 1], [1.0, 0.0])
    assert m["log_loss"] == pytest.approx(-math.log(1e-15))


def test_ece_by_hand():
    # 5 bins of width 0.2:
    #   [0, .2):  p 0.1, 0.15 (real, real)  -> |0.125 - 0| * 2
    #   [.2, .4): p 0.3, 0.3 (real, fake)   -> |0.3 - 0.5| * 2
    #   [.6, .8): p 0.7, 0.7 (real, fake)   -> |0.7 - 0.5| * 2
    #   [.8, 1]:  p 0.9 x4 (fake)           -> |0.9 - 1| * 4
    # ECE = (0.25 + 0.4 + 0.4 + 0.4) / 10
    assert expected_calibration_error(Y, P, n_bins=5) == pytest.approx(0.145)
    # Default 15 bins separate 0.1 and 0.15 ([.0667, .1333) vs [.1333, .2)), all else as above:
    # ECE = (0.1 + 0.15 + 0.4 + 0.4 + 0.4) / 10
    assert binary_metrics(Y, P)["ece"] == pytest.approx(0.145)
    assert expected_calibration_error(Y, P, n_bins=15) == pytest.approx(0.145)
    # p = 1.0 lands in the closed last bin [0.9, 1]: |0.975 - 0.5| * 2 / 2
    assert expected_calibration_error([1, 0], [1.0, 0.95], n_bins=10) == pytest.approx(0.475)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    # Bins are [a, b): 0.2 opens bin [.2, .4) -> (|0.1 - 0| + |0.2 - 1|) / 2
    assert expected_calibration_error([0, 1], [0.1, 0.2], n_bins=5) == pytest.approx(0.45)


def test_tpr_at_fpr_hand_made_roc():
    # ROC: (0, 0), (0, .5), (.5, .5), (.5, 1), (1, 1)
    y, p = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]
    assert tpr_at_fpr(y, p, 0.0) == 0.5
    assert tpr_at_fpr(y, p, 0.49) == 0.5
    assert tpr_at_fpr(y, p, 0.5) == 1.0
    assert tpr_at_fpr(y, p, 1.0) == 1.0


def test_tpr_at_fpr_keeps_collinear_points():
    # ROC (0, 0), (1/3, 1/3), (2/3, 2/3), (1, 1): the middle point on the diagonal counts.
    y, p = [1, 0, 1, 0, 1, 0], [0.9, 0.9, 0.8, 0.8, 0.7, 0.7]
    assert tpr_at_fpr(y, p, 0.7) == pytest.approx(2 / 3)


def test_choose_threshold_separable():
    # Any threshold in (0.3, 0.7] is perfect; 0.5 is in it.
    assert choose_threshold([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]) == 0.5
    # Perfect interval (0.7, 0.8]: midpoint between the two scores.
    assert choose_threshold([0, 0, 0, 1, 1, 1], [0.6, 0.65, 0.7, 0.8, 0.85, 0.9]) == pytest.approx(0.75)


def test_choose_threshold_ties_go_closest_to_half():
    # t=0.15: TPR 1, TNR .5 ; t=0.8: TPR .5, TNR 1 -> both 0.75 balanced accuracy; 0.8 is closer.
    assert choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.9]) == pytest.approx(0.8)


def test_choose_threshold_criteria_differ_on_imbalanced_data():
    y = [0] * 8 + [1] * 2
    p = [0.1] * 6 + [0.4, 0.4] + [0.45, 0.35]
    # t=0.225: TP 2, TN 6 -> balanced (1 + .75)/2 = .875, accuracy .8
    # t=0.425: TP 1, TN 8 -> balanced (.5 + 1)/2 = .75, accuracy .9
    assert choose_threshold(y, p) == pytest.approx(0.225)
    assert choose_threshold(y, p, criterion="accuracy") == pytest.approx(0.425)
    with pytest.raises(ValueError):
        choose_threshold(y, p, criterion="f1")


@pytest.mark.filterwarnings("error")
def test_single_class_does_not_crash():
    # All fake. 0.2 -> real (FN), 0.7, 0.9 -> fake (TP). 15 bins: each p alone in its bin,
    # ECE = (0.8 + 0.3 + 0.1) / 3 = 0.4
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["confusion"] == [[0, 0], [1, 2]]
    assert m["recall_fake"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["recall_real"] is None
    assert m["precision_real"] == 0.0  # one sample predicted real, wrongly
    for key in ("roc_auc", "average_precision", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr"):
        assert m[key] is None
    assert m["ece"] == pytest.approx(0.4)
    json.dumps(m)

    m = binary_metrics([0, 0], [0.1, 0.2])
    assert m["recall_real"] == 1.0
    assert (m["recall_fake"], m["precision_fake"], m["f1_fake"]) == (None, None, None)
    with pytest.raises(ValueError):
        tpr_at_fpr([0, 0], [0.1, 0.2], 0.05)
    with pytest.raises(ValueError):
        choose_threshold([0, 0], [0.1, 0.2])


def test_matches_sklearn_and_is_json_plain():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + 0.65 * rng.random(200), 0, 1)
    m = binary_metrics(y, p, threshold=0.4)
    pred = (p >= 0.4).astype(int)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=[0, 1])
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert [m["precision_real"], m["precision_fake"]] == pytest.approx(list(prec))
    assert [m["recall_real"], m["recall_fake"]] == pytest.approx(list(rec))
    assert [m["f1_real"], m["f1_fake"]] == pytest.approx(list(f1))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["confusion"] == skm.confusion_matrix(y, pred).tolist()
    assert json.loads(json.dumps(m)) == m
    assert all(type(v) in (int, float, list) for v in m.values())


@pytest.mark.parametrize(
    "y, p",
    [([0, 1], [0.5]), ([0, -1], [0.2, 0.3]), ([0, 1], [0.2, 1.5]), ([0, 1], [0.2, np.nan]), ([], [])],
)
def test_rejects_bad_input(y, p):
    with pytest.raises(ValueError):
        binary_metrics(y, p)


def test_format_metrics():
    text = format_metrics(binary_metrics([1, 1, 1], [0.2, 0.7, 0.9]))
    lines = text.splitlines()
    assert f"{'n':<20}{'3':>12}" in lines
    assert f"{'accuracy':<20}{'66.67%':>12}" in lines
    assert f"{'roc_auc':<20}{'n/a':>12}" in lines
    assert f"{'log_loss':<20}{'0.6905':>12}" in lines
    assert lines[-3:] == [
        f"{'confusion':<20}{'pred real':>12}{'pred fake':>12}",
        f"{'  true real':<20}{0:>12}{0:>12}",
        f"{'  true fake':<20}{1:>12}{2:>12}",
    ]
