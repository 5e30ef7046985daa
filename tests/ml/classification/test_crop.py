import numpy as np
import pytest

from ml.boxes import Box
from ml.classification.crop import cell_crop, crop_window


def test_window_is_the_box_longer_side_grown_by_the_margin():
    cx, cy, side = crop_window(Box(10, 20, 50, 40), margin=0.25)
    assert (cx, cy, side) == (30, 30, 60)


def test_crop_is_centred_on_the_box_and_resized():
    img = np.zeros((200, 300, 3), np.uint8)
    img[90:110, 190:210] = 255  # a white square centred at (200, 100)
    crop = cell_crop(img, Box(190, 90, 210, 110), margin=0.5, out_size=40)
    assert crop.shape == (40, 40, 3)
    # The box spans the middle half of the crop.
    assert crop[20, 20].min() > 200
    assert crop[2, 2].max() < 50 and crop[37, 37].max() < 50
    assert crop[20, 12].min() > 150 and crop[20, 8].max() < 100


def test_crop_is_scale_invariant():
    """The same cell at two magnifications gives (nearly) the same crop: the rule is relative to the box."""
    import cv2

    small = np.zeros((100, 100, 3), np.uint8)
    cv2.circle(small, (50, 50), 15, (255, 0, 0), -1)
    big = cv2.resize(small, (300, 300), interpolation=cv2.INTER_LINEAR)
    a = cell_crop(small, Box(35, 35, 65, 65), 0.2, 32).astype(int)
    b = cell_crop(big, Box(105, 105, 195, 195), 0.2, 32).astype(int)
    assert np.abs(a - b).mean() < 8


def test_crop_at_the_image_edge_replicates_the_border():
    img = np.full((50, 50, 3), 7, np.uint8)
    crop = cell_crop(img, Box(-10, -10, 10, 10), 0.2, 16)
    assert crop.shape == (16, 16, 3) and (crop == 7).all()


def test_training_and_inference_share_the_rule(small_cells):
    """Without augmentation, the training path's crop equals the served crop."""
    from ml.classification.crop import CropRule
    from ml.classification.transforms import AugmentConfig, geometric_crop

    cells, _ = small_cells
    rule = CropRule(0.2, 48)

    class NoJitter:
        def uniform(self, lo, hi, size=None):
            return 0.0 if (lo, hi) != (np.log(1), np.log(1)) else 0.0

        def random(self):
            return 1.0  # no flip

    cfg = AugmentConfig(scale=(1.0, 1.0), shift=0.0)
    served = cells.crops(rule.margin, rule.out_size)[0].astype(int)
    trained = geometric_crop(cells.images[0], cells.box(0), rule, NoJitter(), cfg).astype(int)
    assert np.abs(served - trained).mean() < 3
