"""Whole-field analysis: localize every white cell, then classify each one.

The worker and the ``python -m ml.analyze`` command both call :func:`analyze_image`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ml.boxes import Box


@dataclass
class CellResult:
    box: Box
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    heatmap_overlay: np.ndarray | None = None  # HxWx3 uint8: the cell crop with its heatmap blended in


def analyze_image(
    image: np.ndarray,
    *,
    localizer,
    classifier=None,
    heatmaps: bool = False,
    progress: Callable[[float], None] | None = None,
) -> list[CellResult]:
    """Find and (when a classifier is given) classify the white cells of one RGB image."""
    def loc_progress(f: float) -> None:
        if progress:
            progress(0.5 * f if classifier is not None else f)

    boxes = localizer.detect(image, progress=loc_progress)
    cells = [CellResult(box=b) for b in boxes]
    if classifier is not None and boxes:
        predictions = classifier.classify(image, boxes)
        for cell, pred in zip(cells, predictions):
            cell.label = pred.label
            cell.probabilities = dict(pred.probabilities)
            cell.confidence = float(pred.confidence)
        if heatmaps:
            for cell, overlay in zip(cells, classifier.heatmap_overlays(image, boxes)):
                cell.heatmap_overlay = overlay
    if progress:
        progress(1.0)
    return cells
