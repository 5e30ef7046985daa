"""Tiled detection for images of any size in bounded memory.

The image is cut into overlapping tiles. Each tile owns a *core*: the tile minus half the overlap
on every side that borders another tile. Cores partition the image, so a box is kept only by the
tile whose core holds its centre. A cell cut by one tile's edge has its centre in the core of a
tile that sees it whole (as long as the overlap exceeds the cell size), so it is found once.
A final non-maximum suppression removes what rounding leaves behind.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ml.boxes import Box


@dataclass(frozen=True)
class Tile:
    x0: int
    y0: int
    x1: int
    y1: int
    core: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels

    def holds_centre(self, box: Box) -> bool:
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        return self.core[0] <= cx < self.core[2] and self.core[1] <= cy < self.core[3]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    n = int(np.ceil((length - tile) / step)) + 1
    # spread the tiles evenly so the last one ends exactly at the edge
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def make_tiles(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering a ``width x height`` image; a small image is one tile."""
    if tile <= overlap:
        raise ValueError(f"tile size {tile} must exceed the overlap {overlap}")
    xs, ys = _starts(width, tile, overlap), _starts(height, tile, overlap)
    tiles = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            x1, y1 = min(x + tile, width), min(y + tile, height)
            cx0 = 0.0 if i == 0 else (x + min(xs[i - 1] + tile, width)) / 2
            cx1 = float(width) if i == len(xs) - 1 else (xs[i + 1] + x1) / 2
            cy0 = 0.0 if j == 0 else (y + min(ys[j - 1] + tile, height)) / 2
            cy1 = float(height) if j == len(ys) - 1 else (ys[j + 1] + y1) / 2
            tiles.append(Tile(x, y, x1, y1, (cx0, cy0, cx1, cy1)))
    return tiles


def nms(boxes: Sequence[Box], iou_threshold: float = 0.5) -> list[Box]:
    """Greedy per-label non-maximum suppression, highest score first."""
    kept: list[Box] = []
    by_label: dict[str, list[Box]] = {}
    for b in boxes:
        by_label.setdefault(b.label, []).append(b)
    for group in by_label.values():
        arr = np.array([b.as_list() for b in group], dtype=np.float64)
        scores = np.array([b.score for b in group])
        order = np.argsort(-scores, kind="stable")
        areas = (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])
        while order.size:
            i = order[0]
            kept.append(group[i])
            rest = order[1:]
            ix = np.clip(np.minimum(arr[i, 2], arr[rest, 2]) - np.maximum(arr[i, 0], arr[rest, 0]), 0, None)
            iy = np.clip(np.minimum(arr[i, 3], arr[rest, 3]) - np.maximum(arr[i, 1], arr[rest, 1]), 0, None)
            inter = ix * iy
            iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
            order = rest[iou <= iou_threshold]
    return sorted(kept, key=lambda b: -b.score)


def iter_tiles(image: np.ndarray, tile: int, overlap: int) -> Iterator[tuple[Tile, np.ndarray]]:
    h, w = image.shape[:2]
    for t in make_tiles(w, h, tile, overlap):
        yield t, image[t.y0:t.y1, t.x0:t.x1]


def detect_tiled(
    image: np.ndarray,
    detect_tile: Callable[[np.ndarray], list[Box]],
    *,
    tile: int,
    overlap: int,
    nms_iou: float = 0.5,
    progress: Callable[[float], None] | None = None,
) -> list[Box]:
    """Run ``detect_tile`` (boxes in tile pixels) over overlapping tiles; boxes come back in image pixels.

    Only one tile (a view, no copy of the image) is processed at a time, so memory beyond the
    input image stays bounded by the tile size.
    """
    h, w = image.shape[:2]
    tiles = make_tiles(w, h, tile, overlap)
    found: list[Box] = []
    for n, t in enumerate(tiles, start=1):
        for b in detect_tile(image[t.y0:t.y1, t.x0:t.x1]):
            b = b.translate(t.x0, t.y0)
            if len(tiles) == 1 or t.holds_centre(b):
                found.append(b.clip(w, h))
        if progress:
            progress(n / len(tiles))
    return nms(found, nms_iou) if len(tiles) > 1 else found
