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


@pytest.mark.parametrize("side", [0, 1, 2, 3])
def test_field_edge_corruption_is_what_the_rule_does_at_a_field_edge(side):
    """Cutting a crop with ``field_edge`` gives the crop the rule cuts from a field that ends there."""
    from ml.classification.robustness import field_edge

    rng = np.random.default_rng(side)
    field = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    box = Box(40, 40, 80, 70)  # window: side 56 around (60, 55), scale 1 with out_size 56
    whole = cell_crop(field, box, 0.2, 56)
    # The field ends 6 px inside the window on one side: x < 38, y < 33, x >= 82 or y >= 77 is gone.
    cut = {0: (slice(None), slice(38, None)), 1: (slice(33, None), slice(None)),
           2: (slice(None), slice(None, 82)), 3: (slice(None, 77), slice(None))}[side]
    offset = {0: (38, 0), 1: (0, 33), 2: (0, 0), 3: (0, 0)}[side]
    shifted = Box(box.x0 - offset[0], box.y0 - offset[1], box.x1 - offset[0], box.y1 - offset[1])
    at_edge = cell_crop(np.ascontiguousarray(field[cut]), shifted, 0.2, 56)
    assert (field_edge(whole, (side,), 6 / 56) == at_edge).all()
    assert not (whole == at_edge).all()



def test_a_class_folders_box_file_is_read_and_its_mistakes_named(tmp_path):
    from ml.classification.data import export_crop, read_box_file, write_box_file

    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 200:280] = 255
    crop, box = export_crop(image, Box(200, 100, 280, 160))
    assert crop.shape == (160, 160, 3)  # the longer side (80) and as much context again, native pixels
    assert box.as_list() == pytest.approx([40, 50, 120, 110], abs=0.01)
    assert crop[int(box.y0) + 2:int(box.y1) - 2, int(box.x0) + 2:int(box.x1) - 2].min() == 255
    assert crop[:int(box.y0) - 2].max() == 0
    write_box_file(tmp_path, {"neutrophil/a.png": box})
    assert read_box_file(tmp_path)["neutrophil/a.png"].as_list() == pytest.approx(box.as_list(), abs=0.01)
    assert read_box_file(tmp_path / "nothing-here") == {}
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\nneutrophil/a.png,1,2,x,4\n")
    with pytest.raises(ValueError, match=r"boxes.csv:2: expected image,x0,y0,x1,y1"):
        read_box_file(tmp_path)
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\nneutrophil/a.png,10,2,5,4\n")
    with pytest.raises(ValueError, match=r"boxes.csv:2: the box of neutrophil/a.png is empty"):
        read_box_file(tmp_path)


def test_faded_context_whitens_the_surroundings_and_keeps_the_cell():
    import torch

    from ml.classification.crop import CropRule, context_weights
    from ml.classification.transforms import to_tensor

    assert context_weights(CropRule(0.2, 64)) is None
    w = context_weights(CropRule(0.2, 64, fade=0.75))
    assert w.shape == (64, 64) and w[32, 32] == 1.0 and w[0, 0] == pytest.approx(0.25)
    # the cell's circle (half the box's longer side, 64 / 1.4 / 2 = 22.9 px, and a little room) is kept
    assert (w[32, 32 - 22:32 + 23] == 1.0).all() and w[32, 0] == pytest.approx(0.25)
    crops = np.zeros((2, 64, 64, 3), np.uint8)  # black: every pixel as far from white as it gets
    plain = to_tensor(crops, mean=(0, 0, 0), std=(1, 1, 1))
    faded = to_tensor(crops, mean=(0, 0, 0), std=(1, 1, 1), fade=w)
    assert torch.equal(plain, torch.zeros_like(plain))
    assert faded[0, 0, 32, 32] == 0.0 and faded[1, 2, 0, 0] == pytest.approx(0.75)
