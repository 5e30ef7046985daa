import numpy as np
import pytest

from ml.boxes import Box
from ml.localization.classical import ClassicalLocalizer
from ml.localization.synthetic import synthetic_field
from ml.localization.tiling import detect_tiled, make_tiles


def test_tiles_cover_the_image_and_cores_partition_it():
    tiles = make_tiles(1000, 700, tile=400, overlap=100)
    cover = np.zeros((700, 1000), int)
    core = np.zeros((700, 1000), int)
    for t in tiles:
        assert t.x1 - t.x0 <= 400 and t.y1 - t.y0 <= 400
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        c = [int(round(v)) for v in t.core]
        core[c[1]:c[3], c[0]:c[2]] += 1
    assert cover.min() >= 1
    assert (core == 1).all()


def _square_finder(objects: list[Box]):
    """A fake detector: reports every object overlapping the tile, cut to the tile, in tile pixels."""
    def detect(tile_view: np.ndarray) -> list[Box]:
        # the tile's position is recovered from the marker values written into the image
        y0, x0 = int(tile_view[0, 0, 0]) * 100 + int(tile_view[0, 0, 1]), int(tile_view[0, 0, 2]) * 100
        h, w = tile_view.shape[:2]
        out = []
        for o in objects:
            b = o.translate(-x0, -y0).clip(w, h)
            if b.area > 0:
                out.append(b)
        return out
    return detect


def test_a_cell_cut_by_a_tile_edge_is_found_once():
    tiles = make_tiles(1200, 800, tile=500, overlap=150)
    edge = tiles[0].x1  # the right edge of the first tile
    cell = Box(edge - 30, 200, edge + 30, 260, score=0.9)  # straddles that edge
    found = []

    def detect(tile_view):
        # which tile is this? match by shape and the order of calls
        t = tiles[len(found)]
        found.append(t)
        b = cell.translate(-t.x0, -t.y0).clip(t.x1 - t.x0, t.y1 - t.y0)
        return [b] if b.area > 0 else []

    img = np.zeros((800, 1200, 3), np.uint8)
    boxes = detect_tiled(img, detect, tile=500, overlap=150)
    assert len(boxes) == 1
    assert boxes[0].iou(cell) == pytest.approx(1.0)


def test_classical_on_a_large_generated_scan_finds_every_cell_once_with_progress():
    # a 2000x1800 scan in 800-pixel tiles with 300 pixels of overlap; cells on the seams
    tiles = make_tiles(2000, 1800, tile=800, overlap=300)
    seam_x, seam_y = tiles[0].x1, tiles[0].y1
    centres = [(seam_x - 20, 300), (seam_x + 400, seam_y + 10), (1500, 1400), (300, 1300), (seam_x, seam_y)]
    img, boxes = synthetic_field(2000, 1800, n_rbc=160, wbc_centres=centres, seed=3)
    wbc = [b for b in boxes if b.label == "WBC"]
    loc = ClassicalLocalizer()
    loc.config.tile, loc.config.overlap = 800, 300
    seen = []
    found = loc.detect(img, progress=seen.append)
    assert len(found) == len(wbc)
    for b in wbc:
        centred = [f for f in found if b.x0 <= (f.x0 + f.x1) / 2 <= b.x1 and b.y0 <= (f.y0 + f.y1) / 2 <= b.y1]
        assert len(centred) == 1
        assert centred[0].iou(b) > 0.3
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) > 4
