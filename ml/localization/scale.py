"""Magnification: run a localizer as if the image were at the magnification it was trained on.

``rescale`` multiplies the localizer's working scale: about 2 when cells look half as large as in
its training images (lower magnification or camera resolution), 0.5 when twice as large.
``"auto"`` detects at the native scale (or, when that finds nothing, at lower assumed
magnifications) and, when the cells found are far from the size of the training fields' cells
(:data:`TRAINED_CELL_SIZE`), detects again at the scale that makes them that size. The red cells that
fill a field tell its magnification too (:func:`red_cell_rescale`): a field they say is at the trained
magnification is not searched again at others when nothing is found in it (most fields of a slide
hold no white cell), white cells moderately off the trained size move the scale only where the
red cells agree, and a field whose red cells are far off (:data:`AUTO_RED_FAR`) starts at their
scale. For single-cell images and fields of unknown magnification; only used on images up to :data:`AUTO_MAX_PIXELS` (a
large scan needs its real scale: the slide's microns per pixel, see
:func:`rescale_for_microns_per_pixel`).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

AUTO = "auto"
AUTO_PROBES = (2.0, 3.5)
AUTO_RANGE = (0.5, 5.0)
AUTO_NATIVE_TOLERANCE = 2.2
AUTO_TOLERANCE = 1.1
AUTO_STEPS = 3
AUTO_MAX_PIXELS = 4_000_000
# Rescales accepted: beyond these a field becomes a few pixels or many gigabytes
RESCALE_RANGE = (0.05, 20.0)
# Pixel size of the fields the packaged localizers were trained on (BCCD: 640x480 fields at 100x,
# red cells about 75 pixels across for 7.5 micrometres).
TRAINED_MICRONS_PER_PIXEL = 0.1
# Median white-cell box side (sqrt of width x height) in those fields, pixels.
TRAINED_CELL_SIZE = 190.0
# The opening radius (pixels) at which half of those fields' cell area is gone (red_cell_rescale):
# median of 60 BCCD fields 44 (10th-90th percentile 40-48).
TRAINED_RED_CELL_RADIUS = 44.0
AUTO_RED_SIDE = 320  # the thumbnail the red cells are read at where they decide (the rules' measurements)
AUTO_RED_EVIDENCE = 1.5  # the red cells must say at least this far off trained to move or probe the scale
AUTO_NATIVE_DOUBT = 1.3  # white cells this far off trained (and under AUTO_NATIVE_TOLERANCE) ask the red cells
# Every field's red cells are read at a small thumbnail first (about 2 ms); this far off trained, beyond
# any BCCD field's reading (0.55-1.22 over all 304), detection starts at their scale
AUTO_RED_GLANCE_SIDE = 160
AUTO_RED_FAR = 2.2


def parse_rescale(value) -> float | str:
    """``"auto"`` or a positive float; anything else is a ``ValueError`` naming the value."""
    if value is None:
        return 1.0
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"rescale must be a positive number or 'auto', got {value!r}") from None
    if not RESCALE_RANGE[0] <= r <= RESCALE_RANGE[1]:  # also NaN and infinity
        raise ValueError(f"rescale must be 'auto' or a number from {RESCALE_RANGE[0]:g} to {RESCALE_RANGE[1]:g} "
                         f"(the image's cells are that many times smaller than the trained fields'), got {value!r}")
    return r


def rescale_for_microns_per_pixel(microns_per_pixel: float | None) -> float | str:
    """The rescale for images of a known pixel size (``"auto"`` when it is unknown)."""
    if not microns_per_pixel or not microns_per_pixel > 0 or not np.isfinite(microns_per_pixel):
        return AUTO
    return float(np.clip(microns_per_pixel / TRAINED_MICRONS_PER_PIXEL, *RESCALE_RANGE))


def red_cell_rescale(image: np.ndarray, max_side: int = AUTO_RED_SIDE) -> float | None:
    """The rescale a field's cells imply, from their size: a granulometry of the pixels darker than
    the background (pale centres filled), on a thumbnail of at most ``max_side`` pixels: the radius of
    the disc whose opening removes half of them, against the trained fields'
    (:data:`TRAINED_RED_CELL_RADIUS`). Red cells are most of that area in a smear field; None where
    the image holds too little of it to judge."""
    import cv2

    from ml.colour import white_balance

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1:
        image = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    light = cv2.GaussianBlur(cv2.cvtColor(white_balance(image), cv2.COLOR_RGB2LAB)[..., 0], (3, 3), 0)
    t, _ = cv2.threshold(light, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    cells = (light < t).astype(np.uint8)
    H, W = cells.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - cells, connectivity=4)
    edge = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    holes = [i for i in range(1, n) if i not in edge and stats[i, 4] < 0.02 * H * W]  # pale centres
    if holes:
        cells[np.isin(labels, holes)] = 1
    total = float(cells.sum())
    if total < 50:
        return None
    for r in range(1, max(3, min(H, W) // 3)):
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        if cv2.morphologyEx(cells, cv2.MORPH_OPEN, disc).sum() <= 0.5 * total:
            return TRAINED_RED_CELL_RADIUS / (r / s)
    return None


def detect_rescaled(detect_at: Callable[[float], list], shape: tuple[int, ...], rescale: float | str,
                    counts: Callable[[object], bool] | None = None,
                    red_cells: Callable[[int], float | None] | None = None) -> list:
    """``detect_at(r)`` at the given rescale; for ``"auto"`` see the module's docstring.

    ``counts(box)`` tells which boxes the scale is judged on (those above the localizer's operating
    threshold), so asking for low-scoring boxes too (for precision-recall curves) does not change
    the scale chosen. ``red_cells(max_side)``: :func:`red_cell_rescale` of the image at that
    thumbnail size, asked only where it decides."""
    if rescale != AUTO:
        return detect_at(float(rescale))
    said: list = []

    def red() -> float | None:
        if red_cells is None:
            return None
        if not said:
            said.append(red_cells(AUTO_RED_SIDE))
        return said[0]

    def judged(boxes: list) -> list:
        return [b for b in boxes if counts is None or counts(b)]

    if shape[0] * shape[1] > AUTO_MAX_PIXELS:
        return detect_at(1.0)
    holds_a_cell = min(shape[:2]) >= TRAINED_CELL_SIZE  # a field, not a single-cell crop
    current = 1.0
    if red_cells is not None and holds_a_cell:
        glance = red_cells(AUTO_RED_GLANCE_SIDE)
        if glance is not None and max(glance, 1 / glance) >= AUTO_RED_FAR:
            current = float(np.clip(glance, *AUTO_RANGE))
    found = detect_at(current)
    if current != 1.0 and not judged(found):  # the red cells gave the scale: this field holds no white cell
        return found
    if not judged(found):
        if holds_a_cell:  # is it at the trained scale, with no white cell?
            implied = red()
            if implied is not None and implied < AUTO_RED_EVIDENCE:
                return found
        for probe in AUTO_PROBES:
            again = detect_at(probe)
            if judged(again):
                current, found = probe, again
                break
        else:
            return found
    # the native scale stands unless its cells are far from the trained size (cells differ in size);
    # a box found at a wrong scale is itself off in size, so the estimate is refined a few times
    tolerance = AUTO_NATIVE_TOLERANCE if current == 1.0 else AUTO_TOLERANCE
    h, w = shape[:2]

    def whole(b) -> bool:  # a cell cut by the image edge shows less than its size
        return b.x0 > 1 and b.y0 > 1 and b.x1 < w - 1 and b.y1 < h - 1

    for _ in range(AUTO_STEPS):
        sides = [np.sqrt(max(b.width, 1.0) * max(b.height, 1.0)) for b in judged(found) if whole(b)]
        if not sides:
            break
        r = float(np.clip(TRAINED_CELL_SIZE / float(np.median(sides)), *AUTO_RANGE))
        off = max(r / current, current / r)
        if off < tolerance:
            if not (current == 1.0 and off >= AUTO_NATIVE_DOUBT and _agrees(r, red())):
                break
        again = detect_at(r)
        if not judged(again):
            break
        current, found, tolerance = r, again, AUTO_TOLERANCE
    return found


def _agrees(rescale: float, red: float | None) -> bool:
    """Whether the red cells say the image is off the trained magnification in the same direction as
    ``rescale``, by at least :data:`AUTO_RED_EVIDENCE`."""
    if red is None:
        return False
    return red >= AUTO_RED_EVIDENCE if rescale > 1 else red <= 1 / AUTO_RED_EVIDENCE
