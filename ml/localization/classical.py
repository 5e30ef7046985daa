"""Classical WBC localization with OpenCV: stained nuclei stand out in saturation, cells grow from them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ml.boxes import Box


@dataclass
class ClassicalConfig:
    min_area_fraction: float = 0.008  # of the image area, for the grown nucleus blob
    margin: float = 0.0  # box grown by this fraction of its size towards the cytoplasm edge


class ClassicalLocalizer:
    method = "classical"

    def __init__(self, config: ClassicalConfig | None = None):
        self.config = config or ClassicalConfig()

    def detect(self, image: np.ndarray, *, progress: Callable[[float], None] | None = None) -> list[Box]:
        h, w = image.shape[:2]
        rgb = image.astype(np.int16)
        # Stained nuclei are blue-violet: blue well above green, unlike red cells and background.
        score = np.clip(rgb[:, :, 2] - rgb[:, :, 1], 0, 255).astype(np.uint8)
        score = cv2.GaussianBlur(score, (5, 5), 0)
        _, mask = cv2.threshold(score, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25)))
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes: list[Box] = []
        min_area = self.config.min_area_fraction * h * w
        for i in range(1, n):
            x, y, bw, bh, area = stats[i]
            if area < min_area:
                continue
            mx, my = self.config.margin * bw / 2, self.config.margin * bh / 2
            boxes.append(Box(x - mx, y - my, x + bw + mx, y + bh + my, "WBC", 1.0).clip(w, h))
        if progress:
            progress(1.0)
        return boxes
