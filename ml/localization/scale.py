"""Magnification: run a localizer as if the image were at the magnification it was trained on.

``rescale`` multiplies the localizer's working scale: about 2 when cells look half as large as in
its training images (lower magnification or camera resolution), 0.5 when twice as large.
``"auto"`` detects at the native scale (or, when that finds nothing, at lower assumed
magnifications) and, when the cells found are far from the size of the training fields' cells
(:data:`TRAINED_CELL_SIZE`), detects again at the scale that makes them that size. For single-cell
images and fields of unknown magnification; only used on images up to :data:`AUTO_MAX_PIXELS` (a
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


def detect_rescaled(detect_at: Callable[[float], list], shape: tuple[int, ...], rescale: float | str,
                    counts: Callable[[object], bool] | None = None) -> list:
    """``detect_at(r)`` at the given rescale; for ``"auto"`` see the module's docstring.

    ``counts(box)`` tells which boxes the scale is judged on (those above the localizer's operating
    threshold), so asking for low-scoring boxes too (for precision-recall curves) does not change
    the scale chosen."""
    if rescale != AUTO:
        return detect_at(float(rescale))

    def judged(boxes: list) -> list:
        return [b for b in boxes if counts is None or counts(b)]

    current, found = 1.0, detect_at(1.0)
    if shape[0] * shape[1] > AUTO_MAX_PIXELS:
        return found
    if not judged(found):
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
        if max(r / current, current / r) < tolerance:
            break
        again = detect_at(r)
        if not judged(again):
            break
        current, found, tolerance = r, again, AUTO_TOLERANCE
    return found
