import numpy as np

from ml.classification.stain import normalize
from ml.classification.transforms import AugmentConfig, photometric


def test_photometric_augmentation_changes_colours_but_keeps_shape():
    rng = np.random.default_rng(0)
    crop = np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    outs = [photometric(crop, rng, AugmentConfig()) for _ in range(5)]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs)
    assert any(np.abs(o.astype(int) - crop).mean() > 5 for o in outs)
    assert (photometric(crop, rng, AugmentConfig(strength=0)) == crop).all()


def test_reinhard_maps_two_stains_of_one_cell_closer_together():
    import cv2

    cell = np.full((40, 40, 3), 220, np.uint8)
    cv2.circle(cell, (20, 20), 10, (120, 60, 160), -1)
    shifted = np.clip(cell.astype(int) * [0.8, 1.0, 0.7] + [30, 10, 0], 0, 255).astype(np.uint8)
    before = np.abs(cell.astype(int) - shifted).mean()
    after = np.abs(normalize(cell, "reinhard").astype(int) - normalize(shifted, "reinhard")).mean()
    assert after < before / 2
    assert normalize(cell, "macenko").shape == cell.shape
