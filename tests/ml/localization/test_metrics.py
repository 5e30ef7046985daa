import numpy as np
import pytest

from ml.boxes import Box
from ml.localization.metrics import average_precision, best_ious, detection_metrics, iou_matrix, precision_recall


def test_iou_of_hand_computed_boxes():
    a = Box(0, 0, 10, 10)
    b = Box(5, 0, 15, 10)  # half overlap: 50 / 150
    assert a.iou(b) == pytest.approx(1 / 3)
    assert iou_matrix([a], [b, a, Box(20, 20, 30, 30)]) == pytest.approx(np.array([[1 / 3, 1.0, 0.0]]))


def test_mean_iou_matches_each_truth_to_its_best_prediction():
    gts = [[Box(0, 0, 10, 10)], [Box(0, 0, 10, 10), Box(50, 50, 60, 60)]]
    preds = [[Box(5, 0, 15, 10), Box(0, 0, 10, 10)], [Box(0, 0, 10, 5)]]
    # 1.0 (best of the two), 0.5, and 0 for the missed cell
    assert best_ious(gts, preds) == pytest.approx([1.0, 0.5, 0.0])
    m = detection_metrics(gts, preds)
    assert m["mean_iou"] == pytest.approx(0.5)


def test_ap_of_a_hand_computed_ranking():
    gts = [[Box(0, 0, 10, 10), Box(20, 20, 30, 30)]]
    preds = [[Box(0, 0, 10, 10, score=0.9), Box(50, 50, 60, 60, score=0.8), Box(20, 20, 30, 30, score=0.7)]]
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1 up to recall 0.5 (51 of 101 points), 2/3 after
    assert average_precision(gts, preds, 0.5) == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert precision_recall(gts, preds) == pytest.approx((2 / 3, 1.0))


def test_ap_is_perfect_for_exact_boxes_and_zero_for_misses():
    gts = [[Box(0, 0, 10, 10)], [Box(5, 5, 25, 25)]]
    assert average_precision(gts, [[Box(0, 0, 10, 10, score=0.5)], [Box(5, 5, 25, 25, score=0.9)]]) == pytest.approx(1.0)
    assert average_precision(gts, [[Box(40, 40, 50, 50)], []]) == 0.0


def test_ap50_95_drops_when_boxes_are_loose():
    gts = [[Box(0, 0, 100, 100)]]
    loose = [[Box(0, 0, 100, 125, score=0.9)]]  # IoU 0.8: a hit up to the 0.8 threshold only
    m = detection_metrics(gts, loose)
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap50_95"] == pytest.approx(7 / 10)


def test_score_threshold_only_affects_the_operating_point():
    gts = [[Box(0, 0, 10, 10)]]
    preds = [[Box(0, 0, 10, 10, score=0.2)]]
    m = detection_metrics(gts, preds, score_threshold=0.5)
    assert m["recall50"] == 0.0 and m["mean_iou"] == 0.0
    assert m["ap50"] == pytest.approx(1.0)
