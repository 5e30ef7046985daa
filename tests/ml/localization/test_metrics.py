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


def test_ceiling_with_omitted_cells_matches_hand_computed_orderings():
    from ml.localization.metrics import omitted_cells_ceiling

    # one boxed cell, one omitted: ranked first AP 1, ranked second AP 0.5
    assert omitted_cells_ceiling(1, 1)["mean_ap"] == pytest.approx(0.75)
    # two boxed, one omitted: F T T -> 2/3; T F T -> (51 + 50 * 2/3) / 101; T T F -> 1
    two = omitted_cells_ceiling(2, 1, target=1.0)
    assert two["mean_ap"] == pytest.approx((2 / 3 + (51 + 50 * 2 / 3) / 101 + 1) / 3)
    assert two["min_ap"] == pytest.approx(2 / 3)
    assert two["share_reaching_target"] == pytest.approx(1 / 3)
    assert omitted_cells_ceiling(5, 0)["mean_ap"] == 1.0


def test_ceiling_agrees_with_average_precision_on_an_ordering():
    from ml.localization.metrics import average_precision, omitted_cells_ceiling

    # the ceiling's orderings are scored as average_precision scores a real ranking
    gts = [[Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)], [Box(0, 0, 10, 10)]]
    preds = [[Box(0, 0, 10, 10, score=0.9)], [Box(0, 0, 10, 10, score=0.7), Box(50, 50, 60, 60, score=0.8)],
             [Box(0, 0, 10, 10, score=0.6)]]
    # ranks: T (0.9), F (0.8), T (0.7), T (0.6): one of the four orderings of 3 boxed + 1 omitted
    ap = average_precision(gts, preds)
    assert ap == pytest.approx((34 + 67 * 0.75) / 101)
    c = omitted_cells_ceiling(3, 1)
    # F T T T -> 0.75; T F T T -> the ranking above; T T F T -> (67 + 34 * 0.75) / 101; T T T F -> 1
    assert c["orderings"] == 4
    assert c["mean_ap"] == pytest.approx((0.75 + ap + (67 + 34 * 0.75) / 101 + 1) / 4)
    sampled = omitted_cells_ceiling(3, 1, max_orderings=2, seed=1)
    assert sampled["orderings"] == 2


def test_ceiling_rejects_impossible_counts():
    from ml.localization.metrics import omitted_cells_ceiling

    with pytest.raises(ValueError):
        omitted_cells_ceiling(0, 2)


def test_difficult_cells_are_left_out_as_in_the_voc_protocol():
    hard = Box(20, 20, 30, 30, difficult=True)
    gts = [[Box(0, 0, 10, 10), hard]]
    found_both = [[Box(0, 0, 10, 10, score=0.9), Box(20, 20, 30, 30, score=0.8), Box(50, 50, 60, 60, score=0.7)]]
    # the hit on the difficult cell is neither true nor false: 1 true, 1 false of 2 scored predictions
    assert precision_recall(gts, found_both) == pytest.approx((1 / 2, 1.0))
    m = detection_metrics(gts, found_both)
    assert (m["n_gt"], m["n_pred"], m["mean_iou"]) == (1, 2, pytest.approx(1.0))
    # ranking: 1.0 at recall 1 before the false one, so AP 1
    assert m["ap50"] == pytest.approx(1.0)
    # missing the difficult cell costs nothing; the same boxes without the flag: a miss
    assert detection_metrics(gts, [[Box(0, 0, 10, 10, score=0.9)]])["recall50"] == 1.0
    plain = [[Box(0, 0, 10, 10), Box(20, 20, 30, 30)]]
    assert detection_metrics(plain, [[Box(0, 0, 10, 10, score=0.9)]])["recall50"] == 0.5
    # a field whose only cell is difficult has nothing to find
    assert best_ious([[hard]], [[]]).size == 0
