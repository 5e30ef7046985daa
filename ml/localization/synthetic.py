"""Generated blood-smear fields for tests and demos when no real data is at hand.

A pinkish background, pale red-cell discs with a lighter centre, and white cells made of a lilac
cytoplasm disc around a few dark purple nucleus lobes. The boxes are exact.
"""
from __future__ import annotations

import cv2
import numpy as np

from ml.boxes import Box


def draw_wbc(img: np.ndarray, cx: float, cy: float, r: float, rng: np.random.Generator) -> Box:
    cv2.circle(img, (int(cx), int(cy)), int(r), (196, 172, 208), -1, lineType=cv2.LINE_AA)
    for _ in range(int(rng.integers(3, 5))):
        ox, oy = rng.uniform(-0.35, 0.35, 2) * r
        axes = (int(r * rng.uniform(0.32, 0.42)), int(r * rng.uniform(0.24, 0.32)))
        cv2.ellipse(img, (int(cx + ox), int(cy + oy)), axes, float(rng.uniform(0, 180)), 0, 360,
                    (100, 60, 165), -1, lineType=cv2.LINE_AA)
    return Box(float(int(cx) - int(r)), float(int(cy) - int(r)), float(int(cx) + int(r) + 1),
               float(int(cy) + int(r) + 1), "WBC")


def synthetic_field(width: int = 640, height: int = 480, *, n_wbc: int = 1, n_rbc: int = 14, seed: int = 0,
                    wbc_centres: list[tuple[float, float]] | None = None, wbc_radius: float = 90.0,
                    ) -> tuple[np.ndarray, list[Box]]:
    """An RGB uint8 field and its WBC and RBC boxes. ``wbc_centres`` places the white cells.

    The default sizes match BCCD fields (640x480 at about 100x: red cells ~95 px, white cells ~180 px).
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (228, 214, 218)
    boxes: list[Box] = []
    for _ in range(n_rbc):
        r = rng.uniform(42, 52)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        cv2.circle(img, (int(cx), int(cy)), int(r), (205, 135, 140), -1, lineType=cv2.LINE_AA)
        cv2.circle(img, (int(cx), int(cy)), int(r * 0.45), (218, 165, 170), -1, lineType=cv2.LINE_AA)
        b = Box(cx - r, cy - r, cx + r, cy + r, "RBC").clip(width, height)
        if b.area > 0:
            boxes.append(b)
    centres = wbc_centres
    if centres is None:
        centres = []
        for _ in range(100 * n_wbc):
            c = (rng.uniform(wbc_radius, width - wbc_radius), rng.uniform(wbc_radius, height - wbc_radius))
            if all(np.hypot(c[0] - o[0], c[1] - o[1]) > 2.3 * wbc_radius for o in centres):
                centres.append(c)
            if len(centres) == n_wbc:
                break
    for cx, cy in centres:
        r = wbc_radius * rng.uniform(0.9, 1.1)
        boxes = [b for b in boxes if b.label != "RBC" or
                 (abs((b.x0 + b.x1) / 2 - cx) > r + 10 or abs((b.y0 + b.y1) / 2 - cy) > r + 10)]
        boxes.append(draw_wbc(img, cx, cy, r, rng).clip(width, height))
    noise = 3 * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(cv2.GaussianBlur(img, (3, 3), 0) + noise, 0, 255).astype(np.uint8)
    return img, boxes
