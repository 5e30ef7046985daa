"""Generated smear fields and cell crops, for tests and demos on a machine without real data."""
from __future__ import annotations

import numpy as np

from ml.boxes import Box


def _disc(canvas: np.ndarray, cx: float, cy: float, r: float, color, rng: np.random.Generator, jitter: float = 0.1) -> None:
    h, w = canvas.shape[:2]
    reach = r * (1 + jitter) + 1
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    angle = np.arctan2(yy - cy, xx - cx)
    radius = r * (1 + jitter * np.sin(3 * angle + rng.uniform(0, 6.28)))
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    canvas[y0:y1, x0:x1][mask] = color


def synthetic_smear(seed: int = 0, size: tuple[int, int] = (480, 640), n_wbc: int = 1) -> tuple[np.ndarray, list[Box]]:
    """A Wright-stained-looking field: pink background, pale red cells, ``n_wbc`` purple-nucleus white cells.

    Returns the RGB image and the white cells' boxes (cytoplasm included).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), np.float32)
    img[:] = (236, 214, 214)
    for _ in range(int(h * w / 5000)):
        _disc(img, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(18, 26), (222, 160, 160), rng, 0.05)
    boxes: list[Box] = []
    for _ in range(n_wbc):
        for _attempt in range(50):
            r = rng.uniform(38, 52)
            cx, cy = rng.uniform(r + 2, w - r - 2), rng.uniform(r + 2, h - r - 2)
            box = Box(cx - r, cy - r, cx + r, cy + r)
            if all(box.iou(b) == 0 for b in boxes):
                break
        _disc(img, cx, cy, r, (205, 175, 205), rng, 0.04)  # cytoplasm
        for _lobe in range(int(rng.integers(1, 4))):
            _disc(img, cx + rng.uniform(-r / 3, r / 3), cy + rng.uniform(-r / 3, r / 3), r * rng.uniform(0.35, 0.55), (92, 40, 130), rng)
        boxes.append(Box(cx - r, cy - r, cx + r, cy + r))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), boxes
